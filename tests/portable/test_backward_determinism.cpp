// params.deterministic: identical bits from run to run, whatever the thread count or host backend.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cstring>

#include "backward_harness.hpp"
#include "spaces.hpp"

using namespace kfa::test;

namespace {

template <class T, class Mem>
bool same_bits(const Kokkos::View<T*, Mem>& a, const Kokkos::View<T*, Mem>& b) {
  auto ha = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a);
  auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  return std::memcmp(ha.data(), hb.data(), ha.size() * sizeof(T)) == 0;
}

template <class P, class Buffers>
void snapshot(const P& p, Buffers& out) {
  Kokkos::deep_copy(out[0], p.dqb);
  Kokkos::deep_copy(out[1], p.dkb);
  Kokkos::deep_copy(out[2], p.dvb);
}

}  // namespace

#ifdef KOKKOS_ENABLE_OPENMP
TEMPLATE_LIST_TEST_CASE("backward: deterministic mode gives the same bits across runs, thread counts and backends",
                        "[backward][deterministic]", AllTypes<Kokkos::OpenMP>) {
  using T = typename TestType::value;
  using Mem = Kokkos::HostSpace;
  RefOptions o;
  o.causal = GENERATE(false, true);
  BackwardProblem<Kokkos::OpenMP, T> p({2, 150, 140, 4, 2, 64}, o);
  kfa::Params params = to_params(o);
  params.deterministic = true;
  p.forward(params);
  using Buf = Kokkos::View<T*, Mem>;
  auto make = [&] {
    return std::array<Buf, 3>{Buf("dq", p.dqb.size()), Buf("dk", p.dkb.size()), Buf("dv", p.dvb.size())};
  };
  auto first = make(), now = make();
  p.backward(params);
  snapshot(p, first);
  auto same = [&](const char* what) {
    snapshot(p, now);
    INFO(what);
    for (int t = 0; t < 3; ++t) CHECK(same_bits(first[t], now[t]));
  };
  p.backward(params);
  same("a second run on the default OpenMP instance");
  INFO("default OpenMP concurrency " << Kokkos::OpenMP().concurrency());
  p.backward(params, Kokkos::OpenMP(1));
  same("an OpenMP instance of one thread");
#ifdef KOKKOS_ENABLE_SERIAL
  p.backward(params, Kokkos::Serial());
  same("Kokkos::Serial");
#endif
  // the same problem without params.deterministic is still right (the harness checks it)
  check_backward<Kokkos::OpenMP, T>({2, 150, 140, 4, 2, 64}, o, false, 1.0, false);
}
#endif
