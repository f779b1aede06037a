#pragma once
// Backend-neutral description of one KV-cache attention call (kfa::forward_kvcache), in the style of
// args.hpp: the attention over the cache as a ForwardArgs (its KvCache member holds the lengths and
// the page table) plus the keys and values appended before attending. No Kokkos here.
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::detail {

struct KvCacheArgs {
  /// q, o, lse as a padded forward call; k, v the caches ([batch, capacity, heads_kv, dim], or
  /// [num_pages, page_size, heads_kv, dim] when attn.kv.paged()); attn.shape.seqlen_k = capacity.
  ForwardArgs attn;
  /// [batch, seqlen_new, heads_kv, dim], written into the caches at positions cache_seqlens[b] + i
  /// before the attention (attn.kv.added = seqlen_new); seqlen_new = 0: no append.
  Tensor4 k_new, v_new;
  std::int64_t seqlen_new = 0;
  /// Split-KV parts per sequence for the native decode kernels; 0 = chosen to fill the device.
  int num_splits = 0;
};

}  // namespace kfa::detail
