#!/usr/bin/env bash
# Builds kfa (Release, default backend) and runs the demo: a GPT-2-small-like attention layer
# (12 heads, head_dim 64, seqlen 1k..4k) against standard attention: speedup, memory, error vs fp64.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${KFA_BUILD_ROOT:-$root/build}/release
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$root" -B "$out" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${KFA_CMAKE_ARGS:-}
cmake --build "$out" --parallel "$(nproc)" --target kfa-bench
export OMP_PROC_BIND=${OMP_PROC_BIND:-spread} OMP_PLACES=${OMP_PLACES:-threads}
"$out/perf/kfa-bench" --demo "$@"
