#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, from a CUDA build of kfa: the GPU suite, the reduced sweep under
# compute-sanitizer (memcheck, racecheck), then the benchmark against PyTorch SDPA (needs torch+triton).
#   perf/gpu/gpu_check.sh BUILD_DIR [LOG_DIR] [bench_vs_sdpa.py options...]
set -uo pipefail
build="$1"; logs="${2:-.}"; shift 2 || shift $#
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tests="$build/tests/cuda/kfa-tests-cuda"
status=0
echo "== kfa-tests-cuda"
"$tests" --order rand > "$logs/tests.log" 2>&1 || status=1
tail -4 "$logs/tests.log"
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool [sanitize]"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$tests" "[sanitize]" > "$logs/sanitize_$tool.log" 2>&1 || status=1
    tail -3 "$logs/sanitize_$tool.log"
  done
fi
echo "== benchmark"
python3 "$here/bench_vs_sdpa.py" --bench "$build/perf/gpu/kfa-gpu-bench" --out "$logs/bench.json" "$@" || status=1
exit $status
