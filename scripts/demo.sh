#!/usr/bin/env bash
# Builds kfa and runs the demo: a GPT-2-small-like attention layer (batch 1, 12 heads, head_dim 64,
# seqlen 1k..4k, causal and not) against standard attention: speedup, memory, error vs fp64.
#   - With an NVIDIA GPU: a Kokkos-CUDA build with the native kernels for this GPU, in bfloat16;
#     kfa-bench beside kfa's unfused reference kernels on the GPU, then, where PyTorch with CUDA is
#     there, the Python package beside PyTorch's FlashAttention-2 and cuDNN on the same layer
#     (perf/python/bench_peers.py --demo, one process).
#   - Otherwise the host build (OpenMP), fp32, beside the unfused attention a user writes over a tuned
#     BLAS (two OpenBLAS GEMMs around a row softmax; libopenblas-dev is installed when missing).
# Extra arguments go to kfa-bench. Environment: KFA_BUILD_ROOT (default ./build), KFA_CMAKE_ARGS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${KFA_BUILD_ROOT:-$root/build}
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
source "$root/scripts/setup.sh"

if has_nvidia_gpu; then
  build="$out/cuda"
  cuda_arch_args
  python_setup
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DKFA_KOKKOS_DEVICE=CUDA -DKFA_ENABLE_CUDA=ON \
    "${arch[@]}" "${python_args[@]}" ${KFA_CMAKE_ARGS:-}
  targets=(kfa-bench)
  [ ${#python_args[@]} -gt 0 ] && targets+=(kfa_python)
  cmake --build "$build" --parallel "$(nproc)" --target "${targets[@]}"
  "$build/perf/kfa-bench" --demo "$@"
  py=$(python_with_torch || true)
  if [ ${#python_args[@]} -gt 0 ] && "$py" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    PYTHONPATH="$build/python" "$py" "$root/perf/python/bench_peers.py" --demo
  else
    echo "no PyTorch with CUDA here: kfa is shown beside its own unfused reference only"
  fi
else
  build="$out/release"
  [ -f /usr/include/x86_64-linux-gnu/cblas.h ] || [ -f /usr/include/cblas.h ] || apt_install openblas libopenblas-dev ||
    echo "libopenblas-dev could not be installed ($out/openblas.apt.log): the standard attention is kfa's reference"
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${KFA_CMAKE_ARGS:-}
  cmake --build "$build" --parallel "$(nproc)" --target kfa-bench
  export OMP_PROC_BIND=${OMP_PROC_BIND:-spread} OMP_PLACES=${OMP_PLACES:-threads}
  "$build/perf/kfa-bench" --demo "$@"
fi
