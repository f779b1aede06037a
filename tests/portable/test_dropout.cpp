// Fused dropout: the Philox generator, its mask as kfa returns it, keep rates, and the forward
// against the fp64 reference that applies the same mask.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "feature_backward.hpp"
#include "spaces.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;


TEST_CASE("dropout: Philox 4x32-10 reproduces the published known-answer vectors", "[dropout]") {
  using kfa::detail::Philox4;
  using kfa::detail::philox4x32_10;
  auto eq = [](Philox4 a, Philox4 b) { return a.w[0] == b.w[0] && a.w[1] == b.w[1] && a.w[2] == b.w[2] && a.w[3] == b.w[3]; };
  CHECK(eq(philox4x32_10({{0, 0, 0, 0}}, 0, 0), {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}));
  CHECK(eq(philox4x32_10({{~0u, ~0u, ~0u, ~0u}}, ~0u, ~0u), {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}));
  CHECK(eq(philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u),
           {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}));
}

TEMPLATE_LIST_TEST_CASE("dropout: the returned mask and probabilities match the reference bit for bit / in fp64",
                        "[dropout]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  using L = kfa::lse_type<T>;
  const Dims n{2, 37, 53, 2, 1, 16};
  RefOptions opt;
  opt.causal = true;
  const FeatureOptions x = dropout(0.3, rng()(), rng()());
  Problem<S, T> p(n, opt);
  Kokkos::View<L****, typename S::memory_space> probs("probs", n.batch, n.heads, n.seqlen_q, n.seqlen_k);
  Kokkos::View<std::uint8_t****, typename S::memory_space> keep("keep", n.batch, n.heads, n.seqlen_q, n.seqlen_k);
  kfa::debug::attention_probabilities(S(), p.q, p.k, p.v, probs, keep, with_dropout(opt, x));
  auto ph = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), probs);
  auto kh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), keep);
  std::vector<double> ref_o, ref_lse, ref_p;
  reference_forward_features(p.host, opt, x, ref_o, ref_lse, &ref_p);
  std::int64_t mismatches = 0, kept = 0;
  double perr = 0;
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < n.seqlen_q; ++i)
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          mismatches += kh(b, h, i, j) != (ref_keep(x, b, h, i, j) ? 1 : 0);
          kept += kh(b, h, i, j);
          perr = std::max(perr, std::abs(ph(b, h, i, j) - ref_p[((b * n.heads + h) * n.seqlen_q + i) * n.seqlen_k + j]));
        }
  CHECK(mismatches == 0);
  CHECK(kept > 0);
  CHECK(kept < n.batch * n.heads * n.seqlen_q * n.seqlen_k);
  CHECK(perr < (std::is_same_v<L, double> ? 1e-12 : 1e-5));  // computed in L from the same rounded inputs
}

TEST_CASE("dropout: keep rate within statistical bounds, streams differ by seed and offset", "[dropout]") {
  const std::int64_t rows = 200, cols = 1000;
  for (double p_asked : {0.05, 0.3, 0.5, 0.9}) {
    const FeatureOptions x = dropout(p_asked, 1234, 99);
    const double p = kfa::detail::dropout_effective_p(static_cast<float>(p_asked));  // a multiple of 1/256
    CHECK(std::abs(p - p_asked) <= 1.0 / 512);
    std::int64_t kept = 0;
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j) kept += ref_keep(x, 1, 3, i, j);
    const double n = double(rows * cols), sigma = std::sqrt(n * p * (1 - p));
    INFO("p " << p << " kept " << kept << " expected " << n * (1 - p) << " sigma " << sigma);
    CHECK(std::abs(kept - n * (1 - p)) < 5 * sigma);
  }
  // different seeds / offsets / heads give (nearly) independent masks: agreement ~ p^2 + (1-p)^2
  const FeatureOptions a = dropout(0.5, 1, 0), b = dropout(0.5, 2, 0), c = dropout(0.5, 1, 1);
  std::int64_t same_seed = 0, same_offset = 0, same_head = 0, self = 0;
  const std::int64_t n = 100000;
  for (std::int64_t e = 0; e < n; ++e) {
    const std::int64_t i = e / 500, j = e % 500;
    same_seed += ref_keep(a, 0, 0, i, j) == ref_keep(b, 0, 0, i, j);
    same_offset += ref_keep(a, 0, 0, i, j) == ref_keep(c, 0, 0, i, j);
    same_head += ref_keep(a, 0, 0, i, j) == ref_keep(a, 0, 1, i, j);
    self += ref_keep(a, 0, 0, i, j) == ref_keep(a, 0, 0, i, j);
  }
  CHECK(self == n);
  for (std::int64_t agree : {same_seed, same_offset, same_head}) CHECK(std::abs(agree - n / 2) < 5 * std::sqrt(n / 4.0));
}

