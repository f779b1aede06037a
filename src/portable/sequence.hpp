#pragma once
// Packed variable-length batches: the launcher arguments of one sequence alone, so the kernels run
// the padded-batch algorithm on it unchanged (its rows start at 0, its shape has its own lengths).
// The packed tensors have stride_b = 0, so the batch index still names the sequence (for dropout,
// block masks and ALiBi) without moving the pointers twice.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "portable/math.hpp"

namespace kfa::portable {

template <class U>
KOKKOS_INLINE_FUNCTION void skip_rows(detail::Tensor4& t, std::int64_t rows) {
  if (t.data) t.data = static_cast<U*>(t.data) + rows * t.stride_s;
}

template <class U>
KOKKOS_INLINE_FUNCTION void skip_rows(detail::Tensor3& t, std::int64_t rows) {
  if (t.data) t.data = static_cast<U*>(t.data) + rows * t.stride_s;
}

/// Sequence b of a packed forward call.
template <class T, class L>
KOKKOS_INLINE_FUNCTION detail::ForwardArgs sequence_args(const detail::ForwardArgs& all, std::int64_t b) {
  detail::ForwardArgs a = all;
  const std::int64_t q0 = all.varlen.cu_seqlens_q[b], k0 = all.varlen.cu_seqlens_k[b];
  a.shape.seqlen_q = all.varlen.cu_seqlens_q[b + 1] - q0;
  a.shape.seqlen_k = all.varlen.cu_seqlens_k[b + 1] - k0;
  skip_rows<T>(a.q, q0);
  skip_rows<T>(a.o, q0);
  skip_rows<T>(a.k, k0);
  skip_rows<T>(a.v, k0);
  skip_rows<L>(a.lse, q0);
  return a;
}

/// Sequence b of a packed backward call, run as batch 0: the batch index lives on in
/// score.batch_base (dropout, block masks), so per-(batch, head) buffers index from 0.
template <class T, class L>
KOKKOS_INLINE_FUNCTION detail::BackwardArgs sequence_args(const detail::BackwardArgs& all, std::int64_t b) {
  detail::BackwardArgs a = all;
  const std::int64_t q0 = all.varlen.cu_seqlens_q[b], k0 = all.varlen.cu_seqlens_k[b];
  a.shape.batch = 1;
  a.shape.seqlen_q = all.varlen.cu_seqlens_q[b + 1] - q0;
  a.shape.seqlen_k = all.varlen.cu_seqlens_k[b + 1] - k0;
  a.score.batch_base = b;
  skip_rows<T>(a.q, q0);
  skip_rows<T>(a.o, q0);
  skip_rows<T>(a.dout, q0);
  skip_rows<T>(a.dq, q0);
  skip_rows<T>(a.k, k0);
  skip_rows<T>(a.v, k0);
  skip_rows<T>(a.dk, k0);
  skip_rows<T>(a.dv, k0);
  skip_rows<L>(a.lse, q0);
  return a;
}

/// Runs k.q_tile(team, b, h, qt) for the team's query tile (br rows) of a forward kernel k (members a,
/// n_qtiles). Consecutive teams share a head (L2 reuse); within a head the longest (last) tiles
/// start first. Packed sequences or a KV cache (unless the kernel is built without them): the tile
/// runs on sequence b alone, with its own lengths.
template <class T, bool Packed = true, class Kernel, class Member>
KOKKOS_INLINE_FUNCTION void for_query_tile(const Kernel& k, const Member& team, int br) {
  const std::int64_t idx = team.league_rank();
  const std::int64_t qt = k.n_qtiles - 1 - idx % k.n_qtiles;
  const std::int64_t bh = idx / k.n_qtiles;
  const std::int64_t b = bh / k.a.shape.heads, h = bh % k.a.shape.heads;
  if (!Packed || !(k.a.varlen.enabled() || k.a.kv.enabled())) return k.q_tile(team, b, h, qt);
  Kernel one = k;
  if (k.a.varlen.enabled()) one.a = sequence_args<T, acc_t<T>>(k.a, b);
  else one.a.shape.seqlen_k = k.a.kv.seqlen_k(b);  // a cache: padded rows, its own key count
  if (qt * br < one.a.shape.seqlen_q) one.q_tile(team, b, h, qt);
}

}  // namespace kfa::portable
