#!/usr/bin/env bash
# One call on a Hopper GPU machine for the Hopper forward: builds fwd_check, runs the correctness
# sweep (both native kernels against fp64), compute-sanitizer memcheck + racecheck on it, the peer
# benchmark (fwd_vs_peers.py: PyTorch FlashAttention-2 and cuDNN side by side) and an ncu profile of
# one large case; a table is printed last. Logs go to OUT_DIR.
#   backends/cuda/tools/hopper_check.sh OUT_DIR [BUILD_DIR] [-- extra nvcc flags, e.g. -include;tiles.h]
# The tool is the CMake target kfa-cuda-fwd-check (-DKFA_CUDA_TOOLS=ON); KFA_DEPS_DIR as for the build.
set -uo pipefail
out="${1:?OUT_DIR}"; build="${2:-build-fwd}"; shift $(( $# >= 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export PATH=/usr/local/cuda/bin:$PATH
mkdir -p "$out"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKFA_KOKKOS_DEVICE=CUDA -DKFA_KOKKOS_ARCH=HOPPER90 \
  -DKFA_ENABLE_CUDA=ON -DKFA_CUDA_ARCHS=90 -DKFA_CUDA_TOOLS=ON -DKFA_CUDA_VERBOSE_PTXAS=ON -DKFA_BUILD_TESTS=OFF \
  -DKFA_DEPS_DIR="${KFA_DEPS_DIR:-$root/.deps}" -DKFA_CUDA_FWD_TUNE_FLAGS="$*" > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
ninja -C "$build" kfa-cuda-fwd-check > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
grep -A1 "forward_sm90_kernel" "$out/build.log" | grep -E "spill" | sort | uniq -c
tool="$build/backends/cuda/kfa-cuda-fwd-check"
status=0
"$tool" > "$out/check.log" 2>&1 || status=1
tail -1 "$out/check.log"; grep FAIL "$out/check.log" | head
for tool in memcheck racecheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 "$tool" > "$out/sanitize_$tool.log" 2>&1 || status=1
  tail -1 "$out/sanitize_$tool.log"
done
if command -v ncu > /dev/null; then  # the limiter: tensor pipe, issue stalls, barrier waits
  ncu --set full -k regex:forward_sm90 -c 1 "$tool" --profile 128 0 8192 > "$out/ncu_d128_8k.txt" 2>&1 || true
  grep -E "Duration|Compute \(SM\) Throughput|Tensor|Issue Slots Busy|Registers Per|Achieved Occupancy|Stall" "$out/ncu_d128_8k.txt" | head -25
fi
python3 "$here/fwd_vs_peers.py" "$tool" --out "$out/peers.json" --reps 20 2>&1 | tail -40 || status=1
exit $status
