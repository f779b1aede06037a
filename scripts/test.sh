#!/usr/bin/env bash
# Builds kfa and runs every test suite this machine can run:
#   0. with an NVIDIA GPU present, first: a Kokkos-CUDA build with the native CUDA backend and its suites,
#   1. the host suites (Serial + OpenMP), the Fortran test and the Python package's test in a Release
#      build (gfortran, pybind11 and PyTorch are installed when missing and apt-get can),
#   2. an install + a tiny consumer project that does find_package(kfa),
#   3. the same suites built with AddressSanitizer + UndefinedBehaviorSanitizer, less the randomized
#      parameter sweeps (Catch2 tag [sweep]: the Release run has them),
# Dependencies come from an installed Kokkos/Catch2, else ../shared/deps, else the upstream release.
# Environment: KFA_BUILD_ROOT (default ./build), KFA_SKIP_SANITIZERS=1, KFA_CMAKE_ARGS (extra args).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${KFA_BUILD_ROOT:-$root/build}
jobs=$(nproc)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
extra=(${KFA_CMAKE_ARGS:-})
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_PROC_BIND=${OMP_PROC_BIND:-false}
step() { printf '\n== %s ==\n' "$*"; }

# Packages the optional parts need, installed when missing and apt-get can (Debian/Ubuntu); without them
# the builds go on and CMake skips those parts: gfortran (the Fortran module, its example and test),
# pybind11 and PyTorch (the Python package and its test).
apt_install() {  # log-name packages...
  command -v apt-get >/dev/null || return 1
  local log="$out/$1.apt.log" sudo=""; shift
  mkdir -p "$out"
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  local apt=($sudo env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends)
  { "${apt[@]}" install "$@" || { "${apt[@]}" update && "${apt[@]}" install "$@"; }; } >"$log" 2>&1
}
if ! command -v gfortran >/dev/null; then
  apt_install gfortran gfortran || true
  command -v gfortran >/dev/null || echo "gfortran could not be installed ($out/gfortran.apt.log): no Fortran module"
fi
# The Python package: a Python that imports torch, and pybind11's CMake package.
python_with_torch() {
  local py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null && "$py" -c "import torch" >/dev/null 2>&1 && { command -v "$py"; return 0; }
  done
  return 1
}
pybind11_cmake_dir() {  # from pip's pybind11, else a system package's config
  "$1" -c "import pybind11; print(pybind11.get_cmake_dir())" 2>/dev/null && return 0
  local d
  for d in /usr/lib/cmake/pybind11 /usr/share/cmake/pybind11 /usr/local/lib/cmake/pybind11; do
    [ -f "$d/pybind11Config.cmake" ] && { echo "$d"; return 0; }
  done
  return 1
}
py=$(python_with_torch || true)
if [ -z "$py" ] || ! pybind11_cmake_dir "$py" >/dev/null; then
  apt_install python pybind11-dev python3-torch || true
  py=$(python_with_torch || true)
fi
python_args=()
if [ -n "$py" ] && pybind_dir=$(pybind11_cmake_dir "$py"); then
  python_args=(-DKFA_BUILD_PYTHON=ON -DPython3_EXECUTABLE="$py" -Dpybind11_DIR="$pybind_dir")
else
  echo "no Python with torch and pybind11 ($out/python.apt.log): the Python package is not built"
fi

# With an NVIDIA GPU, its suites come first: a Kokkos-CUDA build with the native CUDA backend, built for
# this GPU's architecture only (the native kernels exist as sm_80 code, which runs on every 8.x GPU, and
# as sm_90 code), so that the GPU results arrive in minutes, before the longer host builds.
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  step "NVIDIA GPU found: Kokkos-CUDA build with the native CUDA backend, and its suites"
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  arch=()
  case "$cc" in
    80) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=AMPERE80) ;;
    86) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=AMPERE86) ;;
    89) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=ADA89) ;;
    90) arch=(-DKFA_CUDA_ARCHS=90 -DKFA_KOKKOS_ARCH=HOPPER90) ;;
  esac
  cmake -S "$root" -B "$out/cuda" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DKFA_KOKKOS_DEVICE=CUDA \
    -DKFA_ENABLE_CUDA=ON "${arch[@]}" "${python_args[@]}" "${extra[@]}"
  cmake --build "$out/cuda" --parallel "$jobs"
  ctest --test-dir "$out/cuda" --output-on-failure
fi

step "Release build and host test suites"
cmake -S "$root" -B "$out/release" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "${python_args[@]}" "${extra[@]}"
cmake --build "$out/release" --parallel "$jobs"
ctest --test-dir "$out/release" --output-on-failure --verbose  # verbose: each suite's Catch2 summary

step "Install, then build and run a consumer through find_package(kfa)"
cmake --install "$out/release" --prefix "$out/install" >/dev/null
cmake -S "$root/examples/consumer" -B "$out/consumer" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$out/install"
cmake --build "$out/consumer" --parallel "$jobs"
"$out/consumer/kfa-consumer"
[ -x "$out/consumer/kfa-consumer-c" ] && "$out/consumer/kfa-consumer-c"  # the C API, through the installed package
[ -x "$out/consumer/kfa-consumer-fortran" ] && "$out/consumer/kfa-consumer-fortran"  # the Fortran module, likewise

if [ "${KFA_SKIP_SANITIZERS:-0}" != 1 ]; then
  step "AddressSanitizer + UndefinedBehaviorSanitizer build of the host suites"
  # Kokkos and Catch2 come from the install above, so only kfa and its tests are instrumented.
  san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
  cmake -S "$root" -B "$out/sanitize" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" -DKFA_BUILD_BENCHMARKS=OFF -DKFA_TEST_SPEC="~[sweep]" \
    -DCMAKE_PREFIX_PATH="$out/install" "${extra[@]}"
  cmake --build "$out/sanitize" --parallel "$jobs"
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir "$out/sanitize" --output-on-failure
fi

step "All test suites passed"
