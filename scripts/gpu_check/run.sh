#!/bin/bash
# One-shot CUDA-offload check of locallab_cpp on the device machine. From the repo root:
#   bash .device/run.sh
# 1. installs the carried runtime wheels (litestar, uvicorn, msgspec, ...) into /tmp/site;
# 2. if .device/prebuilt/ holds a CUDA build made elsewhere (llama_cpp package dir as .tar.xz,
#    or a wheel), tests with it at once;
# 3. builds llama-cpp-python 0.3.36 with CUDA (sm_90) from .device/lcp-src.tar.gz, under a
#    deadline; 4. if that build finished, tests with the device-built wheel too.
# A test = probe.py (llama_supports_gpu_offload, resolve_gpu_layers(None), our engine loading
# the tiny model with llama.cpp's load log kept, greedy decode speed on GPU and CPU) + the real
# server (python -m locallab_cpp serve) with http_check.py (/system/info, /models/current,
# /generate, streamed /chat).
# Everything lands in /tmp/res; the end packs it into $OUT (at most 8 files come back).
# Env knobs: BUILD_TIMEOUT (s, default 440), DEADLINE (s, default 545), SKIP_BUILD=1, JOBS (16),
#           FA=OFF (no FlashAttention kernels: about a third less CUDA compile work).
T0=$(date +%s)
REPO=$(pwd)
DEV=$REPO/.device
OUT=${OUT:-/tmp/out}
R=/tmp/res
PY=${PY:-python3}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-440}   # at most; start_build() also keeps the whole run under DEADLINE (545 s)
mkdir -p "$OUT" "$R"
exec > >(tee -a "$R/run.log") 2>&1
exec 9>>"$R/xtrace.log"; BASH_XTRACEFD=9   # the set -x trace goes to xtrace.log, not into captured files
set -x
SERVER_PID=""
BUILD_PID=""
t() { echo "$(( $(date +%s) - T0 ))"; }
phase() { echo "[t=$(t)s] $*" | tee -a "$R/phases.txt"; }

pack() {  # copies what exists so far into $OUT (8 files at most come back)
  summarize > "$R/summary.txt" 2>&1
  cp "$R/summary.txt" "$OUT/summary.txt"
  [ -f "$R/build.log" ] && tail -n 300 "$R/build.log" > "$OUT/build_tail.log"
  for f in probe_prebuilt.log probe_devbuild.log; do
    [ -f "$R/$f" ] && grep -E "^== |offload|CUDA|cuda|ggml_backend|model buffer|KV buffer|compute buffer|flash_attn|rror|Traceback" "$R/$f" | cut -c1-3000 | head -n 400 > "$OUT/${f%.log}_grep.log"
  done
  for d in http_prebuilt http_devbuild; do
    [ -f "$R/$d/system_info.json" ] && cp "$R/$d/system_info.json" "$OUT/system_info_${d#http_}.json"
  done
  tar -C /tmp -czf "$OUT/all.tar.gz" res 2>/dev/null
}

