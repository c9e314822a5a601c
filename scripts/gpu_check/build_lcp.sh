#!/bin/bash
# Builds the llama-cpp-python 0.3.36 wheel with CUDA (sm_90) from .device/lcp-src.tar.gz.
# Env: PY (python with scikit-build-core, cmake, ninja), JOBS, WHEEL_DIR, WORK, EXTRA_SITE_DIRS,
#      CUDA_ARCH (default 90-real), EXTRA_CMAKE_ARGS.
# Used by run.sh on the device, and here for the local proof build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
JOBS=${JOBS:-$(nproc)}
WORK=${WORK:-/tmp/lcpwork}
WHEEL_DIR=${WHEEL_DIR:-$WORK/wheel}
CUDA_ARCH=${CUDA_ARCH:-90-real}
if [ "${RESUME:-0}" != 1 ]; then
  rm -rf "$WORK"; mkdir -p "$WORK" "$WHEEL_DIR"
  tar xzf "$HERE/lcp-src.tar.gz" -C "$WORK"
fi
CUSHIM=$WORK/cushim   # cuBLAS header shim of this build (cuda_env.sh)
source "$HERE/cuda_env.sh"
export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH -DLLAVA_BUILD=OFF \
 -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
 -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF -DGGML_CCACHE=OFF -DGGML_CUDA_NCCL=OFF \
 $CUDA_CMAKE_ARGS ${EXTRA_CMAKE_ARGS:-}"
export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
export CMAKE_GENERATOR=Ninja
echo "CMAKE_ARGS=$CMAKE_ARGS"
"$PY" -c 'import scikit_build_core, cmake, ninja; print("skbuild", scikit_build_core.__version__, "cmake", cmake.__version__)' || true
"$PY" -m pip --version
"$PY" -m pip wheel --no-build-isolation --no-deps --no-index -v -w "$WHEEL_DIR" \
  --config-settings=build-dir="$WORK/build" "$WORK/llama_cpp_python-0.3.36"
ls -la "$WHEEL_DIR"
