#pragma once
// The native-forward GPU suite, one text for every native backend. Before including it, a suite
// defines KFA_NATIVE_SUITE (name prefix), KFA_NATIVE_TAGS and KFA_NATIVE_CASES (its Case list), and
// its cases header provides native_head_dims() and native_for(head_dim) (the Backend to force).
// The kernels are forced with Backend::native and judged against fp64 with the tolerance rule.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/generators/catch_generators_range.hpp>

#include "harness.hpp"

namespace kfa::test {
constexpr auto native = kfa::Backend::native;
}  // namespace kfa::test

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": every head_dim, causal and GQA", KFA_NATIVE_TAGS, KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(from_range(native_head_dims()));
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {4, 1}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({2, 150, 150, heads, heads_kv, d}, o, false, 1.0, native_for(d));
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": odd sequence lengths", KFA_NATIVE_TAGS, KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t n = GENERATE(1, 17, 129, 1000, 4097);
  const std::int64_t d = GENERATE(64, 128);
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({1, n, n, n > 1000 ? 1 : 2, 1, d}, o, false, 1.0, native);
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": seqlen_q != seqlen_k (bottom-right causal)", KFA_NATIVE_TAGS,
                        KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>(
      {{50, 130}, {130, 50}, {1, 257}, {257, 1}, {65, 64}, {200, 3}, {333, 1000}, {1000, 333}}));
  const std::int64_t d = GENERATE(64, 128);
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({2, sq, sk, 2, 1, d}, o, false, 1.0, native);
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": sliding windows and explicit scale", KFA_NATIVE_TAGS, KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.scale = 0.3;
  o.window_left = GENERATE(0, 20, 130);
  o.window_right = GENERATE(-1, 0, 7);
  check_forward<S, T>({1, 300, 280, 2, 1, 64}, o, false, 1.0, native);
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": fully masked rows give zeros and LSE -inf", KFA_NATIVE_TAGS,
                        KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  // causal with more queries than keys: the first seqlen_q - seqlen_k rows see no key
  Problem<S, T> p({1, 300, 100, 2, 1, 64}, RefOptions{});
  kfa::Params params;
  params.causal = true;
  params.backend = native;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  Kokkos::fence();
  std::vector<double> o, lse;
  p.read(o, lse);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t i = 0; i < 300; ++i) {
      const double l = lse[h * 300 + i];
      if (i < 200) {
        REQUIRE(l == -std::numeric_limits<double>::infinity());
        for (std::int64_t c = 0; c < 64; ++c) REQUIRE(o[(i * 2 + h) * 64 + c] == 0.0);
      } else {
        REQUIRE(std::isfinite(l));
      }
    }
  check_forward<S, T>({1, 300, 100, 2, 1, 64}, RefOptions{0, true}, false, 1.0, native);
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": scores of large magnitude", KFA_NATIVE_TAGS, KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({1, 190, 190, 2, 2, 128}, o, false, 12.0, native);  // scores ~ +-1000
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": strided [batch, heads, seq, dim] storage", KFA_NATIVE_TAGS,
                        KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<S, T>({2, 170, 145, 4, 2, 96}, o, true, 1.0, native);
}

TEMPLATE_LIST_TEST_CASE(KFA_NATIVE_SUITE ": the forward is bitwise reproducible", KFA_NATIVE_TAGS, KFA_NATIVE_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  Problem<S, T> p({2, 700, 700, 4, 2, 128}, RefOptions{});
  kfa::Params params;
  params.causal = true;
  params.backend = native;
  std::vector<double> o1, l1, o2, l2;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  p.read(o1, l1);
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  p.read(o2, l2);
  REQUIRE(max_abs_diff(o1, o2) == 0.0);
  REQUIRE(max_abs_diff(l1, l2) == 0.0);
}
