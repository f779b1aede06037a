#!/usr/bin/env bash
# Catch2 3.7.1 built once with the host C++ compiler and installed under build/catch2-host, for the
# compile checks that link the GPU suites: the CUDA build would otherwise compile Catch2 through
# nvcc_wrapper (minutes on two cores), and hipcc cannot compile its <regex> as C++20 in HIP mode. The
# suites link it across compilers safely: nvcc_wrapper and hipcc build on the same libstdc++.
#   ci/host_catch2.sh      env: KFA_DEPS_DIR, JOBS (2), KFA_CATCH2_DIR (build/catch2-host)
# Prints the install prefix as its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="${KFA_DEPS_DIR:-$root/../shared/deps}"
work="${KFA_CATCH2_DIR:-$root/build/catch2-host}"
jobs="${JOBS:-2}"
if [ ! -f "$work/install/.complete" ]; then
  echo "host_catch2: building Catch2 3.7.1 with the host compiler into $work/install" >&2
  rm -rf "$work"
  mkdir -p "$work"
  gen=()
  command -v ninja > /dev/null && gen=(-G Ninja)
  tar -xzf "$deps/Catch2-3.7.1.tar.gz" -C "$work"
  cmake -S "$work/Catch2-3.7.1" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=20 \
    -DCATCH_INSTALL_DOCS=OFF -DCATCH_INSTALL_EXTRAS=OFF -DCMAKE_INSTALL_PREFIX="$work/install" > "$work/configure.log"
  cmake --build "$work/build" --parallel "$jobs" > "$work/build.log" ||
    { tail -30 "$work/build.log" >&2; echo "host_catch2: Catch2 build FAILED" >&2; exit 1; }
  cmake --install "$work/build" > /dev/null
  rm -rf "$work/build" "$work/Catch2-3.7.1"
  touch "$work/install/.complete"
fi
echo "$work/install"
