# Sourced by run.sh: finds CUDA toolkit, cuBLAS (toolkit or pip's nvidia/cu13 wheels) and the
# driver library; sets CUDA_CMAKE_ARGS (cmake -D flags, no spaces inside a value) and
# CUDA_LD_PATH (dirs the built libraries need at run time).
# Optional input: EXTRA_SITE_DIRS (space-separated dirs to search for nvidia/*/ wheels).
CUDA_HOME=${CUDA_HOME:-}
if [ -z "$CUDA_HOME" ]; then
  for d in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"; do
    [ -x "$d/bin/nvcc" ] && { CUDA_HOME=$d; break; }
  done
fi
echo "CUDA_HOME=$CUDA_HOME"
CUDA_CMAKE_ARGS="-DCMAKE_CUDA_COMPILER=$CUDA_HOME/bin/nvcc -DCUDAToolkit_ROOT=$CUDA_HOME"
CUDA_LD_PATH=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib"; do
  [ -d "$d" ] && CUDA_LD_PATH="$CUDA_LD_PATH:$d"
done
_tk_inc=""
for d in "$CUDA_HOME/include" "$CUDA_HOME/targets/x86_64-linux/include"; do
  [ -f "$d/cublas_v2.h" ] && { _tk_inc=$d; break; }
done
_tk_lib=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib"; do
  [ -e "$d/libcublas.so" ] && { _tk_lib=$d; break; }
done
if [ -n "$_tk_inc" ] && [ -n "$_tk_lib" ]; then
  echo "cuBLAS from the toolkit: $_tk_inc $_tk_lib"
else
  # pip wheels: nvidia/cu13/{include,lib} (CUDA 13) or nvidia/cublas/{include,lib} (CUDA 12)
  _sites="$EXTRA_SITE_DIRS $(python3 -c 'import site,sys; print(" ".join(site.getsitepackages()+[p for p in sys.path if p.endswith("-packages")]))' 2>/dev/null)"
  _hdr=""
  for s in $_sites; do
    for c in "$s"/nvidia/cu13/include/cublas_v2.h "$s"/nvidia/cublas/include/cublas_v2.h; do
      [ -f "$c" ] && { _hdr=$c; break 2; }
    done
  done
  if [ -z "$_hdr" ]; then
    _hdr=$(find /usr /opt -name cublas_v2.h 2>/dev/null | head -1)
  fi
  echo "cublas_v2.h: ${_hdr:-NOT FOUND}"
  _inc=$(dirname "$_hdr"); _lib=$(dirname "$_inc")/lib
  _cublas=$(ls "$_lib"/libcublas.so* 2>/dev/null | head -1)
  _cublaslt=$(ls "$_lib"/libcublasLt.so* 2>/dev/null | head -1)
  echo "libcublas: ${_cublas:-NOT FOUND}  libcublasLt: ${_cublaslt:-NOT FOUND}"
  # a folder with only the cuBLAS headers, so no other pip header shadows the toolkit's
  CUSHIM=${CUSHIM:-/tmp/cushim}
  rm -rf "$CUSHIM"; mkdir -p "$CUSHIM/include"
  for h in "$_inc"/cublas*.h; do ln -s "$h" "$CUSHIM/include/"; done
  CUDA_CMAKE_ARGS="$CUDA_CMAKE_ARGS -DCUDA_cublas_LIBRARY=$_cublas -DCUDA_cublasLt_LIBRARY=$_cublaslt -DCMAKE_CUDA_FLAGS=-I$CUSHIM/include"
  CUDA_LD_PATH="$_lib$CUDA_LD_PATH"
fi
# the driver library, for ggml's VMM memory pool; without it build with GGML_CUDA_NO_VMM
_drv=""
for c in "$CUDA_HOME/lib64/stubs/libcuda.so" "$CUDA_HOME/lib/stubs/libcuda.so" \
         "$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')" \
         /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/lib64/libcuda.so.1; do
  [ -n "$c" ] && [ -e "$c" ] && { _drv=$c; break; }
done
if [ -n "$_drv" ]; then
  echo "driver library: $_drv"
  CUDA_CMAKE_ARGS="$CUDA_CMAKE_ARGS -DCUDA_cuda_driver_LIBRARY=$_drv"
else
  echo "driver library: NOT FOUND -> GGML_CUDA_NO_VMM=ON"
  CUDA_CMAKE_ARGS="$CUDA_CMAKE_ARGS -DGGML_CUDA_NO_VMM=ON"
fi
CUDA_LD_PATH=${CUDA_LD_PATH#:}
echo "CUDA_CMAKE_ARGS=$CUDA_CMAKE_ARGS"
echo "CUDA_LD_PATH=$CUDA_LD_PATH"
