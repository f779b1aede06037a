// The feature policy (kfa/detail/feature_policy.hpp) against the plain definitions it serves: the
// tile walk against tile_fully_visible and the element rules, the block-tile kinds against the
// block mask's element answers, the fragment view of the dropout mask against dropout_keep.
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <random>

#include "kfa/block_mask.hpp"
#include "kfa/detail/feature_policy.hpp"

using kfa::detail::ScoreSpec;
using kfa::detail::Shape;

namespace {
Shape shape_of(std::int64_t sq, std::int64_t sk) {
  Shape s;
  s.batch = 1, s.seqlen_q = sq, s.seqlen_k = sk, s.heads = 1, s.heads_kv = 1, s.head_dim = 64;
  return s;
}
}  // namespace

TEST_CASE("key_trip: visited tiles cover the visible keys, unmasked tiles are the fully visible ones",
          "[policy]") {
  for (std::int64_t sq : {1, 17, 64, 129, 300})
    for (std::int64_t sk : {1, 63, 64, 200, 517})
      for (std::int64_t wl : {-1, 0, 5, 70})
        for (std::int64_t wr : {-1, 0, 9, 100}) {
          const Shape s = shape_of(sq, sk);
          ScoreSpec sc;
          sc.window_left = wl, sc.window_right = wr;
          for (std::int64_t rows : {16, 64, 128})
            for (std::int64_t r0 = 0; r0 < sq; r0 += rows) {
              const std::int64_t r1 = std::min(sq, r0 + rows);
              for (std::int64_t cols : {64, 80, 128}) {
                const auto trip = kfa::detail::key_trip(r0, r1, cols, s, sc);
                for (std::int64_t t = 0; t * cols < sk + cols; ++t) {
                  INFO("sq " << sq << " sk " << sk << " window " << wl << "," << wr << " rows " << r0 << ".." << r1
                             << " tile " << t << " x " << cols);
                  const bool full = kfa::detail::tile_fully_visible(r0, r1, t * cols, (t + 1) * cols, s, sc);
                  REQUIRE((t >= trip.unmasked_begin && t < trip.unmasked_end) == full);
                  bool any = false;
                  for (std::int64_t i = r0; i < r1; ++i)
                    for (std::int64_t j = t * cols; j < std::min(sk, (t + 1) * cols); ++j)
                      any = any || kfa::detail::key_visible(i, j, s, sc);
                  if (any) REQUIRE((t >= trip.begin && t < trip.end));
                }
              }
            }
        }
}

TEST_CASE("query_trip: every query tile that sees a key of the range is visited", "[policy]") {
  for (std::int64_t sq : {1, 100, 300})
    for (std::int64_t sk : {1, 64, 300})
      for (std::int64_t wl : {-1, 0, 40})
        for (std::int64_t wr : {-1, 0, 30}) {
          const Shape s = shape_of(sq, sk);
          ScoreSpec sc;
          sc.window_left = wl, sc.window_right = wr;
          for (std::int64_t c0 = 0; c0 < sk; c0 += 128) {
            const std::int64_t c1 = std::min(sk, c0 + 128);
            const auto trip = kfa::detail::query_trip(c0, c1, 64, s, sc);
            for (std::int64_t qt = 0; qt * 64 < sq; ++qt) {
              bool any = false;
              for (std::int64_t i = qt * 64; i < std::min(sq, qt * 64 + 64); ++i)
                for (std::int64_t j = c0; j < c1; ++j) any = any || kfa::detail::key_visible(i, j, s, sc);
              if (any) REQUIRE((qt >= trip.begin && qt < trip.end));
            }
          }
        }
}

