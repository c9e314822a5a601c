#!/usr/bin/env bash
# Build llama.cpp's RPC backend as a loadable library (libggml-rpc.so) from the llama.cpp
# copy that the installed llama-cpp-python vendors, so `serve --rpc` and `rpc-worker` work
# with a llama-cpp-python built without RPC. Only the ggml-rpc target is compiled (about a
# minute on 2 cores); the library binds to the wheel's own libggml-base at load.
#
# Usage: scripts/build_rpc.sh [--version VER] [--src DIR] [--out DIR] [--jobs N]
#
#   --version VER  llama-cpp-python version (default: the installed one)
#   --src DIR      an unpacked llama-cpp-python sdist (skips `pip download`)
#   --out DIR      where the library goes (default: ~/.cache/locallab_cpp/rpc/<VER>, the
#                  place the server looks; XDG_CACHE_HOME is honoured)
#   --jobs N       parallel compile jobs (default: 2)
#
# The last line printed on stdout is the library's path. Idempotent.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo_root/.venv/bin/python" ]]; then python="$repo_root/.venv/bin/python"; else python="python3"; fi
fi

version=""
src=""
out=""
jobs=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        --src) src="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --jobs|-j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [[ -z "$version" ]]; then
    version="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi
cache_home="${XDG_CACHE_HOME:-$HOME/.cache}"
out="${out:-$cache_home/locallab_cpp/rpc/$version}"
lib="$out/libggml-rpc.so"
if [[ -f "$lib" ]]; then
    echo "RPC backend already built" >&2
    echo "$lib"
    exit 0
fi

work="$out/build"
mkdir -p "$work"
if [[ -z "$src" ]]; then
    dl="$work/sdist"
    if [[ ! -d "$dl/llama_cpp_python-$version" ]]; then
        mkdir -p "$dl"
        "$python" -m pip download "llama-cpp-python==$version" --no-binary :all: --no-deps -d "$dl" >&2
        tar -xzf "$dl/llama_cpp_python-$version.tar.gz" -C "$dl"
    fi
    src="$dl/llama_cpp_python-$version"
fi
llama_src="$src/vendor/llama.cpp"
if [[ ! -f "$llama_src/ggml/src/ggml-rpc/ggml-rpc.cpp" ]]; then
    echo "no vendored ggml-rpc sources under $llama_src" >&2
    exit 1
fi

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi

# A dynamically loadable backend (GGML_BACKEND_DL) of shared libraries; the CPU backend is
# not built (the wheel has its own; GGML_NATIVE cannot go with GGML_BACKEND_DL anyway).
cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON
    -DGGML_RPC=ON -DGGML_CPU=OFF -DGGML_NATIVE=OFF
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
)
echo "configuring ggml-rpc from $llama_src" >&2
cmake -S "$llama_src" -B "$work/cmake" "${generator[@]}" "${cmake_flags[@]}" >&2
start=$(date +%s)
cmake --build "$work/cmake" --target ggml-rpc -j "$jobs" >&2
echo "built in $(( $(date +%s) - start ))s" >&2
built="$(find "$work/cmake" -name 'libggml-rpc.so' -print -quit)"
if [[ -z "$built" ]]; then
    echo "build finished but libggml-rpc.so is missing" >&2
    exit 1
fi
cp "$built" "$lib.part" && mv "$lib.part" "$lib"
echo "$lib"
