#pragma once
// Kokkos::Cuda's native kernels: the Tensor Core launchers of backends/cuda, run on the execution
// space's stream so they order with the caller's other work on that instance.
#include <Kokkos_Core.hpp>

#include "kfa_cuda/launch.hpp"
#include "native_backend.hpp"

#ifdef KOKKOS_ENABLE_CUDA
namespace kfa::detail {

template <>
struct NativeBackend<Kokkos::Cuda> {
  static constexpr bool available = true;
  static bool supports(const ForwardArgs& a) { return kfa::cuda::supports_forward(a); }
  static void forward(const Kokkos::Cuda& exec, const ForwardArgs& a) { kfa::cuda::forward(a, exec.cuda_stream()); }
  static bool supports_backward(const BackwardArgs& a) { return kfa::cuda::supports_backward(a); }
  static void backward(const Kokkos::Cuda& exec, const BackwardArgs& a) { kfa::cuda::backward(a, exec.cuda_stream()); }
  static bool supports_kvcache(const KvCacheArgs& a) { return kfa::cuda::supports_kvcache(a); }
  static void forward_kvcache(const Kokkos::Cuda& exec, const KvCacheArgs& a) {
    kfa::cuda::forward_kvcache(a, exec.cuda_stream());
  }
};

}  // namespace kfa::detail
#endif
