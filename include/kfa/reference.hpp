#pragma once
// Plain unfused ("standard") attention: materializes the [batch, heads, seqlen_q, seqlen_k] score
// matrix in the input precision, as a framework's unfused attention does. It is the baseline the
// benchmarks compare against, not a fast path.
#include "kfa/backward.hpp"
#include "kfa/forward.hpp"

namespace kfa::reference {
namespace detail {
template <class ExecSpace>
void attention_dispatch(const ExecSpace& exec, const kfa::detail::ForwardArgs& args, const Params& params);
template <class ExecSpace>
void attention_backward_dispatch(const ExecSpace& exec, const kfa::detail::BackwardArgs& args, const Params& params);
}  // namespace detail

/// Same arguments and results as kfa::forward; allocates batch*heads*seqlen_q*seqlen_k elements.
template <class ExecSpace, class Q, class K, class V, class O, class L>
void attention(const ExecSpace& exec, const Q& q, const K& k, const V& v, const O& o, const L& lse,
               const Params& params = {}) {
  detail::attention_dispatch(exec, kfa::detail::forward_args<ExecSpace>(q, k, v, o, lse), params);
}

/// Standard backward, as a framework's autograd runs it through unfused attention: the probabilities
/// P and the score gradients dS are materialized (two batch*heads*seqlen_q*seqlen_k arrays in the input
/// precision). Same arguments and results as kfa::backward; params.deterministic is implied.
template <class ExecSpace, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV>
void attention_backward(const ExecSpace& exec, const DO& dout, const Q& q, const K& k, const V& v, const O& out,
                        const L& lse, const DQ& dq, const DK& dk, const DV& dv, const Params& params = {}) {
  detail::attention_backward_dispatch(
      exec, kfa::detail::backward_args<ExecSpace>(dout, q, k, v, out, lse, dq, dk, dv), params);
}

}  // namespace kfa::reference