finish() {
  set +e +x
  phase "finish"
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  [ -n "$BUILD_PID" ] && kill -TERM "$BUILD_PID" 2>/dev/null
  sleep 1
  [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null
  pack
  ls -la "$OUT"
  cat "$R/summary.txt"
}
trap finish EXIT

summarize() {
  echo "=== VERDICT (each line: check = result)"
  for v in prebuilt devbuild; do
    [ -f "$R/probe_$v.log" ] || continue
    $PY - "$R" "$v" <<'PYEOF'
import json, re, sys
from pathlib import Path
r, v = Path(sys.argv[1]), sys.argv[2]
def load(p):
    try: return json.loads(p.read_text())
    except Exception: return {}
pr, hv = load(r / f"probe_{v}.json"), load(r / f"http_{v}" / "http_verdict.json")
log = (r / f"probe_{v}.log").read_text(errors="replace") if (r / f"probe_{v}.log").exists() else ""
off = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", log)
eng = pr.get("engine_gpu_default", {})
checks = {
    "llama_supports_gpu_offload() is true": pr.get("llama_cpp", {}).get("supports_gpu_offload") is True,
    "resolve_gpu_layers(None) == 999 (all)": pr.get("resolve_gpu_layers", {}).get("None") == 999,
    "engine (n_gpu_layers unset) reports 999": eng.get("engine_n_gpu_layers") == 999,
    f"llama.cpp log 'offloaded N/N layers to GPU' {off[:1]}": bool(off) and off[0][0] == off[0][1],
    "server /system/info gpu_info.backend_in_use == CUDA": hv.get("CHECK backend_in_use==CUDA") is True,
    "server active_model.n_gpu_layers > 0": hv.get("CHECK n_gpu_layers>0") is True,
    "server /generate answers": hv.get("CHECK generate") is True,
    "server streamed /chat answers": hv.get("CHECK chat stream") is True,
}
for k, ok in checks.items():
    print(f"[{v}] {k} = {'PASS' if ok else 'FAIL'}")
g = (eng.get("greedy_256_again") or {})
c = (pr.get("engine_cpu_only", {}).get("greedy_256_again") or {})
print(f"[{v}] decode tok/s, 256 greedy tokens: GPU {g.get('decode_tok_per_s')}  CPU-only {c.get('decode_tok_per_s')}")
PYEOF
  done
  echo "=== phases"; cat "$R/phases.txt"
  echo "=== device"; grep -E "^gpu:|^GPU|release|^Python|^cmake|scikit|ninja|Model name|^CPU\(s\)|^Thread" "$R/env.txt" | head -n 30
  for v in prebuilt devbuild; do
    [ -f "$R/probe_$v.log" ] || continue
    echo "=== [$v] probe (llama_cpp in-process, our engine)"
    [ -f "$R/probe_$v.json" ] || { echo "no probe_$v.json; probe log tail:"; tail -n 25 "$R/probe_$v.log" | cut -c1-300; }
    [ -f "$R/probe_$v.json" ] && $PY - "$R/probe_$v.json" <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
lc = d.get("llama_cpp", {})
print("llama_cpp", lc.get("version"), "supports_gpu_offload =", lc.get("supports_gpu_offload"))
print("system_info:", str(lc.get("system_info"))[:400])
print("resolve_gpu_layers:", d.get("resolve_gpu_layers"))
for k in ("engine_gpu_default", "engine_cpu_only"):
    e = d.get(k, {})
    if "error" in e:
        print(k, "ERROR", e["error"]); continue
    g = e.get("greedy_256_again") or e.get("greedy_256") or {}
    print(f"{k}: load {e.get('load_s')} s, engine n_gpu_layers {e.get('engine_n_gpu_layers')}, "
          f"256 greedy tokens: {g.get('completion_tokens')} in {g.get('wall_s')} s, "
          f"decode {g.get('decode_tok_per_s')} tok/s, first chunk {g.get('first_chunk_s')} s")
PYEOF
    echo "--- [$v] llama.cpp load log (probe)"
    grep -E "offloaded|ggml_cuda_init|Device [0-9]|using device|CUDA[0-9]? model buffer|CUDA[0-9]? KV buffer|CUDA[0-9]? compute buffer|flash_attn|assigned to device CUDA" "$R/probe_$v.log" | sort | uniq -c | sort -rn | head -n 20
    echo "--- [$v] server check"
    [ -f "$R/http_$v/http_verdict.json" ] && $PY -c "
import json,sys; d=json.load(open(sys.argv[1]))
for k,v in d.items():
    if k.startswith('CHECK') or k in ('gpu_info','active_model_n_gpu_layers','llama_backend','health','generate','chat_stream','http_generate_256'): print(k, '=', json.dumps(v)[:400])
" "$R/http_$v/http_verdict.json"
    echo "--- [$v] server log (CUDA/offload/errors)"
    grep -iE "offload|cuda|error|traceback|serving" "$R/server_$v.log" | head -n 20
    echo "--- [$v] GPU memory while the server ran"; cat "$R/gpumem_$v.txt" 2>/dev/null
  done
  echo "=== libraries not found (ldd)"; grep -H "not found" "$R"/ldd_*.txt 2>/dev/null
  echo "=== device build"
  cat "$R/build_status.txt" 2>/dev/null
  grep -E "^CUDA_HOME|^cublas|^libcublas|^driver" "$R/build.log" 2>/dev/null
  echo "last ninja step: $(grep -oE "^ *\[[0-9]+/[0-9]+\]" "$R/build.log" 2>/dev/null | tail -n 1)"
  grep -E "Successfully|FAILED|fatal error|error:|ERROR" "$R/build.log" 2>/dev/null | cut -c1-300 | head -n 15
  if [ -f "$R/ninja_log.txt" ]; then
    awk 'NR>1{n++; s+=($2-$1)/1000; if ($4 ~ /\.cu\.o$/) {c++; cs+=($2-$1)/1000}} END{printf "ninja: %d steps, %.0f CPU-s total, %d .cu objects, %.0f CPU-s in .cu\n", n, s, c, cs}' "$R/ninja_log.txt"
    awk 'NR>1{printf "%7.1f s %s\n", ($2-$1)/1000, $4}' "$R/ninja_log.txt" | sort -rn | head -n 12
  fi
}

# ---------------------------------------------------------------- runtime wheels
phase "install runtime wheels"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${WHEELS_DIR:-$DEV/wheels}"/*.whl > "$R/pip_runtime.txt" 2>&1
echo "rc=$?" >> "$R/pip_runtime.txt"

# CUDA paths (also used by the build): CUDA_CMAKE_ARGS, CUDA_LD_PATH
source "$DEV/cuda_env.sh" > "$R/cuda_env.txt" 2>&1
cat "$R/cuda_env.txt"
export LD_LIBRARY_PATH="$CUDA_LD_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

phase "env"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | sed 's/^/gpu: /'
  nvidia-smi; nvidia-smi -L
  nvcc --version; which nvcc cmake ninja; cmake --version | head -1
  $PY --version; $PY -m pip --version
  $PY -m pip list 2>/dev/null | grep -iE "scikit|cmake|ninja|numpy|jinja2|typing|huggingface|psutil|cpuinfo|anyio|httpx|click|rich|pyyaml|multidict|h11|tqdm|nvidia-cublas|nvidia-cuda-runtime"
  nproc; lscpu | grep -E "Model name|^CPU\(s\)|Thread"; free -g; df -h /tmp
  ldconfig -p | grep -E "libcuda\.so|libcublas|libcudart|libgomp" | head
  ls /usr/local/cuda/lib64 | head -n 40
  find /usr/local /opt /usr/lib -xdev \( -name "cublas_v2.h" -o -name "libcublas.so*" \) 2>/dev/null | head
} > "$R/env.txt" 2>&1

