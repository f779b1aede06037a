#pragma once
#include "kfa/detail/view_args.hpp"
#include "kfa/params.hpp"

namespace kfa {
namespace detail {
/// Defined in the library for each enabled Kokkos execution space; validates the options and
/// runs the native or the portable implementation.
template <class ExecSpace>
void forward_dispatch(const ExecSpace& exec, const ForwardArgs& args, const Params& params);


/// Checks a forward call's Views and describes them for the launchers (kfa::Error when invalid).
template <class ExecSpace, class Q, class K, class V, class O, class L>
ForwardArgs forward_args(const Q& q, const K& k, const V& v, const O& o, const L& lse) {
  using T = typename Q::non_const_value_type;
  const Shape s = attention_shape<ExecSpace>(q, k, v);
  check_view<ExecSpace>(o, "o", 4);
  static_assert(std::is_same_v<typename O::value_type, T>, "kfa: o must be a writable View of q's element type");
  check_extents(o, "o", {s.batch, s.seqlen_q, s.heads, s.head_dim}, "[batch, seqlen_q, heads, head_dim]");
  check_lse<ExecSpace, T>(lse, s);
  check_no_overlap(o, "o", q, "q");
  check_no_overlap(o, "o", k, "k");
  check_no_overlap(o, "o", v, "v");
  check_no_overlap(o, "o", lse, "lse");
  check_no_overlap(lse, "lse", q, "q");
  check_no_overlap(lse, "lse", k, "k");
  check_no_overlap(lse, "lse", v, "v");
  ForwardArgs a;
  a.dtype = dtype_of<T>();
  a.shape = s;
  a.q = tensor4(q);
  a.k = tensor4(k);
  a.v = tensor4(v);
  a.o = tensor4(o);
  a.lse = tensor3(lse);
  return a;
}
}  // namespace detail

/// Exact attention forward, O = softmax(Q K^T * scale) V, and the log-sum-exp of each row.
///   q   [batch, seqlen_q, heads, head_dim]       k, v [batch, seqlen_k, heads_kv, head_dim]
///   o   like q (written)                         lse  [batch, heads, seqlen_q] of lse_type<T> (written)
/// heads % heads_kv == 0 (MHA, GQA, MQA). Any layout with a unit-stride last dimension.
/// Asynchronous on `exec`. Throws kfa::Error on invalid input, before anything is written.
template <class ExecSpace, class Q, class K, class V, class O, class L>
void forward(const ExecSpace& exec, const Q& q, const K& k, const V& v, const O& o, const L& lse,
             const Params& params = {}) {
  detail::forward_dispatch(exec, detail::forward_args<ExecSpace>(q, k, v, o, lse), params);
}

}  // namespace kfa
