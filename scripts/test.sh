#!/usr/bin/env bash
# Builds kfa and runs every test suite this machine can run:
#   0. with an NVIDIA GPU present, first: a Kokkos-CUDA build with the native CUDA backend and its suites,
#   1. the host suites (Serial + OpenMP), the Fortran test, the Python package's test and the ring-attention
#      tests under mpiexec (2 and 4 ranks) in a Release build of shared libraries (gfortran, pybind11, PyTorch and Open MPI
#      are installed when missing and apt-get can),
#   2. an install + a tiny consumer project that does find_package(kfa),
#   3. the same suites built with AddressSanitizer + UndefinedBehaviorSanitizer, less the randomized
#      parameter sweeps (Catch2 tag [sweep]: the Release run has them) and the MPI tests,
# Dependencies come from an installed Kokkos/Catch2, else ../shared/deps, else the upstream release.
# Environment: KFA_BUILD_ROOT (default ./build), KFA_SKIP_SANITIZERS=1, KFA_CMAKE_ARGS (extra args),
# KFA_TEST_SEED (the Catch2 seed of sharded suites).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${KFA_BUILD_ROOT:-$root/build}
jobs=$(nproc)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
extra=(${KFA_CMAKE_ARGS:-})
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_PROC_BIND=${OMP_PROC_BIND:-false}
step() { printf '\n== %s (%d s in) ==\n' "$*" "$SECONDS"; }

source "$root/scripts/setup.sh"  # apt_install, python_args, cuda_arch_args
if ! command -v gfortran >/dev/null; then
  apt_install gfortran gfortran || true
  command -v gfortran >/dev/null || echo "gfortran could not be installed ($out/gfortran.apt.log): no Fortran module"
fi
python_setup  # sets python_args: the Python package when a Python with torch and pybind11 is (or can be) installed
# Catch2 built once with the host compiler (ci/host_catch2.sh, from the pinned tarball) for every build
# here, instead of once per build; without the tarball each build finds or fetches its own.
catch2=""
if [ -f "${KFA_DEPS_DIR:-$root/../shared/deps}/Catch2-3.7.1.tar.gz" ]; then
  catch2=$(KFA_CATCH2_DIR="${KFA_CATCH2_DIR:-$out/catch2-host}" JOBS=$jobs bash "$root/ci/host_catch2.sh" | tail -1) || catch2=""
fi
# The ring-attention tests run under mpiexec (Open MPI from Debian/Ubuntu when no MPI is installed).
if ! command -v mpiexec >/dev/null; then
  apt_install mpi openmpi-bin libopenmpi-dev || echo "no MPI could be installed ($out/mpi.apt.log): no ring-attention tests"
fi

# The host builds: the Release build (kfa and Kokkos as shared libraries) with its install, and the
# sanitizer build of the host suites against that install.
host_shards=1 host_j=1
[ "$jobs" -ge 8 ] && host_shards=$(( jobs / 2 )) host_j=$jobs
release_build() {
  cmake -S "$root" -B "$out/release" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$catch2" \
    -DBUILD_SHARED_LIBS=ON -DKFA_HOST_TEST_SHARDS=$host_shards "${python_args[@]}" "${extra[@]}"
  cmake --build "$out/release" --parallel "$jobs"
  cmake --install "$out/release" --prefix "$out/install" >/dev/null
}
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
sanitize_build() {
  [ "${KFA_SKIP_SANITIZERS:-0}" != 1 ] || return 0
  # Kokkos comes from the install above and Catch2 from ci/host_catch2.sh, so only kfa and its tests are instrumented.
  cmake -S "$root" -B "$out/sanitize" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" -DKFA_BUILD_BENCHMARKS=OFF -DKFA_TEST_SPEC="~[sweep]" -DKFA_ENABLE_MPI=OFF \
    -DKFA_HOST_TEST_SHARDS=$host_shards \
    -DCMAKE_PREFIX_PATH="$out/install;$catch2" "${extra[@]}"
  cmake --build "$out/sanitize" --parallel "$jobs"
}

