# Sourced by scripts/test.sh and scripts/demo.sh (which set `out`, their build root): the set-up both
# share on a fresh machine.
#   apt_install LOG PACKAGES...  installs Debian/Ubuntu packages when apt-get can (log: $out/LOG.apt.log)
#   python_setup                 sets python_args: -DKFA_BUILD_PYTHON=ON and the Python that imports
#                                torch, when one (and pybind11's CMake package) is there or can be
#                                installed (pybind11-dev python3-torch), else empty
#   cuda_arch_args               sets arch: CMake arguments for this NVIDIA GPU's architecture only
#                                (the native kernels are sm_80 code, which runs on every 8.x GPU, and
#                                sm_90 code), empty when the GPU is unknown (the build's defaults)
#   gpu_share_start DIR PROBE    lets the parallel GPU test processes share the GPU: starts a private
#   gpu_share_stop               MPS server (pipe and log under DIR) when nvidia-cuda-mps-control is
#                                there and no MPS server was chosen (CUDA_MPS_PIPE_DIRECTORY unset),
#                                keeps it when PROBE (kfa-gpu-probe) gets a CUDA context through it;
#                                KFA_GPU_SHARE=0 turns it off

apt_install() {
  command -v apt-get >/dev/null || return 1
  local log="$out/$1.apt.log" sudo=""
  shift
  mkdir -p "$out"
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  # bounded: a machine that cannot reach its package mirror goes on without the packages (short network
  # timeouts, no retries: an offline machine loses seconds here, not minutes)
  local apt=($sudo timeout 600 env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends
    -o Acquire::Retries=0 -o Acquire::http::Timeout=15 -o Acquire::https::Timeout=15)
  { "${apt[@]}" install "$@" || { "${apt[@]}" update && "${apt[@]}" install "$@"; }; } >"$log" 2>&1
}

python_with_torch() {
  local py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null && "$py" -c "import torch" >/dev/null 2>&1 && { command -v "$py"; return 0; }
  done
  return 1
}

pybind11_cmake_dir() {  # pip's pybind11 for Python $1, else a system package's config
  "$1" -c "import pybind11; print(pybind11.get_cmake_dir())" 2>/dev/null && return 0
  local d
  for d in /usr/lib/cmake/pybind11 /usr/share/cmake/pybind11 /usr/local/lib/cmake/pybind11; do
    [ -f "$d/pybind11Config.cmake" ] && { echo "$d"; return 0; }
  done
  return 1
}

python_setup() {
  local py pybind_dir
  python_args=()
  py=$(python_with_torch || true)
  if [ -z "$py" ] || ! pybind11_cmake_dir "$py" >/dev/null; then
    apt_install python pybind11-dev python3-torch || true
    py=$(python_with_torch || true)
  fi
  if [ -n "$py" ] && pybind_dir=$(pybind11_cmake_dir "$py"); then
    python_args=(-DKFA_BUILD_PYTHON=ON -DPython3_EXECUTABLE="$py" -Dpybind11_DIR="$pybind_dir")
  else
    echo "no Python with torch and pybind11 ($out/python.apt.log): the Python package is not built"
  fi
}

cuda_arch_args() {
  local cc
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  arch=()
  case "$cc" in
    80) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=AMPERE80) ;;
    86) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=AMPERE86) ;;
    89) arch=(-DKFA_CUDA_ARCHS=80 -DKFA_KOKKOS_ARCH=ADA89) ;;
    90) arch=(-DKFA_CUDA_ARCHS=90 -DKFA_KOKKOS_ARCH=HOPPER90) ;;
  esac
}

has_nvidia_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }

# Without MPS the CUDA contexts of concurrent processes take turns on the GPU (time slices), and each
# test case of a shard ran 3-5x slower beside 15 others than alone; under MPS their kernels run side
# by side, within 1.0-1.3x of alone (docs/performance.md, GPU test suites).
gpu_share_start() {
  local dir="$1" probe="$2"
  kfa_mps_started=0 kfa_mps_env=0
  [ "${KFA_GPU_SHARE:-1}" != 0 ] && [ -z "${CUDA_MPS_PIPE_DIRECTORY:-}" ] || return 0
  command -v nvidia-cuda-mps-control >/dev/null || return 0
  mkdir -p "$dir/pipe" "$dir/log"
  export CUDA_MPS_PIPE_DIRECTORY="$dir/pipe" CUDA_MPS_LOG_DIRECTORY="$dir/log"
  kfa_mps_env=1
  if nvidia-cuda-mps-control -d && kfa_mps_started=1 && timeout 60 "$probe" >/dev/null; then
    echo "GPU shared by the test processes through an MPS server ($dir)"
    return 0
  fi
  echo "no MPS server for the GPU (log: $dir/log): the test processes take turns on it"
  gpu_share_stop
}

gpu_share_stop() {
  if [ "${kfa_mps_started:-0}" = 1 ]; then echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 || true; fi
  if [ "${kfa_mps_env:-0}" = 1 ]; then unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; fi
  kfa_mps_started=0 kfa_mps_env=0
}
