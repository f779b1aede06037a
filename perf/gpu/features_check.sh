#!/usr/bin/env bash
# One call on an NVIDIA GPU machine for the native feature paths: a Kokkos-CUDA build, the GPU suites'
# feature cases under the automatic choice and under each native forward kernel, then kfa's feature
# benchmark beside a fresh run of the peers (FlexAttention) on the same block masks and lengths, and
# a table of ratios printed last. Logs and JSON lines go to OUT_DIR.
#   perf/gpu/features_check.sh OUT_DIR [BUILD_DIR]
# env: KFA_DEPS_DIR (default ./.deps: the dependency tarballs; tools/peer_feature_bench.py beside them),
#      KFA_CUDA_ARCHS (default 90), SUITES ("[features]" Catch2 filter), FORCED ("mma wgmma": the forward
#      kernels the suites run once more under, forced), EXTRA_SUITE (another filter, run once),
#      EXTRA_ENV (its environment, e.g. KFA_CUDA_DECODE=cpasync), SUITE_ARGS (more Catch2 arguments, e.g.
#      "--durations yes", with SLOWEST=N printing the N slowest test cases of each suite), SKIP_BENCH=1, SKIP_PEERS=1, DENSE=1 (kfa's dense forward at 4k / 16k too), SUITE_TIMEOUT (240 s),
#      TOOLS=1 (also build backends/cuda/tools), SANITIZE ("racecheck:FILTER;memcheck:FILTER"),
#      DECODE=1 (kfa-decode-bench beside the peers' decode, as GB/s and fractions of the copy bandwidth),
#      BWD=1 (the native backward's bwd_check sweep, and --bench beside the peers' dense fwd + bwd, with
#      BWD_MMA=1 also under KFA_CUDA_BACKWARD=mma, BWD_BENCH_DIMS "64,128": those head dims only, without
#      the deterministic runs, BWD_SWEEP=0: without the bwd_check sweep; needs TOOLS=1), BWD_FORCED ("mma": the backward
#      kernels the suites' [backward] cases run once more under, forced), BWD_SANITIZE=1 (memcheck and
#      racecheck of bwd_check --quick), FWD_VARIANTS ("NAME=HEADER ...": Hopper forward tile variants,
#      perf/gpu/sm90_tile_variants.py; timed beside the base build and the peers by
#      backends/cuda/tools/fwd_vs_peers.py, then each checked by fwd_check; needs TOOLS=1), BWD_VARIANTS
#      (likewise for the Hopper backward, head dims BWD_VARIANT_DIMS (64): each variant's bwd_check
#      --quick and --bench D beside the base build's; needs TOOLS=1 and BWD=1), VARIANT_DIR (where the
#      variants' objects go: /tmp/kfa-variants, outside OUT_DIR), BENCH_TARGETS (the benchmarks built;
#      "" for none)
set -uo pipefail
out="${1:?OUT_DIR}"; build="${2:-/tmp/build-cuda}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="${KFA_DEPS_DIR:-$root/.deps}"
mkdir -p "$out"
source "$root/perf/gpu/cuda_build.sh"
KFA_DEPS_DIR="$deps" kfa_cuda_build "$out" "$build" kfa-tests-cuda kfa-gpu-probe ${BENCH_TARGETS-kfa-feature-bench kfa-gpu-bench kfa-decode-bench} ${TOOLS:+kfa-cuda-fwd-check kfa-cuda-bwd-check} \
  -- ${TOOLS:+-DKFA_CUDA_TOOLS=ON} || exit 1
