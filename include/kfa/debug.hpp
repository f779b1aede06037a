#pragma once
// Debugging aids that MATERIALIZE the [batch, heads, seqlen_q, seqlen_k] attention matrix.
// For small problems and tests only; the attention entry points never allocate like this.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/view_args.hpp"
#include "kfa/forward.hpp"
#include "kfa/params.hpp"

namespace kfa {
namespace detail {

/// A [batch, heads, seqlen_q, seqlen_k] output of the debug path.
struct Matrix4 {
  void* data = nullptr;
  std::int64_t stride[4] = {0, 0, 0, 0};
};

template <class View>
Matrix4 matrix4(const View& v) {
  Matrix4 m;
  m.data = v.data();
  for (int r = 0; r < 4; ++r) m.stride[r] = static_cast<std::int64_t>(v.stride(r));
  return m;
}

template <class ExecSpace>
void probabilities_dispatch(const ExecSpace& exec, const ForwardArgs& args, const Params& params, Matrix4 probs,
                            Matrix4 keep);

}  // namespace detail

namespace debug {

/// MATERIALIZING. The attention probabilities of a kfa::forward call with the same arguments:
///   probs [batch, heads, seqlen_q, seqlen_k] of lse_type<T> (written): softmax(scores) with every mask
///         applied (0 where masked), before dropout;
///   keep  [batch, heads, seqlen_q, seqlen_k] of std::uint8_t (written unless it is an empty View): the
///         dropout mask, 1 = kept (scaled by 1 / (1 - p_eff) in the forward, p_eff = round(256 dropout_p) / 256), 0 = dropped; all 1
///         when dropout_p = 0. It is the RNG's answer for every element, masked or not.
/// The forward's O equals sum_j probs * keep / (1 - p_eff) * V up to rounding.
template <class ExecSpace, class Q, class K, class V, class P, class M>
void attention_probabilities(const ExecSpace& exec, const Q& q, const K& k, const V& v, const P& probs,
                             const M& keep, const Params& params = {}) {
  using T = typename Q::non_const_value_type;
  using namespace kfa::detail;
  const Shape s = attention_shape<ExecSpace>(q, k, v);
  static_assert(std::is_same_v<typename P::value_type, lse_type<T>>, "kfa: probs must hold writable lse_type<T>");
  static_assert(std::is_same_v<typename M::value_type, std::uint8_t>, "kfa: keep must hold writable std::uint8_t");
  static_assert(P::rank() == 4 && M::rank() == 4, "kfa: probs and keep must have rank 4");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename P::memory_space>::accessible &&
                    Kokkos::SpaceAccessibility<ExecSpace, typename M::memory_space>::accessible,
                "kfa: probs and keep must be accessible from the execution space");
  check_extents(probs, "probs", {s.batch, s.heads, s.seqlen_q, s.seqlen_k}, "[batch, heads, seqlen_q, seqlen_k]");
  if (keep.size() > 0)
    check_extents(keep, "keep", {s.batch, s.heads, s.seqlen_q, s.seqlen_k}, "[batch, heads, seqlen_q, seqlen_k]");
  ForwardArgs a;
  a.dtype = dtype_of<T>();
  a.shape = s;
  a.q = tensor4(q);
  a.k = tensor4(k);
  a.v = tensor4(v);
  probabilities_dispatch(exec, a, params, matrix4(probs), keep.size() > 0 ? matrix4(keep) : Matrix4{});
}

}  // namespace debug
}  // namespace kfa
