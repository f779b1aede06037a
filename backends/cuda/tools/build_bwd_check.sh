#!/usr/bin/env bash
# Builds the standalone backward check/benchmark (no Kokkos, no CMake):
#   build_bwd_check.sh OUT_DIR [ARCH] [extra nvcc flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-build-bwd}
arch=${2:-sm_90}
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$out"
flags=(-std=c++17 --expt-relaxed-constexpr -O3 -arch="$arch" -I"$root/include" -I"$root/backends/cuda/include" -I"$root/backends/cuda/src" -Xcompiler -fopenmp "$@")
pids=()
for f in "$root"/backends/cuda/src/backward*.cu "$root"/backends/cuda/tools/bwd_check.cu; do
  nvcc "${flags[@]}" -c "$f" -o "$out/$(basename "$f").o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
nvcc "${flags[@]}" "$out"/*.o -o "$out/bwd_check" -lgomp
echo "built $out/bwd_check"
