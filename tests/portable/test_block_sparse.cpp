// Block-sparse attention against the dense fp64 reference with the equivalent element mask.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "feature_backward.hpp"
#include "spaces.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;

namespace {

/// A random block matrix [batch][heads][nq][nk] with the given density, and its element predicate.
struct RandomBlocks {
  kfa::BlockMaskShape shape;
  std::int64_t nq, nk;
  std::vector<std::uint8_t> blocks;
  RandomBlocks(kfa::BlockMaskShape s, double density) : shape(s) {
    nq = (s.seqlen_q + s.block_q - 1) / s.block_q;
    nk = (s.seqlen_k + s.block_k - 1) / s.block_k;
    std::bernoulli_distribution keep(density);
    blocks.resize(s.batch * s.heads * nq * nk);
    for (auto& x : blocks) x = keep(rng());
  }
  bool allowed(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    const std::int64_t mb = shape.batch == 1 ? 0 : b, mh = shape.heads == 1 ? 0 : h;
    return blocks[((mb * shape.heads + mh) * nq + i / shape.block_q) * nk + j / shape.block_k] != 0;
  }
};

template <class S, class T>
void check_mask(const Dims& n, RefOptions opt, const kfa::BlockMask& mask, FeatureOptions x, const char* what) {
  Problem<S, T> p(n, opt);
  kfa::Params params = to_params(opt);
  params.block_mask = &mask;
  check_forward_features(p, params, x, what);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("block-sparse: random block matrices, block sizes, broadcast, GQA, causal", "[block_sparse][sweep]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [bq, bk] = GENERATE(table<std::int64_t, std::int64_t>({{64, 64}, {16, 32}, {128, 48}}));
  const bool causal = GENERATE(false, true);
  const Dims n{2, 150, 201, 4, 2, 32};
  const std::int64_t mb = GENERATE(1, 2), mh = GENERATE(1, 4);
  RandomBlocks rb({n.seqlen_q, n.seqlen_k, bq, bk, mb, mh}, 0.5);
  const kfa::BlockMask mask = kfa::BlockMask::from_blocks(rb.shape, rb.blocks);
  FeatureOptions x;
  x.allowed = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) { return rb.allowed(b, h, i, j); };
  RefOptions opt;
  opt.causal = causal;
  check_mask<S, T>(n, opt, mask, x, "random blocks");
}

TEMPLATE_LIST_TEST_CASE("block-sparse: element masks give partial blocks", "[block_sparse]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const Dims n{1, 133, 97, 2, 1, 48};
  // a random element mask with whole-block holes and full blocks, so all three kinds occur
  std::vector<std::uint8_t> bits(n.heads * n.seqlen_q * n.seqlen_k);
  std::bernoulli_distribution on(0.6);
  for (auto& b : bits) b = on(rng());
  auto allowed = [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
    if (j / 32 == 1) return false;            // an empty block column
    if (i / 32 == 2 && j / 32 == 0) return true;  // a full block
    return bits[(h * n.seqlen_q + i) * n.seqlen_k + j] != 0;
  };
  const kfa::BlockMask mask = kfa::BlockMask::from_element_mask({n.seqlen_q, n.seqlen_k, 32, 32, 1, n.heads}, allowed);
  CHECK(mask.partial_blocks() > 0);
  CHECK(mask.full_blocks() > 0);
  FeatureOptions x;
  x.allowed = allowed;
  RefOptions opt;
  opt.window_left = GENERATE(-1, 40);
  check_mask<S, T>(n, opt, mask, x, "element mask");
}

TEMPLATE_LIST_TEST_CASE("block-sparse: patterns", "[block_sparse]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const Dims n{1, 170, 190, 2, 2, 32};
  const kfa::BlockMaskShape sh{n.seqlen_q, n.seqlen_k, 32, 16, 1, 1};
  const std::int64_t shift = n.seqlen_k - n.seqlen_q;
  FeatureOptions x;
  SECTION("causal equals Params::causal") {
    x.allowed = [&](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) { return j <= i + shift; };
    check_mask<S, T>(n, RefOptions{}, kfa::BlockMask::causal(sh), x, "causal pattern");
  }
  SECTION("sliding window") {
    x.allowed = [&](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      return j >= i + shift - 37 && j <= i + shift + 5;
    };
    check_mask<S, T>(n, RefOptions{}, kfa::BlockMask::sliding_window(sh, 37, 5), x, "sliding window pattern");
  }
  SECTION("local + global") {
    x.allowed = [&](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      return std::abs(i + shift - j) <= 20 || i < 3 || j < 3;
    };
    check_mask<S, T>(n, RefOptions{}, kfa::BlockMask::local_global(sh, 20, 3), x, "local+global pattern");
  }
  SECTION("strided") {
    x.allowed = [&](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      const std::int64_t d = i + shift - j;
      return d >= 0 && (d <= 12 || j % 16 == 15);
    };
    check_mask<S, T>(n, RefOptions{}, kfa::BlockMask::strided(sh, 12, 16), x, "strided pattern");
  }
  SECTION("bigbird, checked through its own block list") {
    const kfa::BlockMask m = kfa::BlockMask::bigbird(sh, 1, 1, 2, 7);
    const auto spec = m.host_spec();
    x.allowed = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
      return kfa::detail::block_mask_allows(spec, b, h, i, j);
    };
    CHECK(m.density() < 1.0);
    check_mask<S, T>(n, RefOptions{}, m, x, "bigbird pattern");
  }
}