# ---------------------------------------------------------------- device build (background)
start_build() {
  # the deadline leaves room for a test round of the device-built wheel within the 600 s command
  local left=$(( ${DEADLINE:-545} - $(t) - 50 ))
  local limit=$(( left < BUILD_TIMEOUT ? left : BUILD_TIMEOUT ))
  phase "device build started (timeout ${limit}s)"
  local extra=""
  [ "${FA:-ON}" = OFF ] && extra="-DGGML_CUDA_FA=OFF"
  # nice execs timeout, which leads its own process group and takes all of it down at the deadline
  nice -n 10 timeout "$limit" env JOBS="${JOBS:-16}" WORK=/tmp/lcpwork WHEEL_DIR=/tmp/devwheel \
    EXTRA_CMAKE_ARGS="$extra" PY="$PY" bash "$DEV/build_lcp.sh" > "$R/build.log" 2>&1 &
  BUILD_PID=$!
}

# ---------------------------------------------------------------- one test round
test_round() {  # $1 = label, $2 = dir holding the installed llama_cpp
  local v=$1 site=$2 port=$3
  export PYTHONPATH="$site:/tmp/site:$REPO"
  phase "[$v] probe"
  (cd "$REPO" && timeout 90 $PY "$DEV/probe.py" "$DEV/models.toml" tiny-random-llama "$R/probe_$v.json") 2> "$R/probe_$v.log"
  echo "probe rc=$?" >> "$R/probe_$v.log"
  phase "[$v] server"
  nvidia-smi --query-gpu=memory.used --format=csv > "$R/gpumem_$v.txt" 2>&1
  (cd "$REPO" && exec $PY -m locallab_cpp serve --models-file "$DEV/models.toml" --model tiny-random-llama \
      --port "$port" --rate-limit 0) > "$R/server_$v.log" 2>&1 &
  SERVER_PID=$!
  timeout 100 $PY "$DEV/http_check.py" "http://127.0.0.1:$port" "$R/http_$v" 60 > "$R/http_$v.txt" 2>&1
  echo "http_check rc=$?" >> "$R/http_$v.txt"
  { echo "while serving:"; nvidia-smi --query-gpu=memory.used --format=csv,noheader
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv; echo "server pid $SERVER_PID"; } >> "$R/gpumem_$v.txt" 2>&1
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
  phase "[$v] done"
  (set +x; pack)
}

