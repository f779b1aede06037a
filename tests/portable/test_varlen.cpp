// Packed variable-length sequences against each sequence computed alone in fp64.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <numeric>

#include "spaces.hpp"
#include "varlen_harness.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;

TEMPLATE_LIST_TEST_CASE("varlen: random lengths with empty sequences, GQA, causal", "[varlen]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 1}, {6, 2}}));
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  // an empty query sequence, an empty key sequence, one longer than a tile, odd lengths
  Packed<S, T> pk({37, 0, 130, 5, 64, 1}, {41, 17, 129, 0, 70, 1}, heads, heads_kv, 32);
  check_varlen(pk, opt);
}

TEMPLATE_LIST_TEST_CASE("varlen: random lengths, window, softcap, ALiBi", "[varlen]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  std::uniform_int_distribution<std::int64_t> len(0, 90);
  std::vector<std::int64_t> lq, lk;
  for (int b = 0; b < 5; ++b) {
    lq.push_back(len(rng()));
    lk.push_back(len(rng()));
  }
  lq[0] = 90;  // at least one non-empty pair
  lk[0] = 77;
  RefOptions opt;
  opt.window_left = 25;
  opt.window_right = 3;
  opt.softcap = 6.0;
  opt.alibi = {0.2f, 0.05f};
  Packed<S, T> pk(lq, lk, 2, 1, 48);
  check_varlen(pk, opt);
}

TEMPLATE_LIST_TEST_CASE("varlen: dropout keyed by sequence index", "[varlen][dropout]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  FeatureOptions x;
  x.dropout_p = 0.35;
  x.seed = rng()();
  x.offset = 11;
  Packed<S, T> pk({50, 3, 0, 81}, {66, 3, 9, 81}, 2, 2, 32);
  check_varlen(pk, opt, x);
}

TEMPLATE_LIST_TEST_CASE("varlen: with a per-sequence block mask built for the maximal lengths", "[varlen][block_sparse]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  Packed<S, T> pk({100, 33, 0, 64}, {80, 96, 5, 17}, 2, 1, 32);
  std::bernoulli_distribution on(0.5);
  std::vector<std::uint8_t> blocks(4 * 2 * 4 * 3);  // [4 sequences][2 heads][100/32 -> 4][96/32 -> 3]
  for (auto& x : blocks) x = on(rng());
  const kfa::BlockMask m = kfa::BlockMask::from_blocks({100, 96, 32, 32, 4, 2}, blocks);
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  check_varlen(pk, opt, {}, &m);
}

TEST_CASE("varlen: equal lengths give the padded batch's result bit for bit", "[varlen]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  Packed<S, float> pk({70, 70, 70}, {45, 45, 45}, 4, 2, 32);
  kfa::Params params;
  params.causal = true;
  kfa::forward_varlen(S(), pk.q, pk.k, pk.v, pk.o, pk.lse, pk.dcu_q, pk.dcu_k, 70, 45, params);
  S().fence();
  std::vector<double> o, lse;
  pk.read(o, lse);
  // the same buffers seen as [3, 70, 4, 32] / [3, 45, 2, 32]
  Kokkos::View<float****, S::memory_space> q(pk.data.qb.data(), 3, 70, 4, 32), k(pk.data.kb.data(), 3, 45, 2, 32),
      v(pk.data.vb.data(), 3, 45, 2, 32);
  Kokkos::View<float****, S::memory_space> od("o", 3, 70, 4, 32);
  Kokkos::View<float***, S::memory_space> ld("lse", 3, 4, 70);
  kfa::forward(S(), q, k, v, od, ld, params);
  S().fence();
  for (std::size_t e = 0; e < o.size(); ++e) REQUIRE(o[e] == od.data()[e]);
  for (std::int64_t b = 0; b < 3; ++b)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t i = 0; i < 70; ++i) REQUIRE(lse[h * 210 + b * 70 + i] == ld(b, h, i));
}

TEST_CASE("varlen: invalid prefix sums and extents are rejected before anything is written", "[varlen][errors]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  using Pk = Packed<S, float>;
  Pk pk({10, 20}, {15, 5}, 2, 1, 16);
  pk.data.poison();
  auto call = [&](const Kokkos::View<std::int32_t*, S::memory_space>& cq, const Kokkos::View<std::int32_t*, S::memory_space>& ck,
                  std::int64_t mq, std::int64_t mk) {
    kfa::forward_varlen(S(), pk.q, pk.k, pk.v, pk.o, pk.lse, cq, ck, mq, mk);
  };
  CHECK_THROWS_WITH(call(Pk::to_device({0, 31, 30}), pk.dcu_k, 40, 15), ContainsSubstring("non-decreasing"));
  CHECK_THROWS_WITH(call(Pk::to_device({0, 10, 29}), pk.dcu_k, 20, 15), ContainsSubstring("ends at 29"));
  CHECK_THROWS_WITH(call(Pk::to_device({1, 10, 30}), pk.dcu_k, 20, 15), ContainsSubstring("cu_seqlens_q[0] must be 0"));
  CHECK_THROWS_WITH(call(pk.dcu_q, pk.dcu_k, 19, 15), ContainsSubstring("max_seqlen_q"));
  CHECK_THROWS_WITH(call(pk.dcu_q, Pk::to_device({0, 20}), 20, 20), ContainsSubstring("describes 2 sequences"));
  CHECK_THROWS_WITH(call(Pk::to_device({0}), Pk::to_device({0}), 20, 20), ContainsSubstring("batch + 1 >= 2"));
  Kokkos::View<float**, S::memory_space> bad_lse("lse", 30, 2);
  CHECK_THROWS_WITH(kfa::forward_varlen(S(), pk.q, pk.k, pk.v, pk.o, bad_lse, pk.dcu_q, pk.dcu_k, 20, 15),
                    ContainsSubstring("[heads, total_q]"));
  std::vector<double> o, l;
  pk.read(o, l);
  for (double x : o) REQUIRE(std::isnan(x));
}

// ---- backward ----

TEMPLATE_LIST_TEST_CASE("varlen: backward with empty sequences, GQA, causal", "[varlen][backward][sweep]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 1}}));
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  const bool deterministic = GENERATE(false, true);
  Packed<S, T> pk({37, 0, 130, 5, 64, 1}, {41, 17, 129, 0, 70, 1}, heads, heads_kv, 32);
  check_varlen_backward(pk, opt, {}, deterministic);
}

TEMPLATE_LIST_TEST_CASE("varlen: backward with window, softcap, ALiBi and dropout", "[varlen][backward][dropout]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions opt;
  opt.window_left = 25;
  opt.softcap = 6.0;
  opt.alibi = {0.2f, 0.05f};
  FeatureOptions x;
  x.dropout_p = GENERATE(0.0, 0.3);
  x.seed = 3;
  x.offset = 4;
  Packed<S, T> pk({90, 33, 1, 70}, {77, 50, 20, 70}, 2, 1, 48);
  check_varlen_backward(pk, opt, x, GENERATE(false, true));
}