TEST_CASE("block-sparse: the causal pattern matches Params::causal bit for bit", "[block_sparse]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  Problem<S, float> p({1, 256, 256, 2, 2, 64}, RefOptions{});
  kfa::Params dense;
  dense.causal = true;
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, dense);
  std::vector<double> o1, l1, o2, l2;
  S().fence();
  p.read(o1, l1);
  // Bitwise equality needs the same key-tile boundaries on both paths: mask blocks of 128 keep the
  // dense key tile (128 on CPUs, 64 on GPUs), where smaller blocks would shrink the sparse path's.
  const kfa::BlockMask m = kfa::BlockMask::causal({256, 256, 128, 128});
  kfa::Params sparse;
  sparse.block_mask = &m;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, sparse);
  S().fence();
  p.read(o2, l2);
  CHECK(max_abs_diff(o1, o2) == 0.0);
  CHECK(max_abs_diff(l1, l2) == 0.0);
}

TEMPLATE_LIST_TEST_CASE("block-sparse: skipped blocks are never read, empty rows give zeros", "[block_sparse]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const Dims n{1, 128, 192, 1, 1, 16};
  // query block 1 computes nothing; key block 2 is used by no query block
  const kfa::BlockMask m = kfa::BlockMask::from_blocks({128, 192, 64, 64}, {1, 1, 0, 0, 0, 0});
  Problem<S, T> p(n, RefOptions{});
  // NaN in every key/value of key block 2: reading them would poison the output
  auto kh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.kb);
  auto vh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), p.vb);
  for (std::int64_t e = 128 * 16; e < 192 * 16; ++e) {
    kh(e) = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    vh(e) = kh(e);
  }
  Kokkos::deep_copy(p.kb, kh);
  Kokkos::deep_copy(p.vb, vh);
  kfa::Params params;
  params.block_mask = &m;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  S().fence();
  std::vector<double> o, lse, ref_o, ref_lse;
  p.read(o, lse);
  FeatureOptions x;
  x.allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) { return i < 64 && j < 128; };
  reference_forward_features(p.host, p.opt, x, ref_o, ref_lse);
  for (std::int64_t i = 64; i < 128; ++i) {
    CHECK(lse[i] == -std::numeric_limits<double>::infinity());
    for (int c = 0; c < 16; ++c) CHECK(o[i * 16 + c] == 0.0);
  }
  std::vector<double> o_top(o.begin(), o.begin() + 64 * 16), r_top(ref_o.begin(), ref_o.begin() + 64 * 16);
  CHECK(max_abs_diff(o_top, r_top) < 0.05);  // finite and right (precision checked by the other cases)
}

