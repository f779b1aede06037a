#pragma once
// kfa::backward: gradients of exact attention by recomputation, and its workspace query.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kfa/detail/backward_workspace.hpp"
#include "kfa/detail/view_args.hpp"
#include "kfa/params.hpp"

namespace kfa {
namespace detail {
/// Defined in the library for each enabled Kokkos execution space; validates the options and runs
/// the backward pass.
template <class ExecSpace>
void backward_dispatch(const ExecSpace& exec, const BackwardArgs& args, const Params& params);

/// A [batch, seq, heads, dim] argument shaped like q (or like k when `like_k`), of element type T.
template <class ExecSpace, class T, bool Writable, class View>
void check_like(const View& v, const char* name, const Shape& s, bool like_k) {
  check_view<ExecSpace>(v, name, 4);
  if constexpr (Writable)
    static_assert(std::is_same_v<typename View::value_type, T>,
                  "kfa: dq, dk and dv must be writable Views of q's element type");
  else
    static_assert(std::is_same_v<typename View::non_const_value_type, T>,
                  "kfa: dout and out must hold q's element type");
  if (like_k)
    check_extents(v, name, {s.batch, s.seqlen_k, s.heads_kv, s.head_dim}, "[batch, seqlen_k, heads_kv, head_dim]");
  else
    check_extents(v, name, {s.batch, s.seqlen_q, s.heads, s.head_dim}, "[batch, seqlen_q, heads, head_dim]");
}

/// Calls f(view, name) for each (view, name) pair of the argument list.
template <class F>
void for_each_named(const F&) {}
template <class F, class V, class... Rest>
void for_each_named(const F& f, const V& v, const char* name, const Rest&... rest) {
  f(v, name);
  for_each_named(f, rest...);
}

/// The gradients may overlap neither each other nor any (name, View) input.
template <class DQ, class DK, class DV, class... Named>
void check_gradients_disjoint(const DQ& dq, const DK& dk, const DV& dv, const Named&... inputs) {
  for_each_named([&](const auto& g, const char* gn) {
    for_each_named([&](const auto& x, const char* xn) { check_no_overlap(g, gn, x, xn); }, inputs...);
  }, dq, "dq", dk, "dk", dv, "dv");
  check_no_overlap(dq, "dq", dk, "dk");
  check_no_overlap(dq, "dq", dv, "dv");
  check_no_overlap(dk, "dk", dv, "dv");
}

/// Checks a backward call's Views and describes them for the launchers (kfa::Error when invalid).
template <class ExecSpace, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV>
BackwardArgs backward_args(const DO& dout, const Q& q, const K& k, const V& v, const O& out, const L& lse,
                           const DQ& dq, const DK& dk, const DV& dv) {
  using T = typename Q::non_const_value_type;
  const Shape s = attention_shape<ExecSpace>(q, k, v);
  check_like<ExecSpace, T, false>(dout, "dout", s, false);
  check_like<ExecSpace, T, false>(out, "out", s, false);
  check_view<ExecSpace>(lse, "lse", 3);
  static_assert(std::is_same_v<typename L::non_const_value_type, lse_type<T>>,
                "kfa: lse must hold kfa::lse_type<T> (float, or double for double inputs)");
  check_extents(lse, "lse", {s.batch, s.heads, s.seqlen_q}, "[batch, heads, seqlen_q]");
  check_like<ExecSpace, T, true>(dq, "dq", s, false);
  check_like<ExecSpace, T, true>(dk, "dk", s, true);
  check_like<ExecSpace, T, true>(dv, "dv", s, true);
  check_gradients_disjoint(dq, dk, dv, dout, "dout", q, "q", k, "k", v, "v", out, "out", lse, "lse");
  BackwardArgs a;
  a.dtype = dtype_of<T>();
  a.shape = s;
  a.dout = tensor4(dout);
  a.q = tensor4(q);
  a.k = tensor4(k);
  a.v = tensor4(v);
  a.o = tensor4(out);
  a.lse = tensor3(lse);
  a.dq = tensor4(dq);
  a.dk = tensor4(dk);
  a.dv = tensor4(dv);
  return a;
}

/// A caller-owned workspace: a contiguous rank-1 View the execution space can access, that
/// overlaps none of the call's other arguments (given as view, name pairs).
template <class ExecSpace, class W, class... Args>
void attach_workspace(BackwardArgs& a, const W& w, const Args&... args_and_names) {
  static_assert(Kokkos::is_view_v<W> && W::rank() == 1, "kfa: the workspace must be a rank-1 Kokkos::View");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename W::memory_space>::accessible,
                "kfa: the workspace's memory space is not accessible from the execution space");
  static_assert(!std::is_const_v<typename W::value_type>, "kfa: the workspace must be writable");
  if (w.data() == nullptr) throw Error("workspace is not allocated (null data)");
  if (!w.span_is_contiguous()) throw Error("workspace must be contiguous");
  if (reinterpret_cast<std::uintptr_t>(w.data()) % 8 != 0) throw Error("workspace must be 8-byte aligned");
  for_each_named([&](const auto& x, const char* xn) { check_no_overlap(w, "workspace", x, xn); }, args_and_names...);
  a.workspace = static_cast<void*>(w.data());
  a.workspace_bytes = w.span() * sizeof(typename W::value_type);
}
}  // namespace detail

