#pragma once
// Native (vendor) kernels, chosen by the dispatcher, never by the caller. The primary template says
// "none"; a backend specializes it for its execution space (see native_cuda.hpp / native_hip.hpp).
#include "kfa/detail/args.hpp"
#include "kfa/detail/kvcache_args.hpp"

namespace kfa::detail {

template <class ExecSpace>
struct NativeBackend {
  static constexpr bool available = false;
  static bool supports(const ForwardArgs&) { return false; }
  static void forward(const ExecSpace&, const ForwardArgs&) {}
  static bool supports_backward(const BackwardArgs&) { return false; }
  static void backward(const ExecSpace&, const BackwardArgs&) {}
  static bool supports_kvcache(const KvCacheArgs&) { return false; }
  static void forward_kvcache(const ExecSpace&, const KvCacheArgs&) {}
};

}  // namespace kfa::detail

#ifdef KFA_HAS_CUDA_BACKEND
#include "native_cuda.hpp"
#endif
#ifdef KFA_HAS_HIP_BACKEND
#include "native_hip.hpp"
#endif
