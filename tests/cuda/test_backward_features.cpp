// The native CUDA backward with every feature, through the public API (kfa::backward and
// kfa::backward_varlen), against fp64 gradients with the backward tolerance rule: softcap, ALiBi,
// dropout (the fp64 reference uses the library's Philox mask), packed sequences, block masks, and
// deterministic mode. Each case runs with Backend::native forced (the native backward must take it,
// or the dispatcher throws) and with the automatic choice.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "cuda_cases.hpp"
#include "feature_cases.hpp"
#include "feature_backward.hpp"
#include "varlen_harness.hpp"

using namespace kfa::test;


TEMPLATE_LIST_TEST_CASE("cuda native backward: softcap", "[cuda][native][backward]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  o.softcap = 5.0;
  kfa::Params params = to_params(o);
  params.backend = which();
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({2, 200, 261, 4, 2, d}, o, params, FeatureOptions{}, "softcap backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: ALiBi, causal and not, with GQA", "[cuda][native][backward]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  o.alibi = slopes(4);
  kfa::Params params = to_params(o);
  params.backend = which();
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({2, 261, 200, 4, 1, d}, o, params, FeatureOptions{}, "alibi backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: softcap + ALiBi + window", "[cuda][native][backward]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.softcap = 3.0;
  o.alibi = slopes(4);
  o.window_left = 70;
  o.window_right = 20;
  kfa::Params params = to_params(o);
  params.backend = which();
  check_backward_features<S, T>({1, 300, 300, 4, 4, d}, o, params, FeatureOptions{}, "softcap + alibi + window backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: dropout p = 0.17 with GQA", "[cuda][native][backward][dropout]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{1, 77}, {250, 250}, {129, 300}}));
  const FeatureOptions x = dropout(0.17, rng()(), rng()());
  kfa::Params params = with_dropout(o, x);
  params.backend = which();
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({2, sq, sk, 4, 2, d}, o, params, x, "dropout backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: dropout with softcap and ALiBi", "[cuda][native][backward][dropout]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = true;
  o.softcap = 4.0;
  o.alibi = slopes(2);
  const FeatureOptions x = dropout(0.17, rng()(), rng()());
  kfa::Params params = with_dropout(o, x);
  params.backend = which();
  check_backward_features<S, T>({1, 200, 333, 2, 1, d}, o, params, x, "dropout + softcap + alibi backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: packed sequences with causal, window, softcap",
                        "[cuda][native][backward][varlen]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const kfa::Backend backend = which();
  const bool deterministic = GENERATE(false, true);
  RefOptions o;
  o.causal = GENERATE(false, true);
  // an empty query sequence, an empty key sequence, sequences longer than a tile, odd lengths
  Packed<S, T> pk({37, 0, 300, 5, 129, 1}, {41, 17, 257, 0, 200, 1}, 4, 2, d);
  SECTION("plain") { check_varlen_backward(pk, o, {}, deterministic, backend); }
  SECTION("window + softcap") {
    o.window_left = 50;
    o.softcap = 5.0;
    check_varlen_backward(pk, o, {}, deterministic, backend);
  }
  SECTION("dropout") { check_varlen_backward(pk, o, dropout(0.17, rng()(), rng()()), deterministic, backend); }
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: ALiBi on packed sequences", "[cuda][native][backward][varlen]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  o.alibi = slopes(4);
  Packed<S, T> pk({90, 0, 131, 1, 200}, {77, 50, 131, 20, 333}, 4, 4, d);
  check_varlen_backward(pk, o, {}, GENERATE(false, true), which());
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: block masks of 64 and 128 blocks with partial blocks, causal, GQA",
                        "[cuda][native][backward][block_sparse]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t blk = GENERATE(64, 128);
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  const Dims n{2, 300, 420, 4, 2, d};
  FeatureOptions x;
  const kfa::BlockMask mask = mixed_mask(n.seqlen_q, n.seqlen_k, blk, blk, n.heads, x);
  kfa::Params params = to_params(o);
  params.block_mask = &mask;
  params.backend = which();
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>(n, o, params, x, "block mask backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: block mask + dropout + softcap, rows the mask empties",
                        "[cuda][native][backward][block_sparse][dropout]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.softcap = 4.0;
  FeatureOptions x = dropout(0.17, rng()(), rng()());
  // query block 1 sees nothing (zero dQ there); key blocks alternate per query block
  auto allowed = [](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
    return i / 64 != 1 && (j / 64 + i / 64) % 2 == 0 && (i + 2 * j) % 5 != 0;
  };
  x.allowed = allowed;
  const kfa::BlockMask mask = kfa::BlockMask::from_element_mask({256, 384, 64, 64}, allowed);
  kfa::Params params = with_dropout(o, x);
  params.block_mask = &mask;
  params.backend = which();
  params.deterministic = GENERATE(false, true);
  check_backward_features<S, T>({1, 256, 384, 2, 2, d}, o, params, x, "block mask + dropout + softcap backward");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: deterministic mode over many key tiles, with features",
                        "[cuda][native][backward]", CudaTensorCoreCases) {
  // Ten key tiles of the Hopper kernel add into each dQ row (in key order in deterministic mode), with
  // causal, sliding-window and GQA walks and the score features; check_backward_features runs twice.
  using S = typename TestType::space;
  using T = typename TestType::value;
  // One GENERATE over the cases rather than SECTIONs: Catch2 (3.4) fails a GENERATE
  // that follows SECTIONs (feature_cases.hpp which()) on the last section's run.
  const std::int64_t d = GENERATE(64, 128);
  const int which_case = GENERATE(0, 1, 2);  // no mask + GQA; causal with seqlen_q > seqlen_k; features
  const kfa::Backend backend = which();
  RefOptions o;
  if (which_case == 1) o.causal = true;
  if (which_case == 2) {
    o.window_left = 400;
    o.window_right = 130;
    o.softcap = 5.0;
    o.alibi = slopes(2);
  }
  const bool causal_longer_q = o.causal;
  const FeatureOptions x = o.softcap != 0 ? dropout(0.17, rng()(), rng()()) : FeatureOptions{};
  kfa::Params params = with_dropout(o, x);
  params.backend = backend;
  params.deterministic = true;
  check_backward_features<S, T>({1, causal_longer_q ? 1100 : 600, 1200, 2, 1, d}, o, params, x,
                                "deterministic backward over many key tiles");
}

TEMPLATE_LIST_TEST_CASE("cuda native backward: deterministic mode is bitwise reproducible with features",
                        "[cuda][native][backward]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = true;
  o.softcap = 5.0;
  o.alibi = slopes(4);
  const Dims n{2, 300, 300, 4, 2, d};
  FeatureOptions x = dropout(0.17, rng()(), rng()());
  const kfa::BlockMask mask = mixed_mask(n.seqlen_q, n.seqlen_k, 64, 64, n.heads, x);
  kfa::Params params = with_dropout(o, x);
  params.block_mask = &mask;
  params.deterministic = true;
  params.backend = which();
  BackwardProblem<S, T> p(n, o);
  p.forward(params);
  const HostGrads first = p.backward(params);
  const HostGrads second = p.backward(params);  // poisoned again before the run
  INFO(type_name<T>() << " d" << d);
  // vector equality: a NaN left anywhere (an element not written) fails it too
  CHECK(first.dq == second.dq);
  CHECK(first.dk == second.dk);
  CHECK(first.dv == second.dv);
  // and the result is right
  HostGrads ref;
  reference_backward_features(p.fwd.host, o, x, p.dout_host, ref);
  const std::vector<double>* r[3] = {&ref.dq, &ref.dk, &ref.dv};
  const std::vector<double>* g[3] = {&first.dq, &first.dk, &first.dv};
  const HostGrads plain = p.standard_backward(params);
  const std::vector<double>* s[3] = {&plain.dq, &plain.dk, &plain.dv};
  for (int t = 0; t < 3; ++t) {
    const double e = max_abs_diff(*g[t], *r[t]), pe = max_abs_diff(*s[t], *r[t]);
    INFO("gradient " << t << " error " << e << " (standard " << pe << ")");
    CHECK(e <= 2 * pe + backward_eps<T>() * std::max(1.0, max_abs(*r[t])));
  }
}
