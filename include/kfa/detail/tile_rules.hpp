#pragma once
// Which keys a query sees, and which (Q tile, K tile) pairs can be skipped or need element masks.
// One definition for every implementation (portable, CUDA, HIP), forward and backward.
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/macros.hpp"

namespace kfa::detail {

struct VisibleRange {
  std::int64_t begin, end;  // keys [begin, end)
};

/// Window of keys visible from query row i (may be empty: begin >= end).
KFA_HD VisibleRange visible_keys(std::int64_t i, const Shape& s, const ScoreSpec& sc) {
  const std::int64_t diag = i + s.seqlen_k - s.seqlen_q;
  std::int64_t b = sc.window_left < 0 ? 0 : diag - sc.window_left;
  std::int64_t e = sc.window_right < 0 ? s.seqlen_k : diag + sc.window_right + 1;
  if (b < 0) b = 0;
  if (e > s.seqlen_k) e = s.seqlen_k;
  return {b, e};
}

KFA_HD bool key_visible(std::int64_t i, std::int64_t j, const Shape& s, const ScoreSpec& sc) {
  const VisibleRange r = visible_keys(i, s, sc);
  return j >= r.begin && j < r.end;
}

/// Keys visible from any query row in [row_begin, row_end): the union of the rows' windows,
/// which is an interval because both window edges are monotone in the row.
KFA_HD VisibleRange visible_keys(std::int64_t row_begin, std::int64_t row_end, const Shape& s,
                                 const ScoreSpec& sc) {
  const VisibleRange first = visible_keys(row_begin, s, sc);
  const VisibleRange last = visible_keys(row_end - 1, s, sc);
  return {first.begin, last.end};
}

/// Rows that see any key of [col_begin, col_end) (the backward walks K tiles and needs this).
KFA_HD VisibleRange visible_queries(std::int64_t col_begin, std::int64_t col_end, const Shape& s,
                                    const ScoreSpec& sc) {
  const std::int64_t shift = s.seqlen_k - s.seqlen_q;  // row i's diagonal is key i + shift
  // row i sees col_end-1 when i + shift - wl <= col_end-1, i.e. i <= col_end-1 - shift + wl
  std::int64_t e = sc.window_left < 0 ? s.seqlen_q : col_end - 1 - shift + sc.window_left + 1;
  // row i sees col_begin when col_begin <= i + shift + wr, i.e. i >= col_begin - shift - wr
  std::int64_t b = sc.window_right < 0 ? 0 : col_begin - shift - sc.window_right;
  if (b < 0) b = 0;
  if (e > s.seqlen_q) e = s.seqlen_q;
  return {b, e};
}

/// True when every (row, col) of the tile is visible, so no element mask is needed.
KFA_HD bool tile_fully_visible(std::int64_t row_begin, std::int64_t row_end, std::int64_t col_begin,
                               std::int64_t col_end, const Shape& s, const ScoreSpec& sc) {
  if (col_end > s.seqlen_k) return false;
  // the tightest constraints come from the first row (right edge) and the last row (left edge)
  const VisibleRange first = visible_keys(row_begin, s, sc);
  const VisibleRange last = visible_keys(row_end - 1, s, sc);
  return last.begin <= col_begin && first.end >= col_end;
}

/// ALiBi bias for (i, j), matching FlashAttention: -slope * |i + seqlen_k - seqlen_q - j|, computed
/// in the caller's math type (double paths must not round the bias to float).
template <class Acc = float>
KFA_HD Acc alibi_bias(float slope, std::int64_t i, std::int64_t j, const Shape& s) {
  std::int64_t d = i + s.seqlen_k - s.seqlen_q - j;
  if (d < 0) d = -d;
  return -static_cast<Acc>(slope) * static_cast<Acc>(d);
}

}  // namespace kfa::detail
