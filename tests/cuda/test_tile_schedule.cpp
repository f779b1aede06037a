// Host checks of the native kernels' shared tile bookkeeping (backends/common) against the tile rules.
#include <catch2/catch_test_macros.hpp>

#include <set>
#include <tuple>

#include "common/tile_scheduler.hpp"

using kfa::detail::ScoreSpec;
using kfa::detail::Shape;

TEST_CASE("unmasked_key_tiles agrees with tile_fully_visible", "[cuda][schedule]") {
  for (std::int64_t sq : {1, 17, 64, 129, 300})
    for (std::int64_t sk : {1, 63, 64, 200, 517})
      for (std::int64_t wl : {-1, 0, 5, 70})
        for (std::int64_t wr : {-1, 0, 9, 100}) {
          Shape s;
          s.batch = 1, s.seqlen_q = sq, s.seqlen_k = sk, s.heads = 1, s.heads_kv = 1, s.head_dim = 64;
          ScoreSpec sc;
          sc.window_left = wl, sc.window_right = wr;
          for (std::int64_t rows : {16, 64, 128})
            for (std::int64_t r0 = 0; r0 < sq; r0 += rows) {
              const std::int64_t r1 = std::min(sq, r0 + rows);
              for (std::int64_t cols : {64, 128}) {
                const auto full = kfa::common::unmasked_key_tiles(r0, r1, cols, s, sc);
                for (std::int64_t t = 0; t * cols < sk + cols; ++t) {
                  const bool expect = kfa::detail::tile_fully_visible(r0, r1, t * cols, (t + 1) * cols, s, sc);
                  INFO("sq " << sq << " sk " << sk << " window " << wl << "," << wr << " rows " << r0 << ".." << r1
                             << " tile " << t << " x " << cols);
                  REQUIRE((t >= full.begin && t < full.end) == expect);
                }
              }
            }
        }
}

TEST_CASE("schedule_tile visits every (batch, head, query tile) once", "[cuda][schedule]") {
  Shape s;
  s.batch = 3, s.seqlen_q = 300, s.seqlen_k = 300, s.heads = 6, s.heads_kv = 2, s.head_dim = 64;
  for (bool causal : {false, true}) {
    ScoreSpec sc;
    if (causal) sc.window_right = 0;
    const std::int64_t nq = kfa::common::tile_count(s.seqlen_q, 128);
    std::set<std::tuple<std::int64_t, std::int64_t, std::int64_t>> seen;
    for (std::int64_t blk = 0; blk < s.batch * s.heads * nq; ++blk) {
      const auto t = kfa::common::schedule_tile(blk, nq, s, sc);
      REQUIRE(t.head_kv == t.head / 3);
      seen.insert({t.batch, t.head, t.q_tile});
      if (blk % nq == 0) REQUIRE(t.q_tile == (causal ? nq - 1 : 0));  // longest tile of a head first
    }
    REQUIRE(static_cast<std::int64_t>(seen.size()) == s.batch * s.heads * nq);
  }
}
