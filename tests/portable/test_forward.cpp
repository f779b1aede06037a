// Portable forward on every host execution space and element type, against fp64.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "spaces.hpp"

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE("forward: sequence lengths with tile remainders", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>(
      {{1, 1}, {2, 2}, {17, 17}, {64, 64}, {127, 129}, {128, 128}, {129, 127}, {257, 257}, {1, 257}, {257, 1}}));
  const bool causal = GENERATE(false, true);
  RefOptions o;
  o.causal = causal;
  check_forward<S, T>({2, sq, sk, 2, 2, 64}, o);
}

TEMPLATE_LIST_TEST_CASE("forward: long sequence", "[forward][sweep]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({1, 1000, 1000, 1, 1, 64}, o);
}

TEMPLATE_LIST_TEST_CASE("forward: head dimensions", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(1, 16, 32, 40, 64, 80, 96, 128, 192, 256);
  check_forward<S, T>({1, 77, 93, 2, 1, d}, RefOptions{});
}

TEMPLATE_LIST_TEST_CASE("forward: grouped-query and multi-query attention", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {8, 2}, {8, 1}, {6, 1}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({2, 33, 70, heads, heads_kv, 32}, o);
}

TEMPLATE_LIST_TEST_CASE("forward: causal with seqlen_q != seqlen_k (bottom-right aligned)", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{50, 130}, {130, 50}, {65, 64}, {200, 3}}));
  RefOptions o;
  o.causal = true;
  check_forward<S, T>({1, sq, sk, 2, 2, 48}, o);
}

TEMPLATE_LIST_TEST_CASE("forward: fully masked rows give zero output and LSE of minus infinity", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  // causal with more queries than keys: the first seqlen_q - seqlen_k rows see no key at all
  Problem<S, T> p({1, 100, 30, 2, 1, 32}, RefOptions{});
  kfa::Params params;
  params.causal = true;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  S().fence();
  std::vector<double> o, lse;
  p.read(o, lse);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 100; ++i) {
      const double l = lse[h * 100 + i];
      if (i < 70) {
        CHECK(l == -std::numeric_limits<double>::infinity());
        for (std::int64_t c = 0; c < 32; ++c) CHECK(o[(i * 2 + h) * 32 + c] == 0.0);
      } else {
        CHECK(std::isfinite(l));
      }
    }
  check_forward<S, T>({1, 100, 30, 2, 1, 32}, RefOptions{0, true});
}

TEMPLATE_LIST_TEST_CASE("forward: scores of large magnitude do not overflow", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({1, 90, 90, 2, 2, 64}, o, false, 12.0);  // scores ~ +-1000
}

TEMPLATE_LIST_TEST_CASE("forward: strided [batch, heads, seq, dim] storage", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({2, 70, 45, 4, 2, 40}, o, true);
}

TEMPLATE_LIST_TEST_CASE("forward: explicit scale with sliding window and softcap and ALiBi", "[forward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.scale = 0.3;
  o.window_left = 20;
  o.window_right = GENERATE(-1, 0, 7);
  check_forward<S, T>({1, 150, 140, 2, 1, 32}, o);
  RefOptions m;
  m.softcap = 5.0;
  m.alibi = {0.25f, 0.0625f};
  m.causal = GENERATE(false, true);
  check_forward<S, T>({1, 80, 100, 2, 2, 32}, m, false, 3.0);
}

TEST_CASE("forward: LayoutRight views on the default host space", "[forward]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  Problem<S, float> p({1, 40, 40, 2, 2, 16}, RefOptions{});
  Kokkos::View<float****, S::memory_space> q("q", 1, 40, 2, 16), k("k", 1, 40, 2, 16), v("v", 1, 40, 2, 16),
      o("o", 1, 40, 2, 16);
  Kokkos::View<float***, S::memory_space> lse("lse", 1, 2, 40);
  Kokkos::deep_copy(q, p.q);
  Kokkos::deep_copy(k, p.k);
  Kokkos::deep_copy(v, p.v);
  Kokkos::deep_copy(o, std::numeric_limits<float>::quiet_NaN());
  kfa::forward(S(), q, k, v, o, lse);
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse);
  S().fence();
  for (int i = 0; i < 40; ++i)
    for (int h = 0; h < 2; ++h)
      for (int c = 0; c < 16; ++c) REQUIRE(o(0, i, h, c) == p.o(0, i, h, c));
}
