#!/usr/bin/env bash
# One call on an NVIDIA GPU machine: a Kokkos-CUDA build of kfa with the native backend (and, by
# default, the portable register-blocked GPU kernel), then the GPU suite under each native forward
# kernel and the portable path's forward benchmark. Logs go to OUT_DIR; a summary is printed last.
#   perf/gpu/build_and_check.sh OUT_DIR [BUILD_DIR] [extra cmake args...]
# env: KFA_DEPS_DIR (default ./.deps), KFA_CUDA_ARCHS (default 90), SUITE_TIMEOUT (default 300 s),
#      SKIP_BENCH=1 (suites only)
set -uo pipefail
out="${1:?OUT_DIR}"; build="${2:-build-cuda}"; shift $(( $# >= 2 ? 2 : $# ))
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out"
source "$root/perf/gpu/cuda_build.sh"
kfa_cuda_build "$out" "$build" kfa-tests-cuda kfa-gpu-bench -- "$@" || exit 1
tests="$build/tests/cuda/kfa-tests-cuda"
run_suite() {  # name, env, Catch2 args
  local name="$1" env="$2"; shift 2
  local t=$(date +%s)
  env $env timeout "${SUITE_TIMEOUT:-300}" "$tests" "$@" --order rand --durations yes > "$out/$name.log" 2>&1
  echo "$name: rc=$? $(grep -E "All tests passed|test cases:" "$out/$name.log" | tail -1) ($(( $(date +%s) - t )) s)"
}
run_suite suite_default "KFA_NONE=1"
run_suite suite_mma "KFA_CUDA_FORWARD=mma" "[native]~[backward]"
run_suite suite_wgmma "KFA_CUDA_FORWARD=wgmma" "[native]~[backward]"
grep -h -E "FAILED|failed|REQUIRE|CHECK" "$out"/suite_*.log | head -30
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
timeout 150 "$build/perf/gpu/kfa-gpu-bench" --paths portable,native --dims 64,128 --seqlens 1024,4096,8192 \
  --causal 0,1 --portable-reps 3 --reps 10 > "$out/bench.jsonl" 2> "$out/bench.err"
python3 - "$out/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
fp32_peak = 66.9
print("path      d  causal      n     ms   TFLOP/s  %fp32peak")
for r in rows:
    if r.get("kind") != "fwd": continue
    print(f"{r['path']:8} {r['d']:3} {r['causal']:6} {r['n']:6} {r['ms']:7.3f} {r['tflops']:8.1f} {100*r['tflops']/fp32_peak:8.1f}")
PY
