#pragma once
// The append of kfa::forward_kvcache: k_new / v_new [batch, seqlen_new, heads_kv, dim] copied into the
// caches at rows cache_seqlens[b] + i (through the page table when paged), before the attention reads
// them on the same execution space instance. One Kokkos kernel for every backend (native ones too:
// it moves seqlen_new rows, a small fraction of what the attention then reads). Elements are moved
// as raw words of their size, so one instantiation serves every element type of that size.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/kvcache_args.hpp"

namespace kfa::portable {

template <class ExecSpace, class Word>
struct KvAppend {
  detail::KvCacheArgs a;
  KOKKOS_INLINE_FUNCTION void operator()(std::int64_t e) const {
    const detail::Shape& s = a.attn.shape;
    const std::int64_t c = e % s.head_dim, r = e / s.head_dim;
    const std::int64_t h = r % s.heads_kv, i = (r / s.heads_kv) % a.seqlen_new, b = r / (s.heads_kv * a.seqlen_new);
    const std::int64_t j = a.attn.kv.seqlens[b] + i;  // the row's position in sequence b's cache
    const std::int64_t src_k = b * a.k_new.stride_b + i * a.k_new.stride_s + h * a.k_new.stride_h + c;
    const std::int64_t src_v = b * a.v_new.stride_b + i * a.v_new.stride_s + h * a.v_new.stride_h + c;
    static_cast<Word*>(a.attn.k.data)[detail::key_row_offset(a.attn.k, a.attn.kv, b, j, h) + c] =
        static_cast<const Word*>(a.k_new.data)[src_k];
    static_cast<Word*>(a.attn.v.data)[detail::key_row_offset(a.attn.v, a.attn.kv, b, j, h) + c] =
        static_cast<const Word*>(a.v_new.data)[src_v];
  }
};

/// Appends a.k_new / a.v_new to the caches (asynchronous on exec); nothing when seqlen_new is 0.
template <class ExecSpace>
void run_kvcache_append(const ExecSpace& exec, const detail::KvCacheArgs& a) {
  const detail::Shape& s = a.attn.shape;
  const std::int64_t n = s.batch * a.seqlen_new * s.heads_kv * s.head_dim;
  if (n == 0) return;
  auto run = [&](auto word) {
    using Word = decltype(word);
    Kokkos::parallel_for("kfa::kvcache_append", Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(exec, 0, n),
                         KvAppend<ExecSpace, Word>{a});
  };
  switch (a.attn.dtype) {
    case detail::DType::f16:
    case detail::DType::bf16: run(std::uint16_t{}); break;
    case detail::DType::f32: run(std::uint32_t{}); break;
    case detail::DType::f64: run(std::uint64_t{}); break;
  }
}

}  // namespace kfa::portable