# a CUDA build made elsewhere: the installed llama_cpp package dir, as .tar.xz (python's
# tarfile unpacks it, so no xz binary is needed), or a wheel
PRE=$(ls "${PREBUILT_DIR:-$DEV/prebuilt}"/*.tar.xz "${PREBUILT_DIR:-$DEV/prebuilt}"/llama_cpp_python-*.whl 2>/dev/null | head -1)
if [ -n "$PRE" ]; then
  phase "install prebuilt $PRE"
  rm -rf /tmp/lcp-pre; mkdir -p /tmp/lcp-pre
  case "$PRE" in
    *.tar.xz) $PY -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$PRE" /tmp/lcp-pre > "$R/pip_prebuilt.txt" 2>&1 ;;
    *) $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/lcp-pre "$PRE" > "$R/pip_prebuilt.txt" 2>&1 ;;
  esac
  echo "rc=$?" >> "$R/pip_prebuilt.txt"
  ls -la /tmp/lcp-pre/llama_cpp/lib >> "$R/pip_prebuilt.txt" 2>&1
  ldd /tmp/lcp-pre/llama_cpp/lib/libggml-cuda.so > "$R/ldd_prebuilt.txt" 2>&1
  test_round prebuilt /tmp/lcp-pre 8765
fi
[ "${SKIP_BUILD:-0}" != 1 ] && start_build

# ---------------------------------------------------------------- the device-built wheel
if [ -n "$BUILD_PID" ]; then
  phase "waiting for the device build"
  wait "$BUILD_PID"; echo "rc=$? at t=$(t)s (124 = deadline hit)" > "$R/build_status.txt"; BUILD_PID=""
  phase "device build ended: $(cat "$R/build_status.txt")"
  cp /tmp/lcpwork/build/.ninja_log "$R/ninja_log.txt" 2>/dev/null
  gzip -k "$R/build.log" 2>/dev/null
  WHL=$(ls /tmp/devwheel/llama_cpp_python-*.whl 2>/dev/null | head -1)
  if [ -n "$WHL" ]; then
    ls -la "$WHL" >> "$R/build_status.txt"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/lcp-dev "$WHL" > "$R/pip_devbuild.txt" 2>&1
    echo "rc=$?" >> "$R/pip_devbuild.txt"
    ldd /tmp/lcp-dev/llama_cpp/lib/libggml-cuda.so > "$R/ldd_devbuild.txt" 2>&1
    test_round devbuild /tmp/lcp-dev 8766
  fi
fi
phase "all done"
