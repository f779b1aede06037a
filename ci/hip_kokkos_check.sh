#!/usr/bin/env bash
# The library built for Kokkos::HIP on a machine without an AMD GPU (ci/hip_compile_check.sh covers the
# native kernels alone). For each architecture of KFA_HIP_KOKKOS_ARCHS:
#   1. configures kfa with hipcc as the C++ compiler and KFA_KOKKOS_DEVICE=HIP, so that kfa builds
#      Kokkos 4.6.01 (the oldest Kokkos kfa supports; it accepts ROCm 5.x, Kokkos 5 needs ROCm >= 6.2)
#      from the pinned tarball in KFA_DEPS_DIR, Serial host, rocThrust off, as C++17
#      (cmake/kfaDependencies.cmake says why), while kfa and its tests compile as C++20;
#   2. builds the library (the portable algorithm and the dispatcher instantiated for Kokkos::HIP,
#      linked with the native kernels of backends/hip), the Kokkos suite kfa-tests-hip, installs kfa
#      and builds examples/consumer against the install: any compile or link error fails the step;
#   3. runs kfa-tests-hip through CTest, which must pass with the suite reporting itself skipped (no
#      AMD GPU), and checks that the consumer links.
# Kokkos takes one AMD architecture per build, so every architecture is its own build folder
# ($work/<arch>); they are kept, so a later run rebuilds only what changed (Kokkos not again).
# gfx90a only: Kokkos 4.6.01's HIP backend does not compile for AMD_GFX940 (Kokkos_HIP_IsXnack.hpp
# has no return for it) and ROCm 5.2 cannot target gfx942; ci/hip_compile_check.sh builds the native
# kernels for both gfx90a and gfx940.
# Catch2 comes from ci/host_catch2.sh (built once with the host C++ compiler: hipcc, the project's
# compiler here, cannot compile Catch2's <regex> as C++20 in HIP mode).
#   ci/hip_kokkos_check.sh   env: KFA_HIP_KOKKOS_ARCHS ("gfx90a"), KFA_DEPS_DIR, JOBS (2),
#                            KFA_HIP_KOKKOS_DIR (build/hip-kokkos), KFA_CMAKE_ARGS
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archs="${KFA_HIP_KOKKOS_ARCHS:-gfx90a}"
jobs="${JOBS:-2}"
deps="${KFA_DEPS_DIR:-$root/../shared/deps}"
work="${KFA_HIP_KOKKOS_DIR:-$root/build/hip-kokkos}"
start=$(date +%s)
say() { echo "hip_kokkos_check: $*"; }
mkdir -p "$work"

if ! command -v hipcc > /dev/null; then
  say "installing hipcc"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q hipcc > "$work/apt.log" 2>&1 ||
    { $sudo apt-get update -q > /dev/null && $sudo apt-get install -y -q hipcc > "$work/apt.log" 2>&1; }
fi
hipcc_bin="$(command -v hipcc)"
[ -f "$deps/kokkos-4.6.01.tar.gz" ] || { say "no $deps/kokkos-4.6.01.tar.gz"; exit 1; }
gen=()
command -v ninja > /dev/null && gen=(-G Ninja)

# Catch2 for the suite, compiled by the host compiler (ci/host_catch2.sh; the suite links it)
catch2="$(KFA_DEPS_DIR="$deps" JOBS="$jobs" bash "$root/ci/host_catch2.sh" | tail -1)"

IFS=';' read -r -a arch_list <<< "$archs"
for arch in "${arch_list[@]}"; do
  t0=$(date +%s)
  karch="AMD_$(echo "$arch" | tr '[:lower:]' '[:upper:]')"  # Kokkos's name: gfx90a -> AMD_GFX90A
  b="$work/$arch"
  say "$arch: configure (Kokkos_ARCH_$karch)"
  cmake -S "$root" -B "$b/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$hipcc_bin" \
    -DKFA_KOKKOS_DEVICE=HIP -DKFA_KOKKOS_ARCH="$karch" -DCMAKE_DISABLE_FIND_PACKAGE_Kokkos=ON \
    -DKFA_DEPS_DIR="$deps" -DKFA_ENABLE_HIP=ON -DKFA_HIP_ARCHS="$arch" -DKFA_BUILD_BENCHMARKS=OFF \
    -DKFA_ARCH_NATIVE=OFF -DCMAKE_PREFIX_PATH="$catch2" -DCMAKE_INSTALL_PREFIX="$b/install" \
    ${KFA_CMAKE_ARGS:-} > "$b.configure.log" 2>&1 || { tail -30 "$b.configure.log"; say "configure FAILED"; exit 1; }
  grep -q "building Kokkos 4.6.01 .* with HIP" "$b.configure.log" ||
    { say "$arch: kfa did not configure Kokkos 4.6.01 with HIP"; exit 1; }
  cmake --build "$b/build" --parallel "$jobs" --target kfa kfa-tests-hip
  cmake --install "$b/build" > "$b.install.log"
  cmake -S "$root/examples/consumer" -B "$b/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER="$hipcc_bin" -DCMAKE_PREFIX_PATH="$b/install" > "$b.consumer.log" 2>&1 ||
    { tail -30 "$b.consumer.log"; say "consumer configure FAILED"; exit 1; }
  cmake --build "$b/consumer" --parallel "$jobs"

  # the suite without a GPU: exit code 77, which CTest counts as skipped (ctest itself exits 0)
  set +e
  ctest --test-dir "$b/build" -R '^kfa-tests-hip$' --output-on-failure --verbose > "$b.ctest.log" 2>&1
  rc=$?
  set -e
  grep -E "kfa-tests-hip:|tests passed|Skipped|Not Run" "$b.ctest.log" || true
  if [ "$rc" -ne 0 ]; then
    cat "$b.ctest.log"
    say "$arch: kfa-tests-hip FAILED (ctest exit $rc)"
    exit 1
  fi
  if ! grep -q "kfa-tests-hip: SKIPPED" "$b.ctest.log"; then
    grep -q "All tests passed" "$b.ctest.log" || { cat "$b.ctest.log"; say "$arch: kfa-tests-hip neither skipped nor passed"; exit 1; }
  fi
  say "$arch: built and checked in $(( $(date +%s) - t0 )) s"
done
say "passed in $(( $(date +%s) - start )) s"
