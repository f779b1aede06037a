#pragma once
// kvcache_dispatch<ExecSpace>: options are checked (nothing is written before), the new keys/values
// are appended to the cache, then the native decode kernel runs when the build has one for this
// execution space and it takes the case; otherwise the portable algorithm, which reads the cache in
// place through the feature policy (per-sequence key counts, page table).
#include <Kokkos_Core.hpp>

#include <string>

#include "forward_dispatch.hpp"
#include "kfa/kvcache.hpp"
#include "native_backend.hpp"
#include "portable/kvcache_append.hpp"
#include "score_spec.hpp"

namespace kfa::detail {

/// kvcache_dispatch with the portable forward kernel picked by DeviceTiles (tests run the GPU kernel
/// on host spaces).
template <class ExecSpace, bool DeviceTiles = portable::device_forward_kernel<ExecSpace>>
void kvcache_dispatch_with(const ExecSpace& exec, const KvCacheArgs& args, const Params& params) {
  KvCacheArgs a = args;
  if (params.dropout_p != 0.0)
    throw Error("dropout_p must be 0 in forward_kvcache (dropout is a training option; use kfa::forward)");
  if (params.block_mask != nullptr)
    throw Error("block_mask is not supported by forward_kvcache (use kfa::forward)");
  a.attn.score = resolve_score(params, a.attn.shape);
  const Backend want = requested_backend(params);
  using Native = NativeBackend<ExecSpace>;
  auto slopes = device_slopes(exec, params);
  a.attn.score.alibi_slopes = slopes.data();
  const bool native_ok = Native::available && Native::supports_kvcache(a);
  if (want == Backend::native && !native_ok)
    throw Error(std::string("no native decode kernel for this case (dtype ") + dtype_name(a.attn.dtype) +
                ", head_dim " + std::to_string(a.attn.shape.head_dim) + ") on this execution space");
  portable::run_kvcache_append(exec, a);
  if (native_ok && want != Backend::portable)
    Native::forward_kvcache(exec, a);
  else
    run_portable_forward<ExecSpace, DeviceTiles>(exec, a.attn);
  if (slopes.data() != nullptr) exec.fence("kfa::forward_kvcache: keep ALiBi slopes alive");
}

template <class ExecSpace>
void kvcache_dispatch(const ExecSpace& exec, const KvCacheArgs& args, const Params& params) {
  kvcache_dispatch_with(exec, args, params);
}

}  // namespace kfa::detail

#define KFA_INSTANTIATE_KVCACHE(SPACE) \
  template void kfa::detail::kvcache_dispatch<SPACE>(const SPACE&, const kfa::detail::KvCacheArgs&, const kfa::Params&);