TEMPLATE_LIST_TEST_CASE("dropout: forward against the fp64 reference with the same mask", "[dropout]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk, heads_kv] = GENERATE(table<std::int64_t, std::int64_t, std::int64_t>(
      {{1, 1, 2}, {77, 131, 1}, {129, 64, 2}, {200, 200, 1}}));
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  const double p = GENERATE(0.1, 0.6);
  Problem<S, T> prob({2, sq, sk, 4, heads_kv, 32}, opt);
  const FeatureOptions x = dropout(p, rng()(), rng()());
  check_forward_features(prob, with_dropout(opt, x), x, "dropout");
}

TEMPLATE_LIST_TEST_CASE("dropout: combined with window, softcap, ALiBi and a block mask", "[dropout]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions opt;
  opt.window_left = 30;
  opt.softcap = 4.0;
  opt.alibi = {0.1f, 0.03f};
  Problem<S, T> prob({1, 90, 110, 2, 2, 32}, opt);
  FeatureOptions x = dropout(0.25, 42, 7);
  const kfa::BlockMask m = kfa::BlockMask::strided({90, 110, 16, 16}, 10, 8);
  x.allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
    const std::int64_t d = i + 20 - j;
    return d >= 0 && (d <= 10 || j % 8 == 7);
  };
  kfa::Params params = with_dropout(opt, x);
  params.block_mask = &m;
  check_forward_features(prob, params, x, "dropout + modifiers + block mask");
}

TEMPLATE_LIST_TEST_CASE("dropout: p = 0 is exactly no dropout, whatever the seed", "[dropout]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  Problem<S, T> prob({1, 70, 90, 2, 1, 32}, RefOptions{});
  std::vector<double> o1, l1, o2, l2;
  prob.poison();
  kfa::forward(S(), prob.q, prob.k, prob.v, prob.o, prob.lse);
  S().fence();
  prob.read(o1, l1);
  kfa::Params params;
  params.seed = 77;
  params.offset = 5;
  params.dropout_p = 0.0;
  prob.poison();
  kfa::forward(S(), prob.q, prob.k, prob.v, prob.o, prob.lse, params);
  S().fence();
  prob.read(o2, l2);
  CHECK(max_abs_diff(o1, o2) == 0.0);
  CHECK(max_abs_diff(l1, l2) == 0.0);
}

TEST_CASE("dropout: results do not depend on the kernel's tiles or the backend", "[dropout]") {
  // A full block mask with 16-wide blocks forces 16-wide kernel tiles instead of 64.
  const Dims n{1, 130, 150, 2, 2, 32};
  RefOptions opt;
  opt.causal = true;
  const FeatureOptions x = dropout(0.4, 9, 3);
  kfa::Params params = with_dropout(opt, x);
  const kfa::BlockMask all = kfa::BlockMask::from_element_mask(
      {n.seqlen_q, n.seqlen_k, 16, 16}, [](std::int64_t, std::int64_t, std::int64_t, std::int64_t) { return true; });
  std::vector<std::vector<double>> outs;
  for (int run = 0; run < 2; ++run) {
    using S = Kokkos::DefaultHostExecutionSpace;
    Problem<S, double> p(n, opt);
    kfa::Params pr = params;
    if (run == 1) pr.block_mask = &all;
    check_forward_features(p, pr, x, run ? "16-wide tiles" : "default tiles");
  }
#if defined(KOKKOS_ENABLE_SERIAL) && defined(KOKKOS_ENABLE_OPENMP)
  Problem<Kokkos::Serial, float> ps(n, opt);
  Problem<Kokkos::OpenMP, float> po(n, opt);
  Kokkos::deep_copy(po.qb, ps.qb);
  Kokkos::deep_copy(po.kb, ps.kb);
  Kokkos::deep_copy(po.vb, ps.vb);
  kfa::forward(Kokkos::Serial(), ps.q, ps.k, ps.v, ps.o, ps.lse, params);
  kfa::forward(Kokkos::OpenMP(), po.q, po.k, po.v, po.o, po.lse, params);
  Kokkos::fence();
  std::vector<double> o1, l1, o2, l2;
  ps.read(o1, l1);
  po.read(o2, l2);
  CHECK(max_abs_diff(o1, o2) == 0.0);
#endif
}

