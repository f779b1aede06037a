#pragma once
// Element types of the GPU suites: the native kernels take half and bfloat16.
#include <Kokkos_Core.hpp>
#include <cuda_runtime_api.h>

#include <tuple>
#include <vector>

#include "harness.hpp"

namespace kfa::test {

using CudaTensorCoreCases = std::tuple<Case<Kokkos::Cuda, half>, Case<Kokkos::Cuda, bhalf>>;
using CudaAllCases = std::tuple<Case<Kokkos::Cuda, float>, Case<Kokkos::Cuda, double>, Case<Kokkos::Cuda, half>,
                                Case<Kokkos::Cuda, bhalf>>;

/// Backend::native, except for head_dim 256 on GPUs with less than 192 KB of shared memory per block
/// (sm_80), where the native forward declines and the automatic choice (portable) is tested instead.
inline Backend native_unless_too_big(std::int64_t head_dim) {
  int dev = 0, bytes = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return head_dim == 256 && bytes < 192 * 1024 ? Backend::automatic : Backend::native;
}

/// What the native-forward suite (tests/common/native_forward_suite.hpp) sweeps and forces.
inline std::vector<std::int64_t> native_head_dims() { return {64, 96, 128, 256}; }
inline Backend native_for(std::int64_t head_dim) { return native_unless_too_big(head_dim); }

}  // namespace kfa::test
