#!/usr/bin/env bash
# Compile-only check of the CUDA build on a machine without a GPU: Kokkos (CUDA, Hopper) from the
# pinned tarball through nvcc_wrapper, kfa, the native backend (backends/cuda, sm_80 + sm_90, and the
# Hopper forward for sm_90a), the GPU test suite and the GPU benchmark; then checks that the native
# kernels use the Tensor Cores (HMMA in the SASS when cuobjdump is installed, else mma.sync/ldmatrix/
# cp.async in the PTX; wgmma/TMA/setmaxnreg in the Hopper kernels' PTX, with no spills in their
# resource reports) and that the GPU suite reports itself skipped (not failed) without a device. Catch2 is
# the host-compiled one of ci/host_catch2.sh (or one installed under KFA_PREFIX_PATH); an installed
# Kokkos never is used (it must have CUDA).
#   ci/cuda_compile_check.sh            env: KFA_DEPS_DIR, CUDA_HOME (default /usr/local/cuda), JOBS (2)
# The Hopper kernels' spill check reads ptxas's report from the build log (KFA_CUDA_VERBOSE_PTXAS).
# Measured on the 2-core build machine while other builds shared it (load 6-9), with the backward
# kernels and their tests included: 12.2 min wall / 7.7 min CPU with an installed Catch2, 19.6 min wall /
# 12.6 min CPU when Catch2 is built too (through nvcc_wrapper).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
deps="${KFA_DEPS_DIR:-$root/../shared/deps}"
jobs="${JOBS:-2}"
work="${KFA_CUDA_CHECK_DIR:-$root/build/cuda-compile-check}"
start=$(date +%s)

if [ ! -x "$cuda_home/bin/nvcc" ]; then
  echo "cuda_compile_check: no nvcc under $cuda_home; skipped"
  exit 0
fi
export PATH="$cuda_home/bin:$PATH"
mkdir -p "$work"
catch2="$(KFA_DEPS_DIR="$deps" JOBS="$jobs" bash "$root/ci/host_catch2.sh" | tail -1)"
# nvcc_wrapper comes with the Kokkos sources, which the configure step would only unpack later.
tar -xzf "$deps/kokkos-5.0.2.tar.gz" -C "$work" kokkos-5.0.2/bin/nvcc_wrapper
cmake -S "$root" -B "$work/build" -G Ninja \
  -DCMAKE_CXX_COMPILER="$work/kokkos-5.0.2/bin/nvcc_wrapper" \
  -DKFA_DEPS_DIR="$deps" -DKFA_KOKKOS_DEVICE=CUDA -DKFA_KOKKOS_ARCH=HOPPER90 \
  -DKFA_ENABLE_CUDA=ON -DKFA_CUDA_TOOLS=ON -DKFA_ARCH_NATIVE=OFF -DCMAKE_PREFIX_PATH="${KFA_PREFIX_PATH:-$catch2;/opt/kfa-deps}" \
  -DKFA_CUDA_VERBOSE_PTXAS=ON -DCMAKE_DISABLE_FIND_PACKAGE_Kokkos=ON > "$work/configure.log"
# ptxas reports every kernel's registers and spills into the build log (checked below, no second compile).
ninja -C "$work/build" -j"$jobs" kfa kfa_cuda kfa-tests-cuda kfa-gpu-probe kfa-gpu-bench kfa-feature-bench \
  kfa-cuda-fwd-check kfa-cuda-bwd-check > "$work/ninja.log" 2>&1 || { grep -B2 -A20 "error" "$work/ninja.log" | head -80; exit 1; }
gen="$work/build/backends/cuda/generated"  # the translation units generated from the instance table
inc=(-I"$root/include" -I"$root/backends/cuda/include" -I"$root/backends/cuda/src" -I"$root/backends" -I"$gen")

lib="$work/build/backends/cuda/libkfa_cuda.a"
if command -v cuobjdump > /dev/null; then
  for arch in sm_80 sm_90; do
    n=$(cuobjdump -sass -arch "$arch" "$lib" | grep -c HMMA || true)
    echo "cuda_compile_check: $arch SASS has $n HMMA instructions"
    [ "$n" -gt 0 ]
  done
else
  # No cuobjdump here: the PTX of one forward instantiation must hold the Tensor Core instructions.
  ptx="$work/forward_d128_bf16.ptx"
  nvcc -std=c++17 -arch=compute_80 -ptx "${inc[@]}" "$gen/forward_sm80_d128_bf16.cu" -o "$ptx"
  for insn in mma.sync.aligned.m16n8k16 ldmatrix.sync.aligned cp.async.cg.shared.global; do
    n=$(grep -c "$insn" "$ptx" || true)
    echo "cuda_compile_check: PTX has $n x $insn (cuobjdump not installed: SASS not inspected)"
    [ "$n" -gt 0 ]
  done
fi

# The Hopper kernels: wgmma, TMA and setmaxnreg in the sm_90a PTX, and no register spills.
sm90_tu="$gen/forward_sm90_d128_bf16.cu"
if [ -f "$sm90_tu" ]; then
  ptx="$work/forward_sm90_d128_bf16.ptx"
  nvcc -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=compute_90a -ptx "${inc[@]}" "$sm90_tu" -o "$ptx"
  for insn in wgmma.mma_async.sync.aligned cp.async.bulk.tensor.4d setmaxnreg; do
    n=$(grep -c "$insn" "$ptx" || true)
    echo "cuda_compile_check: sm_90a PTX has $n x $insn"
    [ "$n" -gt 0 ]
  done
  # The Hopper backward: the same instructions, plus the TMA reduction of dQ and stmatrix of dS.
  ptx="$work/backward_sm90_d128_bf16.ptx"
  nvcc -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=compute_90a -ptx "${inc[@]}" \
    "$gen/backward_sm90_d128_bf16.cu" -o "$ptx"
  for insn in wgmma.mma_async.sync.aligned cp.async.bulk.tensor.4d cp.reduce.async.bulk.tensor.3d stmatrix setmaxnreg; do
    n=$(grep -c "$insn" "$ptx" || true)
    echo "cuda_compile_check: sm_90a backward PTX has $n x $insn"
    [ "$n" -gt 0 ]
  done
  # No Hopper kernel spills, except the Featured backward (every feature in one kernel), which may
  # spill at most 8 bytes (one register at head_dim 128; docs/performance-cuda-backward.md).
  awk '/Compiling entry function .* for .sm_90a./ { name = $0; sub(/.*function ./, "", name); sub(/. for .*/, "", name); next }
       name != "" && /bytes spill stores/ {
         stores = $5; loads = $9; limit = (name ~ /backward_sm90_kernel/ && name ~ /Lb1EE/) ? 8 : 0; n++
         if (stores > limit || loads > 8 * limit) { print "cuda_compile_check: spills: " name ": " $0; bad = 1 }
         else if (stores > 0) print "cuda_compile_check: within its limit: " name ": " stores " bytes spill stores"
         name = "" }
       END { print "cuda_compile_check: " n " sm_90a kernels checked for spills"; if (n == 0 || bad) exit 1 }' "$work/ninja.log"
else
  echo "cuda_compile_check: no sm_90 architecture in this build: Hopper forward not built"
fi

# CTest runs the GPU suite through kfa-gpu-probe: skipped (exit 77) without a usable GPU, run otherwise.
ctest --test-dir "$work/build" -R '^kfa-tests-cuda$' --output-on-failure | tee "$work/ctest.log"
grep -Eq "kfa-tests-cuda \(Skipped\)|tests passed" "$work/ctest.log"
echo "cuda_compile_check: passed in $(( $(date +%s) - start )) s"
