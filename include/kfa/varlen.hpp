#pragma once
// Packed variable-length sequences (no padding): kfa::forward_varlen.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "kfa/detail/view_args.hpp"
#include "kfa/forward.hpp"
#include "kfa/params.hpp"

namespace kfa {
namespace detail {

/// Rank, unit stride and element type of a packed View; an empty extent(0) may have null data.
template <class ExecSpace, class View>
void check_packed_view(const View& v, const char* name, unsigned rank) {
  static_assert(Kokkos::is_view_v<View>, "kfa: arguments must be Kokkos::View");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename View::memory_space>::accessible,
                "kfa: a View's memory space is not accessible from the execution space");
  if (View::rank() != rank)
    throw Error(std::string(name) + " must have rank " + std::to_string(rank) + ", got rank " +
                std::to_string(View::rank()));
  if (v.size() > 0 && v.data() == nullptr) throw Error(std::string(name) + " is not allocated (null data)");
  if (v.size() > 0 && v.stride(rank - 1) != 1)
    throw Error(std::string(name) + ": the last dimension must have unit stride");
}

/// Host copy of a cu_seqlens View, checked: batch + 1 entries, starts at 0, non-decreasing, ends at total,
/// no sequence longer than max_seqlen. Returns the number of sequences.
template <class ExecSpace, class Cu>
std::int64_t check_cu_seqlens(const Cu& cu, const char* name, std::int64_t total, std::int64_t max_seqlen,
                              const char* max_name) {
  static_assert(Kokkos::is_view_v<Cu> && Cu::rank() == 1, "kfa: cu_seqlens must be a rank-1 Kokkos::View");
  static_assert(std::is_same_v<typename Cu::non_const_value_type, std::int32_t>, "kfa: cu_seqlens must hold int32");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename Cu::memory_space>::accessible,
                "kfa: cu_seqlens must be accessible from the execution space");
  if (cu.extent(0) < 2)
    throw Error(std::string(name) + " has " + std::to_string(cu.extent(0)) + " entries, expected batch + 1 >= 2");
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), cu);
  if (h(0) != 0) throw Error(std::string(name) + "[0] must be 0, got " + std::to_string(h(0)));
  const std::int64_t batch = static_cast<std::int64_t>(cu.extent(0)) - 1;
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t len = std::int64_t(h(b + 1)) - h(b);
    if (len < 0)
      throw Error(std::string(name) + " must be non-decreasing (prefix sums), but entry " + std::to_string(b + 1) +
                  " = " + std::to_string(h(b + 1)) + " < entry " + std::to_string(b) + " = " + std::to_string(h(b)));
    if (len > max_seqlen)
      throw Error("sequence " + std::to_string(b) + " has length " + std::to_string(len) + " > " + max_name + " = " +
                  std::to_string(max_seqlen));
  }
  if (h(batch) != total)
    throw Error(std::string(name) + " ends at " + std::to_string(h(batch)) + " but the packed tensor has " +
                std::to_string(total) + " rows");
  return batch;
}

template <class View>
Tensor4 packed_tensor4(const View& v) {  // [total, heads, dim] as a [1, total, heads, dim] with stride_b 0
  return {const_cast<void*>(static_cast<const void*>(v.data())), 0,
          static_cast<std::int64_t>(v.stride(0)), static_cast<std::int64_t>(v.stride(1))};
}

