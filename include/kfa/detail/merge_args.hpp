#pragma once
// Backend-neutral description of one merge of attention states (kfa::merge_attention_states):
// raw pointers and 64-bit element strides, no Kokkos, in the style of args.hpp, so that a native
// backend can take the same description later.
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::detail {

/// Merge of `parts` attention states over disjoint key sets into one, per (batch, seq, head) row:
///   m = max_p lse_p,  lse = m + log(sum_p exp(lse_p - m)),  o = sum_p exp(lse_p - lse) o_p
/// (math in float, double for f64). Parts with lse_p = -inf are skipped: their o_p is not read. A row
/// whose parts are all -inf gets o = 0 and lse = -inf.
struct MergeArgs {
  DType dtype = DType::f32;                 // element type of o_parts and o; lse is float (double for f64)
  std::int64_t parts = 0;                   // number of parts in o_parts / lse_parts (>= 1)
  std::int64_t batch = 0, seqlen = 0, heads = 0, head_dim = 0;
  Tensor4 o_parts;                          // part 0 of [parts, batch, seq, head, dim], unit stride in dim
  std::int64_t o_parts_stride_p = 0;        // elements from part p to part p + 1
  Tensor3 lse_parts;                        // part 0 of [parts, batch, head, seq]
  std::int64_t lse_parts_stride_p = 0;
  Tensor4 o;                                // output [batch, seq, head, dim], unit stride in dim
  Tensor3 lse;                              // output [batch, head, seq]
  /// When set, (o, lse) also hold one more input state, read before they are overwritten (the in-place
  /// two-part form: o_a, lse_a += o_b, lse_b). Otherwise o and lse are written only.
  bool accumulate = false;
};

}  // namespace kfa::detail