TEST_CASE("block-sparse: invalid masks are rejected with a clear error", "[block_sparse][errors]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  CHECK_THROWS_WITH(kfa::BlockMask::causal({100, 100, 24, 64}), ContainsSubstring("multiples of 16"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_blocks({100, 100, 64, 64}, {1, 1, 1}), ContainsSubstring("expected batch * heads"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 1, 2}, {0, 2}), ContainsSubstring("out of range"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 2, 2}, {1, 0}),
                    ContainsSubstring("strictly increasing"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 2, 1}, {0}), ContainsSubstring("decreases"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 1}, {0}), ContainsSubstring("row pointer has"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 1, 1}, {0}, {0, 1, 1}, {0},
                                                    std::vector<std::uint32_t>(128, ~0u)),
                    ContainsSubstring("both as full and as partial"));
  CHECK_THROWS_WITH(kfa::BlockMask::from_compressed({100, 100, 64, 64}, {0, 1, 1}, {0}, {0, 0, 1}, {1},
                                                    std::vector<std::uint32_t>(3)),
                    ContainsSubstring("partial bits"));
  // a valid mask used with the wrong call
  Problem<S, float> p({2, 100, 100, 4, 4, 16}, RefOptions{});
  p.poison();
  kfa::Params params;
  const kfa::BlockMask other_len = kfa::BlockMask::causal({100, 96, 64, 64});
  params.block_mask = &other_len;
  CHECK_THROWS_WITH(kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params), ContainsSubstring("built for seqlen_q 100, seqlen_k 96"));
  const kfa::BlockMask three_heads = kfa::BlockMask::causal({100, 100, 64, 64, 1, 3});
  params.block_mask = &three_heads;
  CHECK_THROWS_WITH(kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params), ContainsSubstring("heads 3"));
  const kfa::BlockMask empty;
  params.block_mask = &empty;
  CHECK_THROWS_WITH(kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params), ContainsSubstring("empty BlockMask"));
  std::vector<double> o, l;
  p.read(o, l);
  for (double v : o) REQUIRE(std::isnan(v));  // nothing written
}

// ---- backward ----

TEMPLATE_LIST_TEST_CASE("block-sparse: backward with random block matrices, broadcast, GQA, causal", "[block_sparse][backward][sweep]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [bq, bk] = GENERATE(table<std::int64_t, std::int64_t>({{64, 64}, {16, 48}, {128, 32}}));
  const Dims n{2, 150, 201, 4, 2, 32};
  const std::int64_t mh = GENERATE(1, 4);
  RandomBlocks rb({n.seqlen_q, n.seqlen_k, bq, bk, 2, mh}, 0.5);
  const kfa::BlockMask mask = kfa::BlockMask::from_blocks(rb.shape, rb.blocks);
  FeatureOptions x;
  x.allowed = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) { return rb.allowed(b, h, i, j); };
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  kfa::Params params = to_params(opt);
  params.block_mask = &mask;
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>(n, opt, params, x, "random blocks backward");
}

TEMPLATE_LIST_TEST_CASE("block-sparse: backward with partial blocks (element masks)", "[block_sparse][backward]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const Dims n{1, 133, 97, 2, 1, 48};
  std::vector<std::uint8_t> bits(n.heads * n.seqlen_q * n.seqlen_k);
  std::bernoulli_distribution on(0.6);
  for (auto& b : bits) b = on(rng());
  auto allowed = [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
    if (j / 32 == 1) return false;
    if (i / 32 == 2 && j / 32 == 0) return true;
    return bits[(h * n.seqlen_q + i) * n.seqlen_k + j] != 0;
  };
  const kfa::BlockMask mask = kfa::BlockMask::from_element_mask({n.seqlen_q, n.seqlen_k, 32, 32, 1, n.heads}, allowed);
  FeatureOptions x;
  x.allowed = allowed;
  RefOptions opt;
  opt.softcap = GENERATE(0.0, 5.0);
  kfa::Params params = to_params(opt);
  params.block_mask = &mask;
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>(n, opt, params, x, "element mask backward");
}