tests="$build/tests/cuda/kfa-tests-cuda"
run_suite() {  # name, env, Catch2 args: SHARDS processes in parallel (the fp64 host references dominate)
  local name="$1" env="$2"; shift 2
  # One seed for all shards: Catch2 shards the randomly ordered list, so shards of different seeds
  # would overlap and leave test cases out.
  local t=$(date +%s) n="${SHARDS:-8}" pids=() i seed=$RANDOM
  for (( i = 0; i < n; ++i )); do
    env $env timeout "${SUITE_TIMEOUT:-240}" "$tests" "$@" ${SUITE_ARGS:-} --order rand --rng-seed "$seed" --shard-count "$n" --shard-index "$i" \
      > "$out/$name.$i.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for i in "${pids[@]}"; do wait "$i" || rc=$?; done
  cat "$out/$name".*.log > "$out/$name.log" && rm -f "$out/$name".*.log
  local passed failed sums
  passed=$(grep -c "All tests passed" "$out/$name.log")
  failed=$(grep -hE "^test cases:" "$out/$name.log" | tr -s ' ' | tr '\n' ';')
  sums=$(grep -hoE "[0-9]+ assertions in [0-9]+ test cases?" "$out/$name.log" | awk '{a += $1; c += $4} END {print a " assertions / " c " cases"}')
  echo "$name: rc=$rc; shards all passed: $passed of $n ($sums); other shards: ${failed:-none} ($(( $(date +%s) - t )) s)"
  # with SUITE_ARGS="--durations yes": the slowest test cases
  grep -hE "^[0-9]+\.[0-9]+ s: " "$out/$name.log" | sort -rn | head -${SLOWEST:-0} | sed 's/^/  slow: /'

}
filter="${SUITES:-[features]}"
source "$root/scripts/setup.sh"  # gpu_share_start/stop: the shards share the GPU through MPS (not the benchmarks)
gpu_share_start /tmp/kfa-mps-check "$build/tests/cuda/kfa-gpu-probe"
run_suite features_auto "KFA_NONE=1" "$filter"
for kernel in ${FORCED-mma wgmma}; do
  run_suite "features_$kernel" "KFA_CUDA_FORWARD=$kernel" "$filter~[backward]"
done
for kernel in ${BWD_FORCED-}; do
  run_suite "bwd_$kernel" "KFA_CUDA_BACKWARD=$kernel" "[backward]"
done
grep -h -B3 -A12 -E "FAILED" "$out"/features_*.log "$out"/bwd_*.log 2>/dev/null | head -40
gpu_share_stop

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  # The peers' random 128 x 128 block masks (seed 3, diagonal kept), drawn as peer_feature_bench.py draws them.
  python3 - "$out" <<'PY'
import sys, numpy as np, torch
for i, dens in enumerate((1.0, 0.5, 0.25, 0.1)):
    b = torch.rand(64, 64, generator=torch.Generator(device="cuda").manual_seed(3), device="cuda") < dens
    np.save(f"{sys.argv[1]}/mask{i}.npy", (b | torch.eye(64, dtype=torch.bool, device="cuda")).cpu().numpy())
PY
  masks=$(ls "$out"/mask*.npy | paste -sd,)
  timeout 200 "$build/perf/gpu/kfa-feature-bench" --masks "$masks" > "$out/kfa_features.jsonl" 2> "$out/kfa_features.err"
  echo "kfa feature bench: rc=$?"
  rm -f "$out"/mask*.npy
  if [ "${SKIP_PEERS:-0}" != 1 ]; then
    for c in sparse varlen; do
      timeout 200 python3 "$deps/tools/peer_feature_bench.py" $c >> "$out/peers.jsonl" 2> "$out/peers_$c.err"
      echo "peer $c: rc=$?"
    done
  fi
  python3 "$root/perf/gpu/feature_table.py" "$out/kfa_features.jsonl" "$out/peers.jsonl" | tee "$out/table.txt"
fi
if [ -n "${EXTRA_SUITE:-}" ]; then
  run_suite extra "${EXTRA_ENV:-KFA_NONE=1}" "$EXTRA_SUITE"
  grep -h -B3 -A12 -E "FAILED" "$out"/extra.log | head -40
fi
if [ "${DENSE:-0}" = 1 ]; then
  timeout 100 "$build/perf/gpu/kfa-gpu-bench" --paths native --dims ${DENSE_DIMS:-64,128,256} --seqlens 4096,16384 \
    --causal 0,1 --reps 10 > "$out/kfa_dense.jsonl" 2> "$out/kfa_dense.err"
  python3 - "$out/kfa_dense.jsonl" <<'PY' | tee -a "$out/table.txt"
import json, sys
print("\nkfa dense forward (FA2 paper setup, bf16), TFLOP/s: compare with docs/performance.md")
for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")):
    if r.get("kind") == "fwd":
        print(f"d{r['d']:<4} causal {r['causal']}  n {r['n']:6}  {r['tflops']:7.1f}")