/// Checks a packed call's Views and describes them for the launchers (kfa::Error when invalid).
template <class ExecSpace, class Q, class K, class V, class CuQ, class CuK>
ForwardArgs varlen_args(const Q& q, const K& k, const V& v, const CuQ& cu_q, const CuK& cu_k,
                        std::int64_t max_seqlen_q, std::int64_t max_seqlen_k) {
  using T = typename Q::non_const_value_type;
  static_assert(std::is_same_v<T, typename K::non_const_value_type> && std::is_same_v<T, typename V::non_const_value_type>,
                "kfa: q, k and v must have the same element type");
  check_packed_view<ExecSpace>(q, "q", 3);
  check_packed_view<ExecSpace>(k, "k", 3);
  check_packed_view<ExecSpace>(v, "v", 3);
  Shape s;
  s.heads = q.extent(1);
  s.head_dim = q.extent(2);
  s.heads_kv = k.extent(1);
  if (s.heads == 0 || s.head_dim == 0 || s.heads_kv == 0)
    throw Error("q " + extents_str(q) + " and k " + extents_str(k) + " must have heads, heads_kv and head_dim > 0");
  check_extents(k, "k", {static_cast<std::int64_t>(k.extent(0)), s.heads_kv, s.head_dim}, "[total_k, heads_kv, head_dim]");
  check_extents(v, "v", {static_cast<std::int64_t>(k.extent(0)), s.heads_kv, s.head_dim}, "[total_k, heads_kv, head_dim]");
  if (s.heads % s.heads_kv != 0)
    throw Error("heads (" + std::to_string(s.heads) + ") must be a multiple of heads_kv (" + std::to_string(s.heads_kv) + ")");
  if (max_seqlen_q < 0 || max_seqlen_k < 0) throw Error("max_seqlen_q and max_seqlen_k must be >= 0");
  const std::int64_t bq = check_cu_seqlens<ExecSpace>(cu_q, "cu_seqlens_q", q.extent(0), max_seqlen_q, "max_seqlen_q");
  const std::int64_t bk = check_cu_seqlens<ExecSpace>(cu_k, "cu_seqlens_k", k.extent(0), max_seqlen_k, "max_seqlen_k");
  if (bq != bk)
    throw Error("cu_seqlens_q describes " + std::to_string(bq) + " sequences but cu_seqlens_k " + std::to_string(bk));
  s.batch = bq;
  s.seqlen_q = max_seqlen_q;
  s.seqlen_k = max_seqlen_k;
  ForwardArgs a;
  a.dtype = dtype_of<T>();
  a.shape = s;
  a.q = packed_tensor4(q);
  a.k = packed_tensor4(k);
  a.v = packed_tensor4(v);
  a.varlen.cu_seqlens_q = cu_q.data();
  a.varlen.cu_seqlens_k = cu_k.data();
  a.varlen.total_q = static_cast<std::int64_t>(q.extent(0));
  a.varlen.total_k = static_cast<std::int64_t>(k.extent(0));
  return a;
}

}  // namespace detail

/// Attention over packed variable-length sequences, without padding:
///   q, o [total_q, heads, head_dim]     k, v [total_k, heads_kv, head_dim]     lse [heads, total_q] (written)
///   cu_seqlens_q / cu_seqlens_k: int32 [batch + 1] prefix sums of the lengths (sequence b owns rows
///   cu[b] .. cu[b+1]); max_seqlen_q / max_seqlen_k bound the lengths. Sequences may be empty.
/// Masks (causal, window, ALiBi) are aligned per sequence; dropout and block masks index rows and
/// columns within the sequence and the batch index by sequence (a block mask is built for the max lengths).
/// The prefix sums are read on the host to validate them (a small copy and a fence on device spaces).
template <class ExecSpace, class Q, class K, class V, class O, class L, class CuQ, class CuK>
void forward_varlen(const ExecSpace& exec, const Q& q, const K& k, const V& v, const O& o, const L& lse,
                    const CuQ& cu_seqlens_q, const CuK& cu_seqlens_k, std::int64_t max_seqlen_q,
                    std::int64_t max_seqlen_k, const Params& params = {}) {
  using T = typename Q::non_const_value_type;
  detail::ForwardArgs a =
      detail::varlen_args<ExecSpace>(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k);
  static_assert(std::is_same_v<typename O::value_type, T>, "kfa: o must be a writable View of q's element type");
  static_assert(std::is_same_v<typename L::value_type, lse_type<T>>,
                "kfa: lse must hold kfa::lse_type<T> (float, or double for double inputs) and be writable");
  detail::check_packed_view<ExecSpace>(o, "o", 3);
  detail::check_packed_view<ExecSpace>(lse, "lse", 2);
  detail::check_extents(o, "o", {static_cast<std::int64_t>(q.extent(0)), a.shape.heads, a.shape.head_dim},
                        "[total_q, heads, head_dim]");
  detail::check_extents(lse, "lse", {a.shape.heads, static_cast<std::int64_t>(q.extent(0))}, "[heads, total_q]");
  if (o.size() > 0) {
    detail::check_no_overlap(o, "o", q, "q");
    detail::check_no_overlap(o, "o", k, "k");
    detail::check_no_overlap(o, "o", v, "v");
    detail::check_no_overlap(o, "o", lse, "lse");
    detail::check_no_overlap(lse, "lse", q, "q");
    detail::check_no_overlap(lse, "lse", k, "k");
    detail::check_no_overlap(lse, "lse", v, "v");
  }
  a.o = detail::packed_tensor4(o);
  a.lse = {lse.data(), 0, static_cast<std::int64_t>(lse.stride(0)), static_cast<std::int64_t>(lse.stride(1))};
  if (q.extent(0) == 0) return;  // no query rows: nothing to compute
  detail::forward_dispatch(exec, a, params);
}

}  // namespace kfa

