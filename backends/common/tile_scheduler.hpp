#pragma once
// Which (batch, head, query tile) a thread block works on. Consecutive blocks share a head, so the
// K/V of that head stays hot in L2 while its query tiles run; within a head the tiles that see the
// most keys start first (the last tiles under a causal mask), so the short ones fill the tail.
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/macros.hpp"

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

}  // namespace kfa::common
