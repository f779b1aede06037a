#!/usr/bin/env bash
# Tuning sweep of the CPU tile shapes (src/portable/tile_config.hpp macros): builds kfa-bench once
# per variant and prints GFLOP/s at 2 and all threads, batch 1, 12 heads, d 64, fp32, non-causal.
#   perf/tune_host_tiles.sh BUILD_ROOT OUT_DIR [cmake args...]
set -euo pipefail
root=$1; out=$2; shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
all=$(nproc)
declare -A variants=(
  [r8v2_256x128]="-DKFA_HOST_BLOCK_ROWS=8 -DKFA_HOST_BLOCK_VECS=2"
  [r4v4_256x128]="-DKFA_HOST_BLOCK_ROWS=4 -DKFA_HOST_BLOCK_VECS=4"
  [r8v3_256x128]="-DKFA_HOST_BLOCK_ROWS=8 -DKFA_HOST_BLOCK_VECS=3"
  [r16v1_256x128]="-DKFA_HOST_BLOCK_ROWS=16 -DKFA_HOST_BLOCK_VECS=1"
  [r8v2_128x128]="-DKFA_HOST_TILE_ROWS=128"
  [r8v2_256x64]="-DKFA_HOST_TILE_COLS=64"
  [r8v2_256x256]="-DKFA_HOST_TILE_COLS=256"
)
for name in "${!variants[@]}"; do
  b=$root/$name
  cmake -S "$src" -B "$b" -G Ninja -DKFA_BUILD_TESTS=OFF "-DCMAKE_CXX_FLAGS=${variants[$name]}" "$@" > "$out/cfg_$name.log" 2>&1
  ninja -C "$b" kfa-bench > "$out/build_$name.log" 2>&1
  for t in 2 "$all"; do
    OMP_NUM_THREADS=$t OMP_PROC_BIND=spread OMP_PLACES=threads "$b/perf/kfa-bench" --seqlen 1024,4096 --causal 0 \
      --no-standard --check-rows 8 --json "$out/tune_${name}_t$t.json" > /dev/null
  done
  python3 - "$name" "$out/tune_${name}_t2.json" "$out/tune_${name}_t$all.json" <<'PY'
import json, sys
cells = []
for path in sys.argv[2:]:
    js = json.load(open(path))
    for r in js["results"]:
        cells.append(f"t{js['concurrency']} N{r['seqlen']} {r['kfa']['tflops'] * 1e3:7.1f}")
print(f"{sys.argv[1]:>14}: " + " | ".join(cells), flush=True)
PY
done
