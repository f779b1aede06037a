// A reduced sweep for compute-sanitizer (memcheck, racecheck): small problems that still cover
// every kernel instantiation, tile remainders, causal masks and GQA. Run with the tag [sanitize].
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "cuda_cases.hpp"

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE("cuda sanitize: native forward, small shapes", "[cuda][sanitize]", CudaTensorCoreCases) {
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<Kokkos::Cuda, T>({1, 131, 77, 2, 1, d}, o, false, 1.0, native_unless_too_big(d));
}

TEST_CASE("cuda sanitize: portable forward on the GPU", "[cuda][sanitize]") {
  RefOptions o;
  o.causal = true;
  check_forward<Kokkos::Cuda, bhalf>({1, 70, 90, 2, 1, 64}, o, false, 1.0, kfa::Backend::portable);
}
