#pragma once
// Kokkos::HIP's native kernels: the matrix-core launchers of backends/hip, run on the execution
// space's stream so they order with the caller's other work on that instance.
#include <Kokkos_Core.hpp>

#include "kfa_hip/launch.hpp"
#include "native_backend.hpp"

#ifdef KOKKOS_ENABLE_HIP
namespace kfa::detail {

template <>
struct NativeBackend<Kokkos::HIP> {
  static constexpr bool available = true;
  static bool supports(const ForwardArgs& a) { return kfa::hip::supports_forward(a); }
  static void forward(const Kokkos::HIP& exec, const ForwardArgs& a) { kfa::hip::forward(a, exec.hip_stream()); }
  static bool supports_backward(const BackwardArgs& a) { return kfa::hip::supports_backward(a); }
  static void backward(const Kokkos::HIP& exec, const BackwardArgs& a) { kfa::hip::backward(a, exec.hip_stream()); }
  static bool supports_kvcache(const KvCacheArgs&) { return false; }  // the portable algorithm reads the cache
  static void forward_kvcache(const Kokkos::HIP&, const KvCacheArgs&) {}
};

}  // namespace kfa::detail
#endif