PY
fi
if [ "${DECODE:-0}" = 1 ]; then
  timeout 200 "$build/perf/gpu/kfa-decode-bench" > "$out/kfa_decode.jsonl" 2> "$out/kfa_decode.err"
  echo "kfa decode bench: rc=$?"
  if [ -n "${DECODE_CPASYNC:-}" ]; then  # the cp.async producer too, for comparison
    KFA_CUDA_DECODE=cpasync timeout 100 "$build/perf/gpu/kfa-decode-bench" --shapes 64x8192 --pages 0,16 > "$out/kfa_decode_cpasync.jsonl" 2>&1
    sed -n 's/^/cp.async producer: /p' "$out/kfa_decode_cpasync.jsonl"
  fi
  [ "${SKIP_PEERS:-0}" = 1 ] || timeout 200 python3 "$deps/tools/peer_feature_bench.py" decode > "$out/peers_decode.jsonl" 2> "$out/peers_decode.err"
  python3 - "$out/kfa_decode.jsonl" "$out/peers_decode.jsonl" <<'PY' | tee -a "$out/table.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peers = {}
try:
    for l in open(sys.argv[2]):
        if l.startswith("{"):
            r = json.loads(l); peers[(r["peer"], r["B"], r["seqlen_k"])] = r["gbs"]
except FileNotFoundError:
    pass
copy = next((r["gbs"] for r in rows if r["case"] == "copy"), float("nan"))
print(f"\ndecode (1 token, 32/8 heads, d128, bf16): GB/s of K+V; copy bandwidth {copy:.0f} GB/s")
print(f"{'B x seqlen_k':>14} {'page':>5} {'kfa GB/s':>9} {'of copy':>8} {'vs cudnn':>9} {'vs fa2':>7} {'ms':>8} {'checked ms':>10}")
for r in rows:
    if r["case"] != "decode": continue
    c, f = peers.get(("cudnn", r["B"], r["seqlen_k"])), peers.get(("fa2", r["B"], r["seqlen_k"]))
    ratio = lambda p: f"{r['gbs'] / p:.2f}x" if p else "-"
    print(f"{str(r['B']) + ' x ' + str(r['seqlen_k']):>14} {r['page']:>5} {r['gbs']:9.0f} {r['gbs'] / copy:8.2f} {ratio(c):>9} {ratio(f):>7} {r['ms']:8.4f} {r.get('checked_ms', float('nan')):10.4f}")
for k, v in sorted(peers.items()):
    print(f"peer {k[0]} B {k[1]} seqlen_k {k[2]}: {v:.0f} GB/s ({v / copy:.2f} of copy)")
PY
fi
if [ "${BWD:-0}" = 1 ]; then
  bwdc="$build/backends/cuda/kfa-cuda-bwd-check"
  if [ "${BWD_SWEEP:-1}" = 1 ]; then
    timeout 200 "$bwdc" > "$out/bwd_check.txt" 2>&1
    echo "bwd_check sweep: rc=$? $(tail -1 "$out/bwd_check.txt")"; grep FAIL "$out/bwd_check.txt" | head -8
  fi
  if [ "${BWD_SANITIZE:-0}" = 1 ]; then
    for tool in memcheck racecheck; do
      timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 "$bwdc" --quick > "$out/bwd_$tool.log" 2>&1
      echo "bwd_check --quick under $tool: rc=$? $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|checks:" "$out/bwd_$tool.log" | tr '\n' ' ')"
    done
  fi
  timeout 200 "$bwdc" --bench ${BWD_BENCH_DIMS:-} > "$out/kfa_bwd.txt" 2> "$out/kfa_bwd.err"
  echo "kfa bwd bench: rc=$?"
  if [ "${BWD_MMA:-0}" = 1 ]; then
    KFA_CUDA_BACKWARD=mma timeout 200 "$bwdc" --bench > "$out/kfa_bwd_mma.txt" 2>&1
    echo "mma.sync backward (forced), TFLOP/s:"; awk '$1 ~ /^[0-9]+$/ {print "  d" $1, "causal", $2, "n", $3, $6}' "$out/kfa_bwd_mma.txt"
  fi
  [ "${SKIP_PEERS:-0}" = 1 ] || timeout 300 python3 "$deps/tools/peer_feature_bench.py" dense > "$out/peers_dense.jsonl" 2> "$out/peers_dense.err"
  python3 - "$out/kfa_bwd.txt" "$out/peers_dense.jsonl" <<'PY' | tee -a "$out/table.txt"
import json, sys
peers = {}
try:
    for l in open(sys.argv[2]):
        if l.startswith("{"):
            r = json.loads(l); peers[(r["peer"], r["d"], r["causal"], r["n"])] = r["bwd_tflops"]
except FileNotFoundError:
    pass
