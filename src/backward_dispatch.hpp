#pragma once
// backward_dispatch<ExecSpace>: options and workspace are checked (nothing is written before), the
// workspace is allocated when the caller gave none, then the native backward runs when the build
// has one for this execution space and it supports the case, otherwise the portable backward.
#include <Kokkos_Core.hpp>

#include <string>

#include "block_mask_device.hpp"
#include "kfa/backward.hpp"
#include "native_backend.hpp"
#include "portable/backward.hpp"
#include "score_spec.hpp"

namespace kfa::detail {

template <class ExecSpace>
void run_portable_backward(const ExecSpace& exec, const BackwardArgs& a, const BackwardWorkspaceLayout& ws) {
  switch (a.dtype) {
    case DType::f32: portable::run_backward<ExecSpace, float>(exec, a, ws); break;
    case DType::f64: portable::run_backward<ExecSpace, double>(exec, a, ws); break;
    case DType::f16: portable::run_backward<ExecSpace, Kokkos::Experimental::half_t>(exec, a, ws); break;
    case DType::bf16: portable::run_backward<ExecSpace, Kokkos::Experimental::bhalf_t>(exec, a, ws); break;
  }
}

template <class ExecSpace>
void backward_dispatch(const ExecSpace& exec, const BackwardArgs& args, const Params& params) {
  using Mem = typename ExecSpace::memory_space;
  BackwardArgs a = args;
  a.score = resolve_score(params, a.shape);
  resolve_block_mask(exec, params, a.shape, a.score);
  a.deterministic = params.deterministic;
  const Backend want = requested_backend(params);
  using Native = NativeBackend<ExecSpace>;
  const BackwardWorkspaceLayout ws =
      backward_workspace_layout(a.dtype, a.shape, a.deterministic, !params.alibi_slopes.empty());
  if (a.workspace != nullptr && a.workspace_bytes < ws.total)
    throw Error("workspace has " + std::to_string(a.workspace_bytes) + " bytes; this call needs " +
                std::to_string(ws.total) + " (kfa::backward_workspace_bytes)");

  Kokkos::View<char*, Mem> owned;
  if (a.workspace == nullptr) {
    owned = Kokkos::View<char*, Mem>(Kokkos::view_alloc(exec, Kokkos::WithoutInitializing, "kfa::backward_workspace"),
                                     ws.total);
    a.workspace = owned.data();
    a.workspace_bytes = ws.total;
  }
  if (ws.has_slopes) {  // before the native backend is asked: its answer may depend on ALiBi
    float* slopes = reinterpret_cast<float*>(static_cast<char*>(a.workspace) + ws.slopes);
    Kokkos::View<float*, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> d(slopes, params.alibi_slopes.size());
    Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(
        params.alibi_slopes.data(), params.alibi_slopes.size());
    Kokkos::deep_copy(exec, d, h);
    a.score.alibi_slopes = slopes;
  }
  const bool native_ok = Native::available && Native::supports_backward(a);
  if (want == Backend::native && !native_ok)
    throw Error(std::string("no native backward kernel for this case (dtype ") + dtype_name(a.dtype) +
                ", head_dim " + std::to_string(a.shape.head_dim) + native_decline_reason(a.score) +
                ") on this execution space");
  if (native_ok && want != Backend::portable)
    Native::backward(exec, a);
  else
    run_portable_backward(exec, a, ws);
  // An owned workspace is freed on return, and the slopes' host source belongs to the caller.
  if (owned.data() != nullptr || ws.has_slopes) exec.fence("kfa::backward: release the workspace");
}

}  // namespace kfa::detail

#define KFA_INSTANTIATE_BACKWARD(SPACE) \
  template void kfa::detail::backward_dispatch<SPACE>(const SPACE&, const kfa::detail::BackwardArgs&, \
                                                    const kfa::Params&);
