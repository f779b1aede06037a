// Host checks of the native kernels' tile scheduler (backends/common).
#include <catch2/catch_test_macros.hpp>

#include <set>
#include <tuple>

#include "common/tile_scheduler.hpp"

using kfa::detail::ScoreSpec;
using kfa::detail::Shape;

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
