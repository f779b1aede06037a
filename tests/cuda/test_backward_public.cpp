// kfa::backward on Kokkos::Cuda through the public API: the dispatcher runs the Tensor Core backward
// where it supports the case (half/bfloat16, head_dim 64 and 128) and the portable one elsewhere.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "backward_harness.hpp"
#include "cuda_cases.hpp"

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE("cuda backward (public API): head_dim, causal, GQA, deterministic", "[cuda][backward]",
                        CudaTensorCoreCases) {
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 128, 96, 256);
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 1}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  const bool deterministic = GENERATE(false, true);
  check_backward<Kokkos::Cuda, T>({2, 150, 130, heads, heads_kv, d}, o, false, 1.0, deterministic);
}

TEMPLATE_LIST_TEST_CASE("cuda backward (public API): odd lengths and strided layout", "[cuda][backward]",
                        CudaTensorCoreCases) {
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{1, 129}, {129, 1}, {200, 77}, {1000, 1000}}));
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_backward<Kokkos::Cuda, T>({1, sq, sk, 2, 1, 64}, o, true);
}
