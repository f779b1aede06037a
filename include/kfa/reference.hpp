#pragma once
// Plain unfused ("standard") attention: materializes the [batch, heads, seqlen_q, seqlen_k] score
// matrix in the input precision, as a framework's unfused attention does. It is the baseline the
// benchmarks compare against, not a fast path.
#include "kfa/forward.hpp"

namespace kfa::reference {
namespace detail {
template <class ExecSpace>
void attention_dispatch(const ExecSpace& exec, const kfa::detail::ForwardArgs& args, const Params& params);
}  // namespace detail

/// Same arguments and results as kfa::forward; allocates batch*heads*seqlen_q*seqlen_k elements.
template <class ExecSpace, class Q, class K, class V, class O, class L>
void attention(const ExecSpace& exec, const Q& q, const K& k, const V& v, const O& o, const L& lse,
               const Params& params = {}) {
  detail::attention_dispatch(exec, kfa::detail::forward_args<ExecSpace>(q, k, v, o, lse), params);
}

}  // namespace kfa::reference