#include "kfa/backward.hpp"

namespace kfa {

/// Gradients of forward_varlen (same packing):
///   dout, out [total_q, heads, head_dim]; lse [heads, total_q] as forward_varlen wrote it;
///   dq [total_q, heads, head_dim], dk, dv [total_k, heads_kv, head_dim] (written; keys no query sees get 0).
/// Same Params as the forward call (dropout regenerates the forward's mask). Allocates its workspace
/// (sized for batch x max_seqlen_q rows) and waits for its kernels before it returns.
template <class ExecSpace, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV,
          class CuQ, class CuK>
void backward_varlen(const ExecSpace& exec, const DO& dout, const Q& q, const K& k, const V& v, const O& out,
                     const L& lse, const DQ& dq, const DK& dk, const DV& dv, const CuQ& cu_seqlens_q,
                     const CuK& cu_seqlens_k, std::int64_t max_seqlen_q, std::int64_t max_seqlen_k,
                     const Params& params = {}) {
  using T = typename Q::non_const_value_type;
  using namespace kfa::detail;
  const ForwardArgs f = varlen_args<ExecSpace>(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k);
  static_assert(std::is_same_v<typename DO::non_const_value_type, T> && std::is_same_v<typename O::non_const_value_type, T>,
                "kfa: dout and out must hold q's element type");
  static_assert(std::is_same_v<typename DQ::value_type, T> && std::is_same_v<typename DK::value_type, T> &&
                    std::is_same_v<typename DV::value_type, T>,
                "kfa: dq, dk and dv must be writable Views of q's element type");
  static_assert(std::is_same_v<typename L::non_const_value_type, lse_type<T>>,
                "kfa: lse must hold kfa::lse_type<T> (float, or double for double inputs)");
  const std::int64_t tq = q.extent(0), tk = k.extent(0), h = f.shape.heads, hk = f.shape.heads_kv, d = f.shape.head_dim;
  check_packed_view<ExecSpace>(dout, "dout", 3);
  check_packed_view<ExecSpace>(out, "out", 3);
  check_packed_view<ExecSpace>(lse, "lse", 2);
  check_packed_view<ExecSpace>(dq, "dq", 3);
  check_packed_view<ExecSpace>(dk, "dk", 3);
  check_packed_view<ExecSpace>(dv, "dv", 3);
  check_extents(dout, "dout", {tq, h, d}, "[total_q, heads, head_dim]");
  check_extents(out, "out", {tq, h, d}, "[total_q, heads, head_dim]");
  check_extents(lse, "lse", {h, tq}, "[heads, total_q]");
  check_extents(dq, "dq", {tq, h, d}, "[total_q, heads, head_dim]");
  check_extents(dk, "dk", {tk, hk, d}, "[total_k, heads_kv, head_dim]");
  check_extents(dv, "dv", {tk, hk, d}, "[total_k, heads_kv, head_dim]");
  check_gradients_disjoint(dq, dk, dv, dout, "dout", q, "q", k, "k", v, "v", out, "out", lse, "lse");
  BackwardArgs a;
  a.dtype = f.dtype;
  a.shape = f.shape;
  a.q = f.q;
  a.k = f.k;
  a.v = f.v;
  a.varlen = f.varlen;
  a.dout = packed_tensor4(dout);
  a.o = packed_tensor4(out);
  a.dq = packed_tensor4(dq);
  a.dk = packed_tensor4(dk);
  a.dv = packed_tensor4(dv);
  a.lse = {const_cast<void*>(static_cast<const void*>(lse.data())), 0, static_cast<std::int64_t>(lse.stride(0)),
           static_cast<std::int64_t>(lse.stride(1))};
  if (tq == 0 && tk == 0) return;  // nothing to compute
  backward_dispatch(exec, a, params);
}

}  // namespace kfa
