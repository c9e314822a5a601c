#!/bin/bash
# Builds .device/lcp-src.tar.gz: the llama-cpp-python 0.3.36 sdist trimmed to what a
# CPU+CUDA build with tools/examples/tests/mtmd switched off needs. Run here (not on device).
set -euo pipefail
SDIST=${SDIST:-/tmp/lcp/llama_cpp_python-0.3.36.tar.gz}
WORK=${WORK:-/tmp/trim}
OUTTGZ=${OUTTGZ:-/work/main/.device/lcp-src.tar.gz}
rm -rf "$WORK"; mkdir -p "$WORK"; tar xzf "$SDIST" -C "$WORK"
T="$WORK/llama_cpp_python-0.3.36"; L="$T/vendor/llama.cpp"
# top level: keep CMakeLists.txt pyproject.toml PKG-INFO README.md LICENSE.md llama_cpp/ vendor/
rm -rf "$T"/{.git,.github,docker,docs,examples,tests,scripts,Makefile,mkdocs.yml,.readthedocs.yaml,.dockerignore,CHANGELOG.md,CONTRIBUTING.md}
# vendor/llama.cpp: keep CMakeLists.txt cmake/ include/ src/ ggml/ common/ vendor/ LICENSE licenses/
( cd "$L" && rm -rf .git .github .devops .gemini .pi app benches ci conversion docs examples gguf-py grammars \
    media models pocs requirements scripts skills tests tools build-xcframework.sh \
    convert_*.py flake.nix Makefile CMakePresets.json AUTHORS CODEOWNERS *.md mypy.ini \
    pyproject.toml pyrightconfig.json requirements.txt ty.toml .clang-* .ecrc .editorconfig \
    .flake8 .pre-commit-config.yaml .dockerignore )
# unused ggml backends (only cpu, cuda and the shared code stay)
( cd "$L/ggml/src" && rm -rf ggml-blas ggml-cann ggml-et ggml-hexagon ggml-hip ggml-metal ggml-musa \
    ggml-opencl ggml-openvino ggml-rpc ggml-sycl ggml-virtgpu ggml-vulkan ggml-webgpu ggml-zdnn ggml-zendnn )
# non-x86 CPU kernels
( cd "$L/ggml/src/ggml-cpu/arch" && ls | grep -v '^x86$' | xargs rm -rf )
# llama-cpp-python forces llama.cpp's common library ON; the Python package never loads it
# (only libllama, libggml*, libmtmd), so build it only when asked (-DLLAMA_BUILD_COMMON=ON)
sed -i 's/set(LLAMA_BUILD_COMMON ON CACHE BOOL "Build llama.cpp common library" FORCE)/set(LLAMA_BUILD_COMMON OFF CACHE BOOL "Build llama.cpp common library")/' "$T/CMakeLists.txt"
grep -q 'set(LLAMA_BUILD_COMMON OFF CACHE BOOL' "$T/CMakeLists.txt"
rm -rf "$L/common" "$L/vendor/cpp-httplib"
# generator script of the CUDA template instances (not used by CMake)
rm -f "$L/ggml/src/ggml-cuda/template-instances/generate_cu_files.py"
mkdir -p "$(dirname "$OUTTGZ")"
tar -C "$WORK" -czf "$OUTTGZ" llama_cpp_python-0.3.36
du -sh "$T"; ls -la "$OUTTGZ"