TEST_CASE("dropout: invalid probability is rejected", "[dropout][errors]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  Problem<S, float> p({1, 8, 8, 1, 1, 16}, RefOptions{});
  kfa::Params params;
  for (double bad : {-0.1, 1.0, 2.0, std::numeric_limits<double>::quiet_NaN()}) {
    params.dropout_p = bad;
    CHECK_THROWS_WITH(kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params), ContainsSubstring("dropout_p must be in [0, 1)"));
  }
}

// ---- backward ----

TEST_CASE("dropout: the fp64 reference gradients match finite differences with the mask fixed", "[dropout][backward]") {
  const Dims n{1, 6, 9, 2, 1, 4};
  RefOptions opt;
  opt.causal = true;
  opt.softcap = GENERATE(0.0, 2.0);
  FeatureOptions x = dropout(0.4, 5, 2);
  HostQKV in;
  in.n = n;
  std::normal_distribution<double> dist(0.0, 1.0);
  for (auto* t : {&in.q, &in.k, &in.v}) {
    t->resize((t == &in.q ? n.seqlen_q * n.heads : n.seqlen_k * n.heads_kv) * n.head_dim);
    for (double& e : *t) e = dist(rng());
  }
  std::vector<double> dout(n.seqlen_q * n.heads * n.head_dim);
  for (double& e : dout) e = dist(rng());
  HostGrads g;
  reference_backward_features(in, opt, x, dout, g);
  const double eps = 1e-6;
  double worst = 0, scale = 0;
  auto probe = [&](std::vector<double>& t, const std::vector<double>& grad) {
    for (std::size_t e = 0; e < t.size(); ++e) {
      const double keep = t[e];
      t[e] = keep + eps;
      const double up = reference_loss_features(in, opt, x, dout);
      t[e] = keep - eps;
      const double down = reference_loss_features(in, opt, x, dout);
      t[e] = keep;
      worst = std::max(worst, std::abs((up - down) / (2 * eps) - grad[e]));
      scale = std::max(scale, std::abs(grad[e]));
    }
  };
  probe(in.q, g.dq);
  probe(in.k, g.dk);
  probe(in.v, g.dv);
  INFO("worst finite-difference gap " << worst << ", max |grad| " << scale);
  CHECK(scale > 0.1);
  CHECK(worst < 1e-6 * std::max(1.0, scale));
}

TEMPLATE_LIST_TEST_CASE("dropout: backward against the fp64 reference with the same mask", "[dropout][backward][sweep]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk, heads_kv] = GENERATE(table<std::int64_t, std::int64_t, std::int64_t>({{77, 131, 1}, {129, 64, 2}}));
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  const FeatureOptions x = dropout(0.3, rng()(), rng()());
  kfa::Params params = with_dropout(opt, x);
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({2, sq, sk, 4, heads_kv, 32}, opt, params, x, "dropout backward");
}

TEMPLATE_LIST_TEST_CASE("dropout: backward with softcap, ALiBi, window and a block mask", "[dropout][backward]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions opt;
  opt.window_left = 30;
  opt.softcap = 4.0;
  opt.alibi = {0.1f, 0.03f};
  FeatureOptions x = dropout(0.25, 42, 7);
  const kfa::BlockMask m = kfa::BlockMask::strided({90, 110, 16, 32}, 10, 8);
  x.allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
    const std::int64_t d = i + 20 - j;
    return d >= 0 && (d <= 10 || j % 8 == 7);
  };
  kfa::Params params = with_dropout(opt, x);
  params.block_mask = &m;
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({1, 90, 110, 2, 2, 32}, opt, params, x, "dropout + modifiers + block mask backward");
}