print("\nnative backward (FA2 paper setup, bf16), TFLOP/s; peers from peer_feature_bench.py dense in this call")
print(f"{'d':>4} {'causal':>6} {'n':>6} {'kfa':>7} {'kfa det':>8} {'fa2':>7} {'cudnn':>7} {'vs fa2':>7} {'vs cudnn':>8}")
for l in open(sys.argv[1]):
    w = l.split()
    if len(w) < 9 or not w[0].isdigit(): continue
    d, causal, n, tf = int(w[0]), int(w[1] == "yes"), int(w[2]), float(w[6])
    tdet = float(w[8]) if float(w[7]) > 0 else float("nan")  # nan: not run (--bench D,...)
    f, c = peers.get(("fa2", d, causal, n)), peers.get(("cudnn", d, causal, n))
    ratio = lambda p: f"{tf / p:.2f}x" if p else "-"
    print(f"{d:>4} {causal:>6} {n:>6} {tf:7.1f} {tdet:8.1f} {f or float('nan'):7.1f} {c or float('nan'):7.1f} {ratio(f):>7} {ratio(c):>8}")
PY
fi
if [ -n "${FWD_VARIANTS:-}" ]; then
  fwdc="$build/backends/cuda/kfa-cuda-fwd-check"
  vlist=$(python3 "$root/perf/gpu/sm90_tile_variants.py" "$build" "${VARIANT_DIR:-/tmp/kfa-variants}" $FWD_VARIANTS 2> "$out/variants.err") \
    || { echo "tile variants failed:"; tail -20 "$out/variants.err"; vlist=""; }
  vargs=(); for v in $vlist; do vargs+=(--variant "$v"); done
  timeout 420 python3 "$root/backends/cuda/tools/fwd_vs_peers.py" "$fwdc" --reps 20 --out "$out/fwd_peers.json" \
    "${vargs[@]}" > "$out/fwd_peers.txt" 2>&1
  echo "fwd_vs_peers: rc=$?"; tee -a "$out/table.txt" < "$out/fwd_peers.txt" | tail -40
  for exe in "$fwdc" $(printf '%s\n' $vlist | cut -d= -f2); do
    timeout ${CHECK_TIMEOUT:-90} "$exe" > "$out/check_$(basename "$exe").txt" 2>&1
    echo "$(basename "$exe") (correctness): rc=$? $(tail -1 "$out/check_$(basename "$exe").txt")"
  done
fi
if [ -n "${BWD_VARIANTS:-}" ]; then
  bwdc="$build/backends/cuda/kfa-cuda-bwd-check" vd="${BWD_VARIANT_DIMS:-64}"
  vlist=$(KFA_VARIANT_KIND=bwd KFA_VARIANT_DIMS="$vd" python3 "$root/perf/gpu/sm90_tile_variants.py" "$build" \
    "${VARIANT_DIR:-/tmp/kfa-variants}" $BWD_VARIANTS 2> "$out/bwd_variants.err") \
    || { echo "backward variants failed:"; tail -20 "$out/bwd_variants.err"; vlist=""; }
  echo; echo "Hopper backward variants, bf16, TFLOP/s (bwd_check --bench $vd, median of 15), correctness by --quick:"
  for v in "base=$bwdc" $vlist; do
    name=${v%%=*} exe=${v#*=}
    timeout 120 "$exe" --quick > "$out/bwd_quick_$name.txt" 2>&1; qrc=$?
    timeout 150 "$exe" --bench "$vd" > "$out/bwd_bench_$name.txt" 2>&1
    echo "$name (--quick rc=$qrc: $(tail -1 "$out/bwd_quick_$name.txt")): $(awk '$1 ~ /^[0-9]+$/ {printf "d%s %s %s %s | ", $1, ($2 == "yes" ? "causal" : "full"), $3, $7}' "$out/bwd_bench_$name.txt")" | tee -a "$out/table.txt"
  done
fi
# compute-sanitizer on a reduced sweep: SANITIZE="tool:Catch2 filter;tool:filter"
IFS=';' read -ra checks <<< "${SANITIZE:-}"
for c in "${checks[@]}"; do
  tool="${c%%:*}"; f="${c#*:}"
  timeout "${SANITIZE_TIMEOUT:-60}" compute-sanitizer --tool "$tool" --error-exitcode 9 "$tests" "$f" > "$out/sanitize_$tool.log" 2>&1
  echo "compute-sanitizer $tool ($f): rc=$? $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|All tests passed|test cases:" "$out/sanitize_$tool.log" | tr '\n' ' ')"
done
