#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the llama.cpp copy that
# llama-cpp-python vendors, so scripts/bench.py can compare against it.
#
# Usage: scripts/build_llama_server.sh [--version VER] [--src DIR] [--build-dir DIR] [--jobs N]
#
#   --version VER    llama-cpp-python version (default: the installed one)
#   --src DIR        an unpacked llama-cpp-python sdist (skips `pip download`)
#   --build-dir DIR  build directory (default: .bench/llama-server/<VER>)
#   --jobs N         parallel compile jobs (default: 2)
#
# The last line printed on stdout is the path of the llama-server binary.
# Idempotent: when the binary already exists nothing is built.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo_root/.venv/bin/python" ]]; then
        python="$repo_root/.venv/bin/python"
    else
        python="python3"
    fi
fi

version=""
src=""
build_dir=""
jobs=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        --src) src="$2"; shift 2 ;;
        --build-dir) build_dir="$2"; shift 2 ;;
        --jobs|-j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [[ -z "$version" ]]; then
    version="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
fi
build_dir="${build_dir:-$repo_root/.bench/llama-server/$version}"
bin="$build_dir/bin/llama-server"

if [[ -x "$bin" ]]; then
    echo "llama-server already built" >&2
    echo "$bin"
    exit 0
fi

mkdir -p "$build_dir"
if [[ -z "$src" ]]; then
    dl="$build_dir/sdist"
    if [[ ! -d "$dl/llama_cpp_python-$version" ]]; then
        mkdir -p "$dl"
        "$python" -m pip download "llama-cpp-python==$version" \
            --no-binary :all: --no-deps -d "$dl" >&2
        tar -xzf "$dl/llama_cpp_python-$version.tar.gz" -C "$dl"
    fi
    src="$dl/llama_cpp_python-$version"
fi
llama_src="$src/vendor/llama.cpp"
if [[ ! -f "$llama_src/tools/server/CMakeLists.txt" ]]; then
    echo "no vendored llama.cpp server sources under $llama_src" >&2
    exit 1
fi

generator=()
if command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
fi

# CPU-only Release build, -march=native, OpenMP (ggml's default, as in the
# llama-cpp-python wheel). No network code: OpenSSL off (LLAMA_CURL is gone in
# this llama.cpp), web UI neither built with npm nor downloaded from the HF
# bucket (the server embeds an empty asset table). Static libraries, so the
# binary is self-contained. Tests/examples/unified app off; tools must stay ON
# because the server lives under tools/, but only the llama-server target is
# built.
cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=ON
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_RPC=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
)

echo "configuring llama.cpp from $llama_src" >&2
cmake -S "$llama_src" -B "$build_dir" "${generator[@]}" "${cmake_flags[@]}" >&2
echo "building llama-server (-j$jobs)" >&2
start=$(date +%s)
cmake --build "$build_dir" --target llama-server -j "$jobs" >&2
echo "built in $(( $(date +%s) - start ))s" >&2

if [[ ! -x "$bin" ]]; then
    echo "build finished but $bin is missing" >&2
    exit 1
fi
echo "$bin"
