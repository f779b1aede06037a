#pragma once
// The feature policy (kfa/detail/feature_policy.hpp) as the HIP kernels apply it: the sequence a
// workgroup works on (packed varlen or one entry of a padded batch), the block-mask answers of the
// backward's query-tile walk (the policy's key walk, key_trip / key_tile_work / next_key_tile, serves
// the forward and dQ kernels directly), and the dropout keep factors in the MFMA score layout.
// Nothing here defines a feature: every answer comes from the policy functions; this file only
// adds the batch base where the policy expects the caller to, and names the kernels' uses.
// Written for clarity, not speed: the Philox blocks are evaluated per lane as the layout needs them.
// Element answers (window / block bits, dropout) of a lane's 16 score registers are gathered as a
// bit mask by lane_bits in a loop that is not unrolled, and the kernels' unrolled register loops
// test one bit per score: unrolling the tests themselves (block-state loads, Philox rounds) 16-64
// times per instance would multiply the kernels' code and compile time.
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/macros.hpp"
#include "kfa/detail/philox.hpp"

namespace kfa::hip::features {

/// The sequence of batch index b: where it starts in the packed tensors (0 for a padded batch) and
/// the shape its masks align to (its own lengths).
struct Sequence {
  detail::SequenceBounds bounds;
  detail::Shape shape;
};

KFA_HD Sequence sequence(const detail::Shape& s, const detail::Varlen& v, std::int64_t b) {
  const detail::SequenceBounds sb = detail::sequence_bounds(s, v, b);
  return {sb, detail::sequence_shape(s, sb)};
}

/// Offset of row `row` (position in the tensor's sequence axis, i.e. begin + r) of (b, h).
KFA_HD std::int64_t offset(const detail::Tensor4& t, std::int64_t b, std::int64_t row, std::int64_t h) {
  return b * t.stride_b + row * t.stride_s + h * t.stride_h;
}
KFA_HD std::int64_t offset(const detail::Tensor3& t, std::int64_t b, std::int64_t row, std::int64_t h) {
  return b * t.stride_b + row * t.stride_s + h * t.stride_h;
}

/// Kind of the tile rows [row0, row_end) x keys [col0, col_end) of sequence b, query head h under the
/// block mask (mask row batch = b + batch_base). Used by the dK/dV kernel's walk over query tiles.
KFA_HD detail::BlockKind tile_kind(const detail::ScoreSpec& sc, std::int64_t b, std::int64_t h, std::int64_t row0,
                                   std::int64_t row_end, std::int64_t col0, std::int64_t col_end) {
  return detail::block_tile_kind(sc.blocks, b + sc.batch_base, h, row0, row_end, col0, col_end);
}

/// The block mask's row of query `row` of sequence b, head h (for block_allows along the row).
KFA_HD detail::BlockRow block_row(const detail::ScoreSpec& sc, std::int64_t b, std::int64_t h, std::int64_t row) {
  return detail::block_row(sc.blocks, b + sc.batch_base, h, row);
}


/// Bit r (r < N) set when pred(r): the element answers of a lane's N score registers.
template <int N, class Pred>
KFA_HD std::uint32_t lane_bits(Pred&& pred) {
  static_assert(N <= 32, "one 32-bit mask");
  std::uint32_t m = 0;
#pragma unroll 1
  for (int r = 0; r < N; ++r) m |= (pred(r) ? 1u : 0u) << r;
  return m;
}

/// True when dropout keeps element (row, col) of sequence b (dropout coordinates: batch b +
/// batch_base, row and col within the sequence). One Philox block per call.
KFA_HD bool kept(const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h, std::int64_t row, std::int64_t col) {
  return detail::dropout_keep(d.key, d.threshold, b + d.batch_base, h, row, col);
}

/// Keep bits of one row over a 32-key sub-tile starting at col0 (a multiple of 16): bit c for key
/// col0 + c. Two Philox blocks (the sub-tile's 16-column groups): a lane of the forward / dQ score
/// layout holds one query and 16 keys of the sub-tile, 8 in each group.
KFA_HD std::uint32_t subtile_keep(const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h, std::int64_t row,
                                  std::int64_t col0) {
  std::uint32_t m = 0;
  for (int g = 0; g < 2; ++g) {
    const detail::Philox4 w = detail::dropout_words(d.key, b + d.batch_base, h, row, col0 + 16 * g);
    for (int c = 0; c < 16; ++c) m |= (detail::dropout_byte(w, c) >= d.threshold ? 1u : 0u) << (16 * g + c);
  }
  return m;
}

}  // namespace kfa::hip::features
