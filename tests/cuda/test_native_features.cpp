// Every forward option of kfa::Params and packed sequences on the native CUDA kernels, through the
// public API, against fp64 with the tolerance rule: each case with the native path forced and with
// the automatic choice (which must pick it). CTest runs the [native] cases once more under each
// forward kernel (KFA_CUDA_FORWARD=mma / wgmma).
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "cuda_cases.hpp"
#include "feature_cases.hpp"
#include "feature_reference.hpp"
#include "varlen_harness.hpp"

using namespace kfa::test;

namespace {
constexpr auto native = kfa::Backend::native;
}  // namespace

TEMPLATE_LIST_TEST_CASE("cuda features: softcap and ALiBi, causal and not, GQA", "[cuda][native][features]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const kfa::Backend backend = which();
  RefOptions o;
  o.causal = GENERATE(false, true);
  SECTION("softcap") {
    o.softcap = 5.0;
    check_forward<S, T>({2, 200, 333, 4, 2, d}, o, false, 2.0, native_for(d) == native ? backend : native_for(d));
  }
  SECTION("alibi") {
    o.alibi = slopes(4);
    check_forward<S, T>({2, 333, 200, 4, 1, d}, o, false, 1.0, native_for(d) == native ? backend : native_for(d));
  }
  SECTION("softcap + alibi + window") {
    o.softcap = 3.0;
    o.alibi = slopes(4);
    o.window_left = 70;
    check_forward<S, T>({1, 300, 300, 4, 4, d}, o, false, 1.0, native_for(d) == native ? backend : native_for(d));
  }
}

TEMPLATE_LIST_TEST_CASE("cuda features: dropout with GQA, causal, window", "[cuda][native][features][dropout]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 128);
  RefOptions o;
  o.causal = GENERATE(false, true);
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{1, 77}, {250, 250}, {129, 300}}));
  Problem<S, T> p({2, sq, sk, 4, 2, d}, o);
  const FeatureOptions x = dropout(0.17, rng()(), rng()());
  kfa::Params params = with_dropout(o, x);
  params.backend = which();
  check_forward_features(p, params, x, "dropout");
}

TEMPLATE_LIST_TEST_CASE("cuda features: the native dropout mask is the portable path's", "[cuda][native][features][dropout]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  // p = 0.5 drops half the terms: a mask that differs anywhere moves O far beyond rounding.
  Problem<S, T> p({1, 256, 256, 2, 2, 128}, RefOptions{});
  kfa::Params params;
  params.dropout_p = 0.5;
  params.seed = 12345;
  params.offset = 678;
  std::vector<double> o_native, l_native, o_port, l_port;
  params.backend = native;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  p.read(o_native, l_native);
  params.backend = kfa::Backend::portable;
  p.poison();
  kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params);
  p.read(o_port, l_port);
  REQUIRE(max_abs_diff(o_native, o_port) < 0.05);
  REQUIRE(max_abs_diff(l_native, l_port) < 1e-3);
}

TEMPLATE_LIST_TEST_CASE("cuda features: block masks of 64 and 128 blocks, with causal and GQA",
                        "[cuda][native][features][block_sparse]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [bq, bk] = GENERATE(table<std::int64_t, std::int64_t>({{64, 64}, {128, 128}, {64, 128}, {128, 64}}));
  const std::int64_t d = GENERATE(64, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  const Dims n{2, 300, 420, 4, 2, d};
  FeatureOptions x;
  const kfa::BlockMask mask = mixed_mask(n.seqlen_q, n.seqlen_k, bq, bk, n.heads, x);
  Problem<S, T> p(n, o);
  kfa::Params params = to_params(o);
  params.block_mask = &mask;
  params.backend = native_for(d) == native ? which() : native_for(d);
  check_forward_features(p, params, x, "block mask");
}

TEMPLATE_LIST_TEST_CASE("cuda features: block mask + dropout + softcap, rows the mask empties",
                        "[cuda][native][features][block_sparse]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.softcap = 4.0;
  Problem<S, T> p({1, 256, 384, 2, 2, 128}, o);
  FeatureOptions x = dropout(0.2, 9, 3);
  // query block 1 sees nothing: its rows give zeros and LSE -inf
  auto allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
    return i / 64 != 1 && (j / 64 + i / 64) % 2 == 0;
  };
  x.allowed = allowed;
  const kfa::BlockMask mask = kfa::BlockMask::from_element_mask({256, 384, 64, 64}, allowed);
  kfa::Params params = with_dropout(o, x);
  params.block_mask = &mask;
  params.backend = native;
  check_forward_features(p, params, x, "block mask + dropout + softcap");
}

TEMPLATE_LIST_TEST_CASE("cuda features: block sizes the native kernels do not take fall back with a clear reason",
                        "[cuda][native][features][block_sparse]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  Problem<S, T> p({1, 100, 100, 2, 2, 64}, RefOptions{});
  const kfa::BlockMask mask = kfa::BlockMask::causal({100, 100, 48, 32});
  kfa::Params params;
  params.block_mask = &mask;
  params.backend = native;
  p.poison();
  REQUIRE_THROWS_WITH(kfa::forward(S(), p.q, p.k, p.v, p.o, p.lse, params),
                      Catch::Matchers::ContainsSubstring("native kernels take 64, 128 or 256"));
  FeatureOptions x;
  x.allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) { return j <= i; };
  params.backend = kfa::Backend::automatic;  // the portable path takes it
  check_forward_features(p, params, x, "block 48 x 32 (portable)");
}

TEMPLATE_LIST_TEST_CASE("cuda features: packed sequences with causal, window, softcap, ALiBi, dropout",
                        "[cuda][native][features][varlen]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 128);
  const kfa::Backend backend = which();
  RefOptions o;
  o.causal = GENERATE(false, true);
  // an empty query sequence, an empty key sequence, one longer than a tile, odd lengths
  Packed<S, T> pk({37, 0, 300, 5, 129, 1}, {41, 17, 257, 0, 200, 1}, 4, 2, d);
  SECTION("plain") { check_varlen(pk, o, {}, nullptr, backend); }
  SECTION("window + softcap") {
    o.window_left = 50;
    o.softcap = 5.0;
    check_varlen(pk, o, {}, nullptr, backend);
  }
  SECTION("alibi") {
    o.alibi = slopes(4);
    check_varlen(pk, o, {}, nullptr, backend);
  }
  SECTION("dropout") { check_varlen(pk, o, dropout(0.1, 77, 5), nullptr, backend); }
}

TEMPLATE_LIST_TEST_CASE("cuda features: packed sequences under a block mask built for the maximal lengths",
                        "[cuda][native][features][varlen][block_sparse]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  Packed<S, T> pk({200, 64, 131}, {150, 300, 131}, 2, 1, 128);
  RefOptions o;
  o.causal = GENERATE(false, true);
  FeatureOptions x;
  const kfa::BlockMask mask = mixed_mask(pk.max_q, pk.max_k, 64, 64, 2, x);
  check_varlen(pk, o, {}, &mask, which());
}
