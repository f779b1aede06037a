// Cases the Tensor Core forward declines: forcing it throws kfa::Error before anything is written,
// and the automatic choice falls back to the portable path with a correct result.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include "cuda_cases.hpp"

using namespace kfa::test;

namespace {

/// Forces the native path and expects kfa::Error with the outputs still poisoned.
template <class T>
void expect_declined(const Dims& n, const RefOptions& opt, bool bhsd = false) {
  Problem<Kokkos::Cuda, T> p(n, opt, bhsd);
  kfa::Params params = to_params(opt);
  params.backend = kfa::Backend::native;
  p.poison();
  REQUIRE_THROWS_AS(kfa::forward(Kokkos::Cuda(), p.q, p.k, p.v, p.o, p.lse, params), kfa::Error);
  std::vector<double> o, lse;
  p.read(o, lse);
  for (double x : o) REQUIRE(std::isnan(x));
  for (double x : lse) REQUIRE(std::isnan(x));
  check_forward<Kokkos::Cuda, T>(n, opt, bhsd);  // automatic: the portable path, still correct
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("cuda native declines head_dim without a kernel", "[cuda][errors]", CudaTensorCoreCases) {
  expect_declined<typename TestType::value>({1, 40, 50, 2, 1, 80}, RefOptions{});
  expect_declined<typename TestType::value>({1, 40, 50, 2, 1, 32}, RefOptions{0, true});
}

TEST_CASE("cuda native declines float and double", "[cuda][errors]") {
  expect_declined<float>({1, 40, 40, 2, 2, 64}, RefOptions{});
  expect_declined<double>({1, 40, 40, 2, 2, 64}, RefOptions{});
}

TEST_CASE("cuda native declines rows that are not 16-byte aligned", "[cuda][errors]") {
  // q as a [1, 50, 1, 64] view whose rows are 68 elements apart (136 bytes)
  using T = kfa::test::bhalf;
  Problem<Kokkos::Cuda, T> p({1, 50, 50, 1, 1, 64}, RefOptions{});
  Kokkos::View<T*, Kokkos::CudaSpace> buf("q", 50 * 68);
  Kokkos::View<T****, Kokkos::LayoutStride, Kokkos::CudaSpace> q(buf.data(),
                                                                Kokkos::LayoutStride(1, 50 * 68, 50, 68, 1, 68, 64, 1));
  kfa::Params params;
  params.backend = kfa::Backend::native;
  REQUIRE_THROWS_AS(kfa::forward(Kokkos::Cuda(), q, p.k, p.v, p.o, p.lse, params), kfa::Error);
}

TEST_CASE("cuda: invalid shapes are rejected", "[cuda][errors]") {
  using T = kfa::test::bhalf;
  Problem<Kokkos::Cuda, T> p({1, 40, 40, 3, 2, 64}, RefOptions{});  // heads not a multiple of heads_kv
  p.poison();
  REQUIRE_THROWS_AS(kfa::forward(Kokkos::Cuda(), p.q, p.k, p.v, p.o, p.lse), kfa::Error);
  std::vector<double> o, lse;
  p.read(o, lse);
  for (double x : o) REQUIRE(std::isnan(x));
}
