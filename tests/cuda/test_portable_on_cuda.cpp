// The portable Kokkos path running on Kokkos::Cuda, and the native kernel compared with it.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "cuda_cases.hpp"

using namespace kfa::test;

TEMPLATE_LIST_TEST_CASE("cuda portable: forward against fp64", "[cuda][portable]", CudaAllCases) {
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{1, 1}, {17, 17}, {129, 127}, {300, 1000}}));
  const std::int64_t d = GENERATE(40, 64, 128, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  check_forward<Kokkos::Cuda, T>({2, sq, sk, 2, 1, d}, o, false, 1.0, kfa::Backend::portable);
}

TEMPLATE_LIST_TEST_CASE("cuda portable: softcap and ALiBi", "[cuda][portable]", CudaAllCases) {
  using T = typename TestType::value;
  RefOptions m;
  m.softcap = 5.0;
  m.alibi = {0.25f, 0.0625f};
  m.causal = GENERATE(false, true);
  check_forward<Kokkos::Cuda, T>({1, 80, 100, 2, 2, 64}, m, false, 3.0);  // automatic: native declines
}

TEMPLATE_LIST_TEST_CASE("cuda native vs portable on the same inputs", "[cuda][native][portable]", CudaTensorCoreCases) {
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(64, 96, 128, 256);
  const bool causal = GENERATE(false, true);
  RefOptions opt;
  opt.causal = causal;
  Problem<Kokkos::Cuda, T> p({2, 333, 517, 4, 2, d}, opt);
  std::vector<double> ref_o, ref_lse, on, ln, op, lp, os, ls;
  reference_forward(p.host, opt, ref_o, ref_lse);
  kfa::Params params = to_params(opt);
  Kokkos::Cuda space;
  p.poison();
  kfa::reference::attention(space, p.q, p.k, p.v, p.o, p.lse, params);
  p.read(os, ls);
  params.backend = native_unless_too_big(d);
  p.poison();
  kfa::forward(space, p.q, p.k, p.v, p.o, p.lse, params);
  p.read(on, ln);
  params.backend = kfa::Backend::portable;
  p.poison();
  kfa::forward(space, p.q, p.k, p.v, p.o, p.lse, params);
  p.read(op, lp);
  const double plain = max_abs_diff(os, ref_o);
  INFO("d " << d << " causal " << causal << ": native err " << max_abs_diff(on, ref_o) << ", portable err "
            << max_abs_diff(op, ref_o) << ", plain err " << plain << ", native vs portable " << max_abs_diff(on, op));
  CHECK(max_abs_diff(on, op) <= 2 * plain + abs_eps<T>());
  CHECK(max_abs_diff(ln, lp) <= 1e-3 * std::max(1.0, max_abs(ref_lse)));
}
