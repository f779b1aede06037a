// The Tensor Core backward (kfa::cuda::backward on raw device buffers) against the fp64 backward with
// the tolerance rule: every head_dim/dtype/causal/GQA combination, odd and unequal lengths, fully
// masked rows, sliding windows, strided layouts with a caller-owned workspace, and deterministic mode
// bitwise stable. Inputs are fresh random values each run (Catch2 seed); outputs are NaN-poisoned.
#include <catch2/catch_get_random_seed.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <random>
#include <tuple>

#include "backward_cuda_check.hpp"

namespace {

using namespace kfa::test::cuda_bwd;
using BackwardTypes = std::tuple<__nv_bfloat16, __half>;

std::mt19937_64& gen() {
  static std::mt19937_64 g(Catch::getSeed());
  return g;
}

template <class T>
void expect_pass(const Case& c) {
  const CaseResult r = check_case<T>(c, gen());
  INFO(r.line);
  CHECK(r.ok);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("cuda backward: head_dim, causal and GQA/MQA", "[cuda][native][backward]", BackwardTypes) {
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {4, 1}}));
  const bool causal = GENERATE(false, true);
  expect_pass<TestType>(Case{2, 150, 150, heads, heads_kv, d, causal});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: odd sequence lengths", "[cuda][native][backward]", BackwardTypes) {
  const std::int64_t n = GENERATE(1, 17, 129, 1000);
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const bool causal = GENERATE(false, true);
  expect_pass<TestType>(Case{1, n, n, 2, 1, d, causal});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: long sequence", "[cuda][native][backward]", BackwardTypes) {
  const std::int64_t d = GENERATE(64, 256);
  expect_pass<TestType>(Case{1, 4097, 4097, 1, 1, d, true});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: seqlen_q != seqlen_k, fully masked rows give zero gradients",
                        "[cuda][native][backward]", BackwardTypes) {
  // causal with more queries than keys: the first seqlen_q - seqlen_k rows see no key (lse = -inf)
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{50, 130}, {200, 77}, {1, 257}, {257, 1}, {17, 4097}}));
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const bool causal = GENERATE(false, true);
  expect_pass<TestType>(Case{2, sq, sk, 2, 1, d, causal});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: sliding windows", "[cuda][native][backward]", BackwardTypes) {
  const std::int64_t wl = GENERATE(0, 20, 130);
  const std::int64_t wr = GENERATE(-1, 0, 7);
  const std::int64_t d = GENERATE(64, 256);
  expect_pass<TestType>(Case{1, 300, 280, 2, 1, d, false, wl, wr});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: large scores", "[cuda][native][backward]", BackwardTypes) {
  expect_pass<TestType>(Case{1, 384, 384, 2, 2, 64, false, -1, -1, false, 3.0});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: [b, h, s, d] strides, strided lse, caller-owned workspace",
                        "[cuda][native][backward]", BackwardTypes) {
  const bool deterministic = GENERATE(false, true);
  expect_pass<TestType>(Case{2, 129, 200, 4, 2, 128, true, -1, -1, true, 1.0, deterministic});
}

TEMPLATE_LIST_TEST_CASE("cuda backward: deterministic mode is bitwise stable", "[cuda][native][backward]",
                        BackwardTypes) {
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const bool causal = GENERATE(false, true);
  // check_case repeats a deterministic call three times and compares the bytes of dq, dk and dv
  expect_pass<TestType>(Case{1, 300, 300, 4, 2, d, causal, -1, -1, false, 1.0, true});
}

TEST_CASE("cuda backward: cases it does not take are declined", "[cuda][native][backward]") {
  BackwardArgs a;
  a.dtype = DType::bf16;
  a.shape = Shape{1, 64, 64, 2, 2, 64};
  alignas(16) static unsigned char dummy[16];
  const Tensor4 t{dummy, 64 * 2 * 64, 2 * 64, 64};
  a.q = a.k = a.v = a.o = a.dout = a.dq = a.dk = a.dv = t;
  a.score.scale = 0.125;
  CHECK(kfa::cuda::supports_backward(a));
  auto declined = [&](auto change) {
    BackwardArgs b = a;
    change(b);
    return !kfa::cuda::supports_backward(b);
  };
  CHECK(declined([](BackwardArgs& b) { b.dtype = DType::f32; }));
  CHECK(declined([](BackwardArgs& b) { b.shape.head_dim = 80; }));  // no instance
  CHECK(declined([](BackwardArgs& b) { b.shape.heads_kv = 3; }));
  CHECK(declined([](BackwardArgs& b) { b.q.stride_s += 1; }));  // rows not 16-byte aligned
  static const float slopes[2] = {0.5f, 0.25f};
  // the features are taken (tests/cuda/test_backward_features.cpp checks them) ...
  CHECK(!declined([](BackwardArgs& b) { b.score.softcap = 30.0f; }));
  CHECK(!declined([](BackwardArgs& b) { b.score.dropout_p = 0.1f; }));
  CHECK(!declined([](BackwardArgs& b) { b.score.alibi_slopes = slopes; }));
  // ... except softcap / ALiBi without a positive scale, and block sizes other than 64, 128, 256
  CHECK(declined([](BackwardArgs& b) {
    b.score.softcap = 30.0f;
    b.score.scale = -0.125;
  }));
  CHECK(declined([](BackwardArgs& b) {
    b.score.alibi_slopes = slopes;
    b.score.scale = 0.0;
  }));
  static const std::int32_t row_ptr[2] = {0, 0};
  CHECK(declined([](BackwardArgs& b) {
    b.score.blocks.row_ptr = row_ptr;
    b.score.blocks.block_q = 32;
    b.score.blocks.block_k = 64;
  }));
}
