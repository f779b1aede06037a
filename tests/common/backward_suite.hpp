#pragma once
// The backward suite, one text for every execution space it runs on: the host spaces
// (tests/portable) and the GPUs (tests/hip, ...). Before including it, a suite defines
// KFA_BACKWARD_SUITE (name prefix), KFA_BACKWARD_TAGS and KFA_BACKWARD_CASES (its Case list).
// Gradients are judged against the fp64 analytic backward with the tolerance rule.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "backward_harness.hpp"

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": sequence lengths with tile remainders", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>(
      {{1, 1}, {2, 2}, {17, 17}, {64, 64}, {127, 129}, {129, 127}, {1, 257}, {257, 1}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  const bool deterministic = GENERATE(false, true);
  check_backward<S, T>({2, sq, sk, 2, 2, 64}, o, false, 1.0, deterministic);
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": head dimensions", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(1, 16, 40, 64, 96, 128, 192, 256);
  check_backward<S, T>({1, 77, 93, 2, 1, d}, RefOptions{});
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": grouped-query and multi-query attention sum dK, dV over the group", KFA_BACKWARD_TAGS,
                        KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {8, 1}, {6, 1}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  const bool deterministic = GENERATE(false, true);
  check_backward<S, T>({2, 33, 70, heads, heads_kv, 32}, o, false, 1.0, deterministic);
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": causal with seqlen_q != seqlen_k (bottom-right aligned)", KFA_BACKWARD_TAGS,
                        KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{50, 130}, {130, 50}, {65, 64}, {200, 3}}));
  RefOptions o;
  o.causal = true;
  check_backward<S, T>({1, sq, sk, 2, 2, 48}, o, false, 1.0, GENERATE(false, true));
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": strided [batch, heads, seq, dim] storage", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_backward<S, T>({2, 70, 45, 4, 2, 40}, o, true, 1.0, GENERATE(false, true));
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": scores of large magnitude", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_backward<S, T>({1, 90, 90, 2, 2, 64}, o, false, 4.0);
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": explicit scale with a sliding window", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.scale = 0.3;
  o.window_left = 20;
  o.window_right = GENERATE(-1, 0, 7);
  check_backward<S, T>({1, 150, 140, 2, 1, 32}, o, false, 1.0, GENERATE(false, true));
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": softcap and ALiBi", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions m;
  m.softcap = 5.0;
  m.alibi = {0.25f, 0.0625f};
  m.causal = GENERATE(false, true);
  check_backward<S, T>({1, 80, 100, 2, 2, 32}, m, false, 3.0, GENERATE(false, true));
}

TEMPLATE_LIST_TEST_CASE(KFA_BACKWARD_SUITE ": fully masked rows give zero gradients and no NaN", KFA_BACKWARD_TAGS, KFA_BACKWARD_CASES) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  // causal with more queries than keys: the first seqlen_q - seqlen_k rows see no key at all
  RefOptions o;
  o.causal = true;
  const bool deterministic = GENERATE(false, true);
  BackwardProblem<S, T> p({1, 100, 30, 2, 1, 32}, o);
  kfa::Params params = to_params(o);
  params.deterministic = deterministic;
  p.forward(params);
  const HostGrads g = p.backward(params);
  for (std::int64_t i = 0; i < 100; ++i)
    for (std::int64_t h = 0; h < 2; ++h)
      for (std::int64_t c = 0; c < 32; ++c) {
        const double x = g.dq[(i * 2 + h) * 32 + c];
        if (i < 70) CHECK(x == 0.0);
        else CHECK(std::isfinite(x));
      }
  for (double x : g.dk) CHECK(std::isfinite(x));
  for (double x : g.dv) CHECK(std::isfinite(x));
  check_backward<S, T>({1, 100, 30, 2, 1, 32}, o, false, 1.0, deterministic);
  // a window that leaves some keys unseen by every query: their dK, dV are zero
  RefOptions w;
  w.window_left = 3;
  w.window_right = 3;
  BackwardProblem<S, T> q({1, 20, 80, 1, 1, 16}, w);
  params = to_params(w);
  params.deterministic = deterministic;
  q.forward(params);
  const HostGrads gw = q.backward(params);
  for (std::int64_t j = 0; j < 80; ++j)
    for (std::int64_t c = 0; c < 16; ++c)
      if (j < 60 - 3) {  // query i sees keys i + 60 - 3 .. i + 60 + 3
        CHECK(gw.dk[j * 16 + c] == 0.0);
        CHECK(gw.dv[j * 16 + c] == 0.0);
      }
  check_backward<S, T>({1, 20, 80, 1, 1, 16}, w, false, 1.0, deterministic);
}