# With an NVIDIA GPU, its suites come first: a Kokkos-CUDA build with the native CUDA backend, built for
# this GPU's architecture only (the native kernels exist as sm_80 code, which runs on every 8.x GPU, and
# as sm_90 code), so that the GPU results arrive in minutes. The host builds run meanwhile in the
# background at low priority (on the cores the GPU stage leaves idle), logged to host-builds.log.
if has_nvidia_gpu; then
  step "NVIDIA GPU found: Kokkos-CUDA build with the native CUDA backend, and its suites (host builds in the background: $out/host-builds.log)"
  mkdir -p "$out"
  ( renice -n 19 -p $BASHPID >/dev/null 2>&1 || true
    set -e; release_build; sanitize_build ) > "$out/host-builds.log" 2>&1 &
  host_builds=$!
  kill_tree() { local c; for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done; kill "$1" 2>/dev/null || true; }
  trap 'kill_tree $host_builds; gpu_share_stop' EXIT
  cuda_arch_args  # sets arch
  # Each GPU suite runs as Catch2 shards of one seed, side by side, one per core, sharing the GPU through
  # an MPS server when one can be started (gpu_share_start). The benchmarks are not built here (CI
  # compiles them; perf/gpu builds them for measurements).
  shards=1
  [ "$jobs" -ge 8 ] && shards=4
  [ "$jobs" -ge 16 ] && shards=8
  cmake -S "$root" -B "$out/cuda" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DKFA_KOKKOS_DEVICE=CUDA \
    -DKFA_ENABLE_CUDA=ON -DKFA_CUDA_TEST_SHARDS=$shards -DKFA_BUILD_BENCHMARKS=OFF -DCMAKE_PREFIX_PATH="$catch2" \
    "${arch[@]}" "${python_args[@]}" "${extra[@]}"
  cmake --build "$out/cuda" --parallel "$jobs"
  step "GPU test suites"
  gpu_share_start "$(mktemp -d "${TMPDIR:-/tmp}/kfa-mps.XXXXXX")" "$out/cuda/tests/cuda/kfa-gpu-probe"
  KFA_TEST_SEED=${KFA_TEST_SEED:-$RANDOM} ctest --test-dir "$out/cuda" --output-on-failure -j "$jobs"
  gpu_share_stop
  step "Waiting for the host builds"
  wait $host_builds || { tail -40 "$out/host-builds.log"; echo "host builds failed ($out/host-builds.log)"; exit 1; }
  trap - EXIT
  step "Host test suites (Release build of shared libraries)"
else
  step "Release build (kfa and Kokkos as shared libraries) and host test suites"
  release_build
fi

# With many cores the host suites run as Catch2 shards of one seed side by side too (two OpenMP threads
# each); with few (CI's two) as one process each.
ctest --test-dir "$out/release" --output-on-failure --verbose -j "$host_j"  # verbose: each suite's Catch2 summary

step "Build and run a consumer of the installed package through find_package(kfa)"
cmake -S "$root/examples/consumer" -B "$out/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$out/install"
cmake --build "$out/consumer" --parallel "$jobs"
"$out/consumer/kfa-consumer"
[ -x "$out/consumer/kfa-consumer-c" ] && "$out/consumer/kfa-consumer-c"  # the C API, through the installed package
[ -x "$out/consumer/kfa-consumer-fortran" ] && "$out/consumer/kfa-consumer-fortran"  # the Fortran module, likewise
if [ ${#python_args[@]} -gt 0 ]; then  # the Python package, from the install
  PYTHONPATH="$(ls -d "$out"/install/lib*/python | head -1)" "$(python_with_torch)" "$root/examples/python/attention.py"
fi

if [ "${KFA_SKIP_SANITIZERS:-0}" != 1 ]; then
  step "AddressSanitizer + UndefinedBehaviorSanitizer build of the host suites"
  has_nvidia_gpu || sanitize_build
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir "$out/sanitize" --output-on-failure -j "$host_j"
fi

step "All test suites passed"
