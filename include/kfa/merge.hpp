#pragma once
// kfa::merge_attention_states: combines the outputs and log-sum-exps of attention over disjoint key
// sets into the exact attention over their union (split-KV decode, ring attention, cascade inference).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>
#include <type_traits>

#include "kfa/detail/merge_args.hpp"
#include "kfa/detail/view_args.hpp"

namespace kfa {
namespace detail {
/// Defined in the library for each enabled Kokkos execution space; runs the merge kernel.
template <class ExecSpace>
void merge_dispatch(const ExecSpace& exec, const MergeArgs& args);

inline void check_merge_extents_nonempty(std::int64_t parts, std::int64_t b, std::int64_t s, std::int64_t h,
                                         std::int64_t d, const char* name, const std::string& extents,
                                         const char* dims) {
  if (parts == 0 || b == 0 || s == 0 || h == 0 || d == 0)
    throw Error(std::string(name) + " has an empty extent " + extents + "; expected " + dims + " all > 0");
}

/// Checks the multi-part form's Views and describes them for the launchers (kfa::Error when invalid).
template <class ExecSpace, class OP, class LP, class O, class L>
MergeArgs merge_args(const OP& o_parts, const LP& lse_parts, const O& o, const L& lse) {
  using T = typename OP::non_const_value_type;
  check_view<ExecSpace>(o_parts, "o_parts", 5);
  check_view<ExecSpace>(lse_parts, "lse_parts", 4);
  check_view<ExecSpace>(o, "o", 4);
  check_view<ExecSpace>(lse, "lse", 3);
  static_assert(std::is_same_v<typename LP::non_const_value_type, lse_type<T>>,
                "kfa: lse_parts must hold kfa::lse_type<T> of o_parts' element type T");
  static_assert(std::is_same_v<typename O::value_type, T>, "kfa: o must be a writable View of o_parts' element type");
  static_assert(std::is_same_v<typename L::value_type, lse_type<T>>,
                "kfa: lse must be a writable View of kfa::lse_type<T> (float, or double for double inputs)");
  MergeArgs a;
  a.dtype = dtype_of<T>();
  a.parts = o_parts.extent(0);
  a.batch = o_parts.extent(1);
  a.seqlen = o_parts.extent(2);
  a.heads = o_parts.extent(3);
  a.head_dim = o_parts.extent(4);
  check_merge_extents_nonempty(a.parts, a.batch, a.seqlen, a.heads, a.head_dim, "o_parts", extents_str(o_parts),
                               "[parts, batch, seqlen, heads, head_dim]");
  check_extents(lse_parts, "lse_parts", {a.parts, a.batch, a.heads, a.seqlen}, "[parts, batch, heads, seqlen]");
  check_extents(o, "o", {a.batch, a.seqlen, a.heads, a.head_dim}, "[batch, seqlen, heads, head_dim]");
  check_extents(lse, "lse", {a.batch, a.heads, a.seqlen}, "[batch, heads, seqlen]");
  check_no_overlap(o, "o", o_parts, "o_parts");
  check_no_overlap(o, "o", lse_parts, "lse_parts");
  check_no_overlap(o, "o", lse, "lse");
  check_no_overlap(lse, "lse", o_parts, "o_parts");
  check_no_overlap(lse, "lse", lse_parts, "lse_parts");
  a.o_parts = {const_cast<void*>(static_cast<const void*>(o_parts.data())), static_cast<std::int64_t>(o_parts.stride(1)),
               static_cast<std::int64_t>(o_parts.stride(2)), static_cast<std::int64_t>(o_parts.stride(3))};
  a.o_parts_stride_p = static_cast<std::int64_t>(o_parts.stride(0));
  a.lse_parts = {const_cast<void*>(static_cast<const void*>(lse_parts.data())),
                 static_cast<std::int64_t>(lse_parts.stride(1)), static_cast<std::int64_t>(lse_parts.stride(2)),
                 static_cast<std::int64_t>(lse_parts.stride(3))};
  a.lse_parts_stride_p = static_cast<std::int64_t>(lse_parts.stride(0));
  a.o = tensor4(o);
  a.lse = tensor3(lse);
  a.accumulate = false;
  return a;
}

/// Checks the two-part in-place form's Views: (o_a, lse_a) is read and overwritten, (o_b, lse_b) read.
template <class ExecSpace, class OA, class LA, class OB, class LB>
MergeArgs merge_inplace_args(const OA& o_a, const LA& lse_a, const OB& o_b, const LB& lse_b) {
  using T = typename OA::non_const_value_type;
  check_view<ExecSpace>(o_a, "o_a", 4);
  if (LA::rank() == 4)
    throw Error("lse_a must have rank 3 ([batch, heads, seqlen]), got rank 4: the two-part form is "
                "merge_attention_states(exec, o_a, lse_a, o_b, lse_b); the multi-part form takes o_parts of rank 5");
  check_view<ExecSpace>(lse_a, "lse_a", 3);
  check_view<ExecSpace>(o_b, "o_b", 4);
  check_view<ExecSpace>(lse_b, "lse_b", 3);
  static_assert(std::is_same_v<typename OA::value_type, T>, "kfa: o_a must be writable (it is updated in place)");
  static_assert(std::is_same_v<typename LA::value_type, lse_type<T>>,
                "kfa: lse_a must be a writable View of kfa::lse_type<T> (float, or double for double inputs)");
  static_assert(std::is_same_v<typename OB::non_const_value_type, T>, "kfa: o_b must hold o_a's element type");
  static_assert(std::is_same_v<typename LB::non_const_value_type, lse_type<T>>,
                "kfa: lse_b must hold kfa::lse_type<T> of o_a's element type T");
  MergeArgs a;
  a.dtype = dtype_of<T>();
  a.parts = 1;
  a.batch = o_a.extent(0);
  a.seqlen = o_a.extent(1);
  a.heads = o_a.extent(2);
  a.head_dim = o_a.extent(3);
  check_merge_extents_nonempty(1, a.batch, a.seqlen, a.heads, a.head_dim, "o_a", extents_str(o_a),
                               "[batch, seqlen, heads, head_dim]");
  check_extents(lse_a, "lse_a", {a.batch, a.heads, a.seqlen}, "[batch, heads, seqlen]");
  check_extents(o_b, "o_b", {a.batch, a.seqlen, a.heads, a.head_dim}, "[batch, seqlen, heads, head_dim]");
  check_extents(lse_b, "lse_b", {a.batch, a.heads, a.seqlen}, "[batch, heads, seqlen]");
  check_no_overlap(o_a, "o_a", lse_a, "lse_a");
  check_no_overlap(o_a, "o_a", o_b, "o_b");
  check_no_overlap(o_a, "o_a", lse_b, "lse_b");
  check_no_overlap(lse_a, "lse_a", o_b, "o_b");
  check_no_overlap(lse_a, "lse_a", lse_b, "lse_b");
  a.o_parts = tensor4(o_b);
  a.o_parts_stride_p = 0;
  a.lse_parts = tensor3(lse_b);
  a.lse_parts_stride_p = 0;
  a.o = tensor4(o_a);
  a.lse = tensor3(lse_a);
  a.accumulate = true;
  return a;
}
}  // namespace detail

/// Merges attention states computed over disjoint key sets into the exact attention over their union.
///
/// Multi-part form (the first View has rank 5):
///   merge_attention_states(exec, o_parts, lse_parts, o, lse)
///     o_parts   [parts, batch, seqlen, heads, head_dim]   part p's output, as kfa::forward writes it
///     lse_parts [parts, batch, heads, seqlen]             part p's LSE (natural log), lse_type<T>
///     o         [batch, seqlen, heads, head_dim] (written), lse [batch, heads, seqlen] (written)
///   lse = log(sum_p exp(lse_p)), o = sum_p exp(lse_p - lse) o_p. No output may overlap an input.
///
/// Two-part in-place form (the first View has rank 4), for ring attention:
///   merge_attention_states(exec, o_a, lse_a, o_b, lse_b)
///     (o_a [batch, seqlen, heads, head_dim], lse_a [batch, heads, seqlen]) <- merge of a and b.
///   o_a and lse_a are read and overwritten element by element; o_b and lse_b may overlap neither.
///
/// Parts whose LSE is -inf contribute nothing and their o is not read (an accumulator may start as
/// lse_a = -inf with o_a uninitialized); a row whose parts are all -inf gets o = 0 and lse = -inf.
/// Math in float (double for double) with the max subtracted, so large LSEs do not overflow.
/// Element types and layouts as kfa::forward (unit stride in the last dimension).
/// Asynchronous on `exec`. Throws kfa::Error on invalid input, before anything is written.
template <class ExecSpace, class A, class B, class C, class D>
void merge_attention_states(const ExecSpace& exec, const A& a, const B& b, const C& c, const D& d) {
  static_assert(Kokkos::is_view_v<A> && Kokkos::is_view_v<B> && Kokkos::is_view_v<C> && Kokkos::is_view_v<D>,
                "kfa: arguments must be Kokkos::View");
  if constexpr (A::rank() == 5) {
    detail::merge_dispatch(exec, detail::merge_args<ExecSpace>(a, b, c, d));
  } else if constexpr (A::rank() == 4) {
    detail::merge_dispatch(exec, detail::merge_inplace_args<ExecSpace>(a, b, c, d));
  } else {
    throw Error("merge_attention_states: o_parts must have rank 5 ([parts, batch, seqlen, heads, head_dim]), "
                "or o_a rank 4 ([batch, seqlen, heads, head_dim]) for the two-part in-place form; got rank " +
                std::to_string(A::rank()));
  }
}

}  // namespace kfa
