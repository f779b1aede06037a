#pragma once
// Which (batch, head, query tile) a thread block works on. Consecutive blocks share a head, so the
// K/V of that head stays hot in L2 while its query tiles run; within a head the tiles that see the
// most keys start first (the last tiles under a causal mask), so the short ones fill the tail.
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/macros.hpp"
#include "kfa/detail/tile_rules.hpp"

namespace kfa::common {

struct TileCoord {
  std::int64_t batch, head, head_kv, q_tile;
};

/// Number of query tiles of `rows` rows.
KFA_HD std::int64_t tile_count(std::int64_t seqlen, std::int64_t rows) { return (seqlen + rows - 1) / rows; }

/// True when later query tiles see more keys (a bounded right window, e.g. causal), so they go first.
KFA_HD bool later_tiles_longer(const detail::ScoreSpec& sc) { return sc.window_right >= 0; }

/// Block `block` of a grid of batch * heads * n_qtiles blocks -> its tile, head-major, longest first.
KFA_HD TileCoord schedule_tile(std::int64_t block, std::int64_t n_qtiles, const detail::Shape& s,
                               const detail::ScoreSpec& sc) {
  const std::int64_t within = block % n_qtiles;
  const std::int64_t bh = block / n_qtiles;
  TileCoord t;
  t.q_tile = later_tiles_longer(sc) ? n_qtiles - 1 - within : within;
  t.batch = bh / s.heads;
  t.head = bh % s.heads;
  t.head_kv = t.head / (s.heads / s.heads_kv);  // GQA/MQA: groups of consecutive query heads share one K/V head
  return t;
}

/// Key tiles [begin, end) of `cols` keys that any row of [row_begin, row_end) can see; empty when none.
struct KeyTiles {
  std::int64_t begin, end;
};

KFA_HD KeyTiles key_tiles(std::int64_t row_begin, std::int64_t row_end, std::int64_t cols, const detail::Shape& s,
                          const detail::ScoreSpec& sc) {
  const detail::VisibleRange keys = detail::visible_keys(row_begin, row_end, s, sc);
  if (keys.begin >= keys.end) return {0, 0};
  return {keys.begin / cols, (keys.end + cols - 1) / cols};
}

/// Key tiles of `cols` keys in which every (row, key) of rows [row_begin, row_end) is visible, so no
/// element mask is needed: tile t is in [begin, end) exactly when
/// detail::tile_fully_visible(row_begin, row_end, t * cols, (t + 1) * cols) holds (the first row
/// bounds the right edge, the last row the left edge; both edges are monotone in the row).
KFA_HD KeyTiles unmasked_key_tiles(std::int64_t row_begin, std::int64_t row_end, std::int64_t cols,
                                   const detail::Shape& s, const detail::ScoreSpec& sc) {
  const detail::VisibleRange first = detail::visible_keys(row_begin, s, sc);
  const detail::VisibleRange last = detail::visible_keys(row_end - 1, s, sc);
  const std::int64_t begin = last.begin <= 0 ? 0 : (last.begin + cols - 1) / cols;
  const std::int64_t end = first.end <= 0 ? 0 : first.end / cols;  // first.end <= seqlen_k
  return {begin, end > begin ? end : begin};
}

}  // namespace kfa::common