/// Bytes of device workspace one kfa::backward call on these q, k and params needs (O(N * d)):
/// D = rowsum(dO * O), the fp32 (fp64 for double) dQ accumulator, with params.deterministic one int32
/// count per 64 query rows of each head (the order of the native kernel's dQ additions), and the ALiBi
/// slopes. Pass a View of at least this size to kfa::backward to own the memory.
template <class Q, class K>
std::size_t backward_workspace_bytes(const Q& q, const K& k, const Params& params = {}) {
  static_assert(Kokkos::is_view_v<Q> && Q::rank() == 4 && Kokkos::is_view_v<K> && K::rank() == 4,
                "kfa: q and k must be rank-4 Kokkos::Views");
  detail::Shape s;
  s.batch = q.extent(0);
  s.seqlen_q = q.extent(1);
  s.heads = q.extent(2);
  s.head_dim = q.extent(3);
  s.seqlen_k = k.extent(1);
  s.heads_kv = k.extent(2);
  return detail::backward_workspace_layout(detail::dtype_of<typename Q::non_const_value_type>(), s,
                                           params.deterministic, !params.alibi_slopes.empty())
      .total;
}

/// Gradients of exact attention, recomputed from the inputs and the forward's log-sum-exp
/// (FlashAttention-2: no seqlen_q x seqlen_k matrix is ever stored).
///   dout, out  like q: the gradient of the loss w.r.t. o, and the forward's o
///   lse        [batch, heads, seqlen_q] of lse_type<T>, as kfa::forward wrote it
///   dq like q; dk, dv like k (written). With GQA/MQA dk and dv sum over the query heads of a KV head.
/// Same shapes, layouts, element types and Params as kfa::forward (dropout and block-sparse are
/// rejected there and here). params.deterministic gives bitwise reproducible gradients that do not
/// depend on the thread count: the portable path and the mma.sync kernels give dQ its own pass (about
/// 1.4x the arithmetic), the Hopper kernel adds dQ tiles in a fixed order.
/// The workspace (see backward_workspace_bytes) is allocated here; the call then waits for its
/// kernels before it returns. Throws kfa::Error on invalid input, before anything is written.
template <class ExecSpace, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV>
void backward(const ExecSpace& exec, const DO& dout, const Q& q, const K& k, const V& v, const O& out, const L& lse,
              const DQ& dq, const DK& dk, const DV& dv, const Params& params = {}) {
  detail::backward_dispatch(exec, detail::backward_args<ExecSpace>(dout, q, k, v, out, lse, dq, dk, dv), params);
}

/// As above, with a caller-owned workspace: any contiguous rank-1 View of at least
/// backward_workspace_bytes(q, k, params) bytes in a memory space `exec` can access. The call is
/// then asynchronous on `exec` (unless ALiBi slopes must be copied in), and allocates nothing.
template <class ExecSpace, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV,
          class W>
void backward(const ExecSpace& exec, const DO& dout, const Q& q, const K& k, const V& v, const O& out, const L& lse,
              const DQ& dq, const DK& dk, const DV& dv, const Params& params, const W& workspace) {
  detail::BackwardArgs a = detail::backward_args<ExecSpace>(dout, q, k, v, out, lse, dq, dk, dv);
  detail::attach_workspace<ExecSpace>(a, workspace, dout, "dout", q, "q", k, "k", v, "v", out, "out", lse, "lse", dq,
                                      "dq", dk, "dk", dv, "dv");
  detail::backward_dispatch(exec, a, params);
}

}  // namespace kfa
