#pragma once
// The feature policy (kfa/detail/feature_policy.hpp) as the HIP kernels apply it: the sequence a
// workgroup works on (packed varlen or one entry of a padded batch), the block-mask answers of the
// backward's query-tile walk (the policy's key walk, key_trip / key_tile_work / next_key_tile, serves
// the forward and dQ kernels directly), and the dropout keep factors in the MFMA score layout.
// Nothing here defines a feature: every answer comes from the policy functions; this file only
// adds the batch base where the policy expects the caller to, and names the kernels' uses.
// Written for clarity, not speed: the Philox blocks are evaluated per lane as the layout needs them.
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

/// Element bit of a partial block: (row, col) of sequence b, head h is computed.
KFA_HD bool block_bit(const detail::ScoreSpec& sc, std::int64_t b, std::int64_t h, std::int64_t row,
                      std::int64_t col) {
  return detail::block_allows(sc.blocks, block_row(sc, b, h, row), col);
}

/// Dropout factor Z of element (row, col) of sequence b (dropout coordinates: batch b + batch_base,
/// row and col within the sequence): keep_scale when kept, 0 when dropped. One Philox block per call.
KFA_HD float keep_factor(const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h, std::int64_t row,
                         std::int64_t col) {
  return detail::dropout_keep(d.key, d.threshold, b + d.batch_base, h, row, col) ? d.keep_scale : 0.0f;
}

/// The Philox blocks of one row over a 32-key sub-tile starting at col0 (a multiple of 16): the two
/// 16-column groups. A lane of the forward / dQ score layout holds one query and 16 keys of the
/// sub-tile, 8 in each group, so it evaluates these two blocks and reads its bytes from them.
struct SubtileBytes {
  detail::Philox4 group[2];
};

KFA_HD SubtileBytes subtile_bytes(const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h, std::int64_t row,
                                  std::int64_t col0) {
  SubtileBytes r;
  for (int g = 0; g < 2; ++g) r.group[g] = detail::dropout_words(d.key, b + d.batch_base, h, row, col0 + 16 * g);
  return r;
}

/// True when key `c` (0..31) of the sub-tile is kept.
KFA_HD bool kept(const detail::DropoutPolicy& d, const SubtileBytes& w, int c) {
  return detail::dropout_byte(w.group[c >> 4], c & 15) >= d.threshold;
}

}  // namespace kfa::hip::features