TEST_CASE("block_tile_kind and block_allows agree with the block mask's element answers", "[policy]") {
  std::mt19937_64 gen(7);
  for (std::int64_t bq : {64, 128})
    for (std::int64_t bk : {64, 128}) {
      kfa::BlockMaskShape ms;
      ms.seqlen_q = 300, ms.seqlen_k = 420, ms.block_q = bq, ms.block_k = bk, ms.heads = 2;
      const auto mask = kfa::BlockMask::from_element_mask(ms, [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
        const std::int64_t kb = j / bk, qb = i / bq;
        if ((qb + kb + h) % 3 == 0) return false;          // skipped blocks
        if ((qb + kb + h) % 3 == 1) return true;           // full blocks
        return (i * 7 + j * 3 + h) % 5 != 0;               // partial blocks
      });
      const auto spec = mask.host_spec();
      REQUIRE(spec.block_state != nullptr);
      const Shape s = shape_of(300, 420);
      for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t rows : {64, 128})
          for (std::int64_t cols : {64, 80, 128})
            for (std::int64_t r0 = 0; r0 < 300; r0 += rows)
              for (std::int64_t c0 = 0; c0 < 420; c0 += cols) {
                const std::int64_t r1 = std::min<std::int64_t>(300, r0 + rows), c1 = std::min<std::int64_t>(420, c0 + cols);
                std::int64_t in = 0, total = 0;
                for (std::int64_t i = r0; i < r1; ++i) {
                  const auto br = kfa::detail::block_row(spec, 0, h, i);
                  for (std::int64_t j = c0; j < c1; ++j) {
                    const bool a = kfa::detail::block_mask_allows(spec, 0, h, i, j);
                    REQUIRE(kfa::detail::block_allows(spec, br, j) == a);
                    in += a;
                    ++total;
                  }
                }
                const auto kind = kfa::detail::block_tile_kind(spec, 0, h, r0, r1, c0, c1);
                INFO("block " << bq << "x" << bk << " tile " << r0 << "," << c0 << " " << rows << "x" << cols);
                if (in == 0) REQUIRE(kind != kfa::detail::BlockKind::full);
                if (in == total) REQUIRE(kind != kfa::detail::BlockKind::skipped);
                if (in > 0) REQUIRE(kind != kfa::detail::BlockKind::skipped);
                if (in < total) REQUIRE(kind != kfa::detail::BlockKind::full);
              }
      // next_key_tile steps over exactly the skipped tiles
      ScoreSpec sc;
      sc.blocks = spec;
      const auto trip = kfa::detail::key_trip(0, 64, 64, s, sc);
      std::int64_t visited = 0;
      for (std::int64_t t = kfa::detail::next_key_tile(trip, 0, 64, 0, 64, 0, 1, s, sc); t < trip.end;
           t = kfa::detail::next_key_tile(trip, t + 1, 64, 0, 64, 0, 1, s, sc)) {
        REQUIRE(kfa::detail::block_tile_kind(spec, 0, 1, 0, 64, t * 64, std::min<std::int64_t>(420, t * 64 + 64)) !=
                kfa::detail::BlockKind::skipped);
        ++visited;
      }
      REQUIRE(visited == kfa::detail::visited_key_tiles(trip, 64, 0, 64, 0, 1, s, sc));
      REQUIRE(visited < trip.end - trip.begin);
    }
}

TEST_CASE("dropout: a fragment's word gives the keep flags of its four columns", "[policy][dropout]") {
  ScoreSpec sc;
  sc.dropout_p = 0.3f;
  sc.seed = 42;
  sc.offset = 7;
  const auto d = kfa::detail::make_dropout(sc);
  REQUIRE(d.on);
  REQUIRE(d.threshold == 77u);  // round(0.3 * 256)
  REQUIRE(d.keep_scale == static_cast<float>(1.0 / (1.0 - 77.0 / 256.0)));
  for (std::int64_t row : {0, 5, 1000})
    for (std::int64_t group = 0; group < 8; ++group) {
      const auto w = kfa::detail::dropout_words(d.key, 2, 3, row, group * 16);
      for (int t = 0; t < 4; ++t) {
        const std::uint32_t bits = kfa::detail::dropout_keep_bits(w.w[t], d.threshold);
        const int cols[4] = {2 * t, 2 * t + 1, 2 * t + 8, 2 * t + 9};
        for (int k = 0; k < 4; ++k)
          REQUIRE(((bits >> k) & 1u) ==
                  (kfa::detail::dropout_keep(d.key, d.threshold, 2, 3, row, group * 16 + cols[k]) ? 1u : 0u));
      }
    }
  REQUIRE(kfa::detail::dropout_threshold(0.0f) == 0u);
  REQUIRE(kfa::detail::dropout_threshold(0.001f) == 0u);
  REQUIRE(kfa::detail::dropout_threshold(0.999f) == 255u);
}
