#!/usr/bin/env bash
# Builds the standalone forward check/benchmark (no Kokkos, no CMake): the mma.sync forward for sm_90,
# the Hopper forward for sm_90a, one object per (head_dim, dtype), compiled in parallel.
#   build_fwd_check.sh OUT_DIR [extra nvcc flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-build-fwd}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$out/src"
src="$root/backends/cuda/src"
flags=(-std=c++17 --expt-relaxed-constexpr -O3 -lineinfo -I"$root/include" -I"$root/backends/cuda/include" -I"$src" "$@")
sm90=(-gencode=arch=compute_90,code=sm_90)
sm90a=(-gencode=arch=compute_90a,code=sm_90a)
jobs=()
compile() {  # arch flags..., --, source
  local args=() ; while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  nvcc "${flags[@]}" "${args[@]}" -c "$1" -o "$out/$(basename "$1").o" &
  jobs+=($!)
}
for dim in 64 96 128 256; do
  for dtype in bf16 f16; do
    sed -e "s/@KFA_FWD_DIM@/$dim/" -e "s/@KFA_FWD_DTYPE@/$dtype/" "$src/forward_instance.cu.in" > "$out/src/forward_d${dim}_${dtype}.cu"
    sed -e "s/@KFA_FWD_DIM@/$dim/" -e "s/@KFA_FWD_DTYPE@/$dtype/" "$src/hopper/forward_sm90_instance.cu.in" > "$out/src/forward_sm90_d${dim}_${dtype}.cu"
    compile "${sm90[@]}" -- "$out/src/forward_d${dim}_${dtype}.cu"
    compile "${sm90a[@]}" -Xptxas=-v -- "$out/src/forward_sm90_d${dim}_${dtype}.cu"
  done
done
compile "${sm90[@]}" -- "$src/hopper/tensor_map.cu"
compile "${sm90[@]}" -- "$root/backends/cuda/tools/fwd_check.cu"
status=0
for p in "${jobs[@]}"; do wait "$p" || status=1; done
[ $status -eq 0 ] || { echo "build_fwd_check: compile failed"; exit 1; }
nvcc "${sm90[@]}" "$out"/*.o -o "$out/fwd_check"
echo "built $out/fwd_check"
