#pragma once
// forward_dispatch<ExecSpace>: options are checked, then the native kernel runs when the build has
// one for this execution space and it supports the case; otherwise the portable algorithm.
#include <Kokkos_Core.hpp>

#include "block_mask_device.hpp"
#include "kfa/forward.hpp"
#include "native_backend.hpp"
#include "portable/forward_kernel.hpp"
#include "score_spec.hpp"

namespace kfa::detail {

template <class ExecSpace, bool DeviceTiles>
void run_portable_forward(const ExecSpace& exec, const ForwardArgs& a) {
  using half = Kokkos::Experimental::half_t;
  using bhalf = Kokkos::Experimental::bhalf_t;
  switch (a.dtype) {
    case DType::f32: portable::run_forward<ExecSpace, float, DeviceTiles>(exec, a); break;
    case DType::f64: portable::run_forward<ExecSpace, double, DeviceTiles>(exec, a); break;
    case DType::f16: portable::run_forward<ExecSpace, half, DeviceTiles>(exec, a); break;
    case DType::bf16: portable::run_forward<ExecSpace, bhalf, DeviceTiles>(exec, a); break;
  }
}

/// forward_dispatch with the portable kernel picked by DeviceTiles (the GPU kernel or the host one),
/// so tests can run the GPU kernel on host spaces.
template <class ExecSpace, bool DeviceTiles = portable::device_forward_kernel<ExecSpace>>
void forward_dispatch_with(const ExecSpace& exec, const ForwardArgs& args, const Params& params) {
  ForwardArgs a = args;
  a.score = resolve_score(params, a.shape);
  resolve_block_mask(exec, params, a.shape, a.score);
  const Backend want = requested_backend(params);
  using Native = NativeBackend<ExecSpace>;
  // The slopes pointer is set before asking the native kernel, which may not handle ALiBi.
  auto slopes = device_slopes(exec, params);
  a.score.alibi_slopes = slopes.data();
  const bool native_ok = Native::available && Native::supports(a);
  if (want == Backend::native && !native_ok)
    throw Error(std::string("no native kernel for this case (dtype ") + dtype_name(a.dtype) + ", head_dim " +
                std::to_string(a.shape.head_dim) + native_decline_reason(a.score) + ") on this execution space");
  if (native_ok && want != Backend::portable)
    Native::forward(exec, a);
  else
    run_portable_forward<ExecSpace, DeviceTiles>(exec, a);
  if (slopes.data() != nullptr) exec.fence("kfa::forward: keep ALiBi slopes alive");
}

template <class ExecSpace>
void forward_dispatch(const ExecSpace& exec, const ForwardArgs& args, const Params& params) {
  forward_dispatch_with(exec, args, params);
}

}  // namespace kfa::detail

#define KFA_INSTANTIATE_FORWARD(SPACE) \
  template void kfa::detail::forward_dispatch<SPACE>(const SPACE&, const kfa::detail::ForwardArgs&, \
                                                   const kfa::Params&);
