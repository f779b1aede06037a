#!/usr/bin/env bash
# Compile-only check of the HIP backend on a machine without an AMD GPU:
#   1. installs hipcc (Debian/Ubuntu package) when it is missing;
#   2. configures kfa with KFA_ENABLE_HIP=ON and builds, with hipcc, the native kernels (kfa_hip) and
#      the standalone GPU runner for gfx90a (MI200) and gfx940 (MI300; the packaged ROCm 5.2 cannot
#      target gfx942);
#   3. unbundles each kernel object's device code per architecture, disassembles it and FAILS unless
#      every forward/backward object issues matrix-core instructions (v_mfma ... of its element type);
#   4. runs the runner, which must report "skipped" without a GPU;
#   5. runs the same runner and the unmodified kernel sources compiled for the CPU against the
#      wavefront emulator of tests/hip/emulator (the --quick case subset, both element types,
#      forward and backward, judged against fp64 with the tolerance rule).
# The host suite of the MFMA model (kfa-tests-hip-host) needs no hipcc: scripts/test.sh builds and runs
# it with the other host suites. The library built for Kokkos::HIP and the Kokkos-based suite
# (tests/hip) are ci/hip_kokkos_check.sh's.
# Kokkos is only configured (the one scripts/test.sh installed under build/install, else any installed
# Kokkos, else the pinned tarball in KFA_DEPS_DIR); none of the targets built here compiles Kokkos.
#   ci/hip_compile_check.sh   env: KFA_HIP_ARCHS ("gfx90a;gfx940"), KFA_DEPS_DIR, JOBS (2),
#                             KFA_HIP_CHECK_DIR, KFA_CMAKE_ARGS (extra configure arguments)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archs="${KFA_HIP_ARCHS:-gfx90a;gfx940}"
jobs="${JOBS:-2}"
deps="${KFA_DEPS_DIR:-$root/../shared/deps}"
work="${KFA_HIP_CHECK_DIR:-$root/build/hip-compile-check}"
start=$(date +%s)
say() { echo "hip_compile_check: $*"; }
mkdir -p "$work"

if ! command -v hipcc > /dev/null; then
  say "installing hipcc"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q hipcc > "$work.apt.log" 2>&1 ||
    { $sudo apt-get update -q > /dev/null && $sudo apt-get install -y -q hipcc > "$work.apt.log" 2>&1; }
fi
say "$(hipcc --version 2>/dev/null | grep -m1 -i 'clang version' || echo 'hipcc')"

# LLVM tools of the clang that hipcc drives
llvm_bin=""
for d in "$(hipconfig -l 2>/dev/null || true)" /usr/lib/llvm-15/bin /opt/rocm/llvm/bin; do
  [ -n "$d" ] || continue
  for suffix in "" -15; do
    if [ -x "$d/clang-offload-bundler$suffix" ] && [ -x "$d/llvm-objdump$suffix" ] && [ -x "$d/llvm-objcopy$suffix" ]; then
      llvm_bin="$d"; tool_suffix="$suffix"; break 2
    fi
  done
done
[ -n "$llvm_bin" ] || { say "clang-offload-bundler / llvm-objdump / llvm-objcopy not found"; exit 1; }
bundler="$llvm_bin/clang-offload-bundler$tool_suffix"
objdump="$llvm_bin/llvm-objdump$tool_suffix"
objcopy="$llvm_bin/llvm-objcopy$tool_suffix"

mkdir -p "$work"
# reuse the Kokkos/Catch2 that scripts/test.sh installed (.ci/run runs it first), when present
prefix=()
installed="${KFA_BUILD_ROOT:-$root/build}/install"
[ -d "$installed" ] && prefix=(-DCMAKE_PREFIX_PATH="$installed")
gen=()
command -v ninja > /dev/null && gen=(-G Ninja)
cmake -S "$root" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DKFA_ENABLE_HIP=ON \
  -DKFA_HIP_ARCHS="$archs" -DKFA_DEPS_DIR="$deps" -DKFA_BUILD_BENCHMARKS=OFF -DKFA_ARCH_NATIVE=OFF ${prefix[@]+"${prefix[@]}"} \
  ${KFA_CMAKE_ARGS:-} > "$work/configure.log"
cmake --build "$work/build" --parallel "$jobs" --target kfa_hip kfa-hip-runner kfa-hip-emulated-runner

# v_mfma in the device code of every kernel object, for every architecture
objs="$work/build/backends/hip/hip"
dis="$work/disassembly"
mkdir -p "$dis"
IFS=';' read -r -a arch_list <<< "$archs"
for obj in forward_f16 forward_bf16 backward_f16 backward_bf16; do
  "$objcopy" --dump-section .hip_fatbin="$dis/$obj.fatbin" "$objs/$obj.o"
  for arch in "${arch_list[@]}"; do
    co="$dis/$obj.$arch.co"
    "$bundler" --unbundle --type=o --input="$dis/$obj.fatbin" --targets="hipv4-amdgcn-amd-amdhsa--$arch" --output="$co"
    "$objdump" -d "$co" > "$co.s"
    # CDNA2 spells v_mfma_f32_32x32x8f16 / ..bf16_1k, CDNA3 v_mfma_f32_32x32x8_f16 / .._bf16
    case "$obj" in
      *_bf16) want='v_mfma_f32_32x32x8_?bf16' ;;
      *) want='v_mfma_f32_32x32x8_?f16' ;;
    esac
    total=$(grep -c 'v_mfma' "$co.s" || true)
    typed=$(grep -cE "$want" "$co.s" || true)
    kernels=$(grep -cE '^[0-9a-f]+ <_ZN3kfa3hip.*_kernel' "$co.s" || true)
    say "$obj $arch: $kernels kernels, $total v_mfma instructions ($typed of the element type)"
    if [ "$total" -eq 0 ] || [ "$typed" -eq 0 ] || [ "$kernels" -eq 0 ]; then
      say "FAILED: no matrix-core instructions in $obj for $arch"
      exit 1
    fi
  done
done

set +e
"$work/build/tests/hip/kfa-hip-runner" > "$work/runner.log" 2>&1
rc=$?
set -e
head -3 "$work/runner.log"
if [ "$rc" -ne 77 ] && [ "$rc" -ne 0 ]; then
  say "kfa-hip-runner exited $rc (expected 77 = skipped without an AMD GPU, or 0)"
  exit 1
fi
emulated="$work/build/tests/hip/emulated/kfa-hip-emulated-runner"
[ -x "$emulated" ] || { say "kfa-hip-emulated-runner was not built (no host clang >= 15?)"; exit 1; }
"$emulated" --quick > "$work/emulated.log" 2>&1 || { cat "$work/emulated.log"; say "emulated kernels FAILED"; exit 1; }
tail -1 "$work/emulated.log"
say "passed in $(( $(date +%s) - start )) s"
