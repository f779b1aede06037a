# Sourced by the GPU-machine scripts of perf/gpu: kfa_cuda_build OUT_DIR BUILD_DIR TARGETS... [-- cmake args]
# configures (once) a Release Kokkos-CUDA build of kfa with the native backend for Hopper and builds
# the targets; logs go to OUT_DIR. env: KFA_DEPS_DIR (default ROOT/.deps), KFA_CUDA_ARCHS (default 90).
kfa_cuda_build() {
  local out="$1" build="$2"; shift 2
  local targets=() args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  args=("$@")
  local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  export PATH=/usr/local/cuda/bin:$PATH
  local t0; t0=$(date +%s)
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKFA_KOKKOS_DEVICE=CUDA \
      -DKFA_KOKKOS_ARCH=HOPPER90 -DKFA_ENABLE_CUDA=ON -DKFA_CUDA_ARCHS="${KFA_CUDA_ARCHS:-90}" \
      -DKFA_DEPS_DIR="${KFA_DEPS_DIR:-$root/.deps}" "${args[@]}" > "$out/configure.log" 2>&1 \
      || { tail -30 "$out/configure.log"; return 1; }
  fi
  ninja -C "$build" "${targets[@]}" > "$out/build.log" 2>&1 \
    || { grep -B2 -A16 "error" "$out/build.log" | head -80; return 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
