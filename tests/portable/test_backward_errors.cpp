// Backward bad input: a kfa::Error naming the problem, and nothing written. Caller-owned workspace.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cstring>

#include "backward_harness.hpp"
#include "spaces.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;
using S = Kokkos::DefaultHostExecutionSpace;
using Mem = S::memory_space;
using V4 = Kokkos::View<float****, Mem>;
using L3 = Kokkos::View<float***, Mem>;

namespace {

V4 filled(const char* name, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) {
  V4 v(name, b, s, h, d);
  Kokkos::deep_copy(v, 0.5f);
  return v;
}

/// A valid call's arguments; the gradients hold a sentinel that must survive a rejected call.
struct Call {
  V4 q = filled("q", 2, 8, 4, 16), k = filled("k", 2, 6, 2, 16), v = filled("v", 2, 6, 2, 16);
  V4 o = filled("o", 2, 8, 4, 16), dout = filled("dout", 2, 8, 4, 16);
  L3 lse{"lse", 2, 4, 8};
  V4 dq{"dq", 2, 8, 4, 16}, dk{"dk", 2, 6, 2, 16}, dv{"dv", 2, 6, 2, 16};
  Call() {
    Kokkos::deep_copy(dq, 7.0f);
    Kokkos::deep_copy(dk, 7.0f);
    Kokkos::deep_copy(dv, 7.0f);
  }
  bool untouched() const {
    for (const V4* g : {&dq, &dk, &dv})
      for (std::size_t i = 0; i < g->span(); ++i)
        if (g->data()[i] != 7.0f) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("backward errors: shapes of every argument are checked by name", "[backward][errors]") {
  Call c;
  V4 bad_q_like("x", 2, 8, 4, 8), bad_k_like("x", 2, 6, 2, 8);
  CHECK_THROWS_WITH(kfa::backward(S(), bad_q_like, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv),
                    ContainsSubstring("dout has extents [2, 8, 4, 8]"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, bad_q_like, c.lse, c.dq, c.dk, c.dv),
                    ContainsSubstring("out has extents"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, L3("l", 2, 8, 4), c.dq, c.dk, c.dv),
                    ContainsSubstring("lse has extents"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, bad_q_like, c.dk, c.dv),
                    ContainsSubstring("dq has extents"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, bad_k_like, c.dv),
                    ContainsSubstring("dk has extents") && ContainsSubstring("heads_kv"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, V4("x", 2, 8, 2, 16)),
                    ContainsSubstring("dv has extents"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, filled("k", 2, 6, 3, 16), filled("v", 2, 6, 3, 16), c.o, c.lse,
                                  c.dq, V4("dk", 2, 6, 3, 16), V4("dv", 2, 6, 3, 16)),
                    ContainsSubstring("multiple of heads_kv"));
  Kokkos::View<float****, Kokkos::LayoutLeft, Mem> dq_left("dq", 2, 8, 4, 16);
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, dq_left, c.dk, c.dv),
                    ContainsSubstring("dq: the last dimension must have unit stride"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, V4(), c.dk, c.dv),
                    ContainsSubstring("dq is not allocated"));
  CHECK(c.untouched());
}

TEST_CASE("backward errors: gradients that alias other arguments", "[backward][errors]") {
  Call c;
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.q, c.dk, c.dv),
                    ContainsSubstring("dq and q overlap"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dout, c.dk, c.dv),
                    ContainsSubstring("dq and dout overlap"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dk),
                    ContainsSubstring("dk and dv overlap"));
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.v, c.dv),
                    ContainsSubstring("dk and v overlap"));
  Kokkos::View<float***, Kokkos::LayoutRight, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> lse_in_dq(c.dq.data(), 2,
                                                                                                      4, 8);
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, lse_in_dq, c.dq, c.dk, c.dv),
                    ContainsSubstring("dq and lse overlap"));
  CHECK(c.untouched());
}

TEST_CASE("backward errors: invalid options and workspace", "[backward][errors]") {
  Call c;
  kfa::Params p;
  p.alibi_slopes = {0.1f, 0.2f};
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p),
                    ContainsSubstring("alibi_slopes has 2 entries"));
  p = {};
  p.dropout_p = 1.5;
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p),
                    ContainsSubstring("dropout_p must be in [0, 1)"));
  p = {};
  p.window_right = -2;
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p),
                    ContainsSubstring("window"));
  p = {};
  p.backend = kfa::Backend::native;
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p),
                    ContainsSubstring("no native backward kernel"));
  p = {};
  const std::size_t need = kfa::backward_workspace_bytes(c.q, c.k, p);
  Kokkos::View<char*, Mem> small("ws", need - 1);
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p, small),
                    ContainsSubstring("workspace has " + std::to_string(need - 1) + " bytes"));
  Kokkos::View<char*, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> ws_in_dk(reinterpret_cast<char*>(c.dk.data()),
                                                                             need);
  CHECK_THROWS_WITH(kfa::backward(S(), c.dout, c.q, c.k, c.v, c.o, c.lse, c.dq, c.dk, c.dv, p, ws_in_dk),
                    ContainsSubstring("workspace and") && ContainsSubstring("overlap"));
  CHECK(c.untouched());
}

TEMPLATE_LIST_TEST_CASE("backward: a caller-owned workspace of backward_workspace_bytes gives the same gradients",
                        "[backward][workspace]", HostCases) {
  using Space = typename TestType::space;
  using T = typename TestType::value;
  RefOptions o;
  o.causal = true;
  o.alibi = {0.5f, 0.25f, 0.125f, 0.0625f};
  const bool deterministic = GENERATE(false, true);
  BackwardProblem<Space, T> p({2, 70, 90, 4, 2, 32}, o);
  kfa::Params params = to_params(o);
  params.deterministic = deterministic;
  p.forward(params);
  const std::size_t bytes = kfa::backward_workspace_bytes(p.fwd.q, p.fwd.k, params);
  // O(N * d): D, the dQ accumulator, when deterministic one int32 count per 64 query rows of a head,
  // and the slopes, each 256-byte aligned
  const std::size_t acc = std::is_same_v<T, double> ? 8 : 4;
  const std::size_t want = 2 * 4 * 70 * acc + 2 * 4 * 70 * 32 * acc + (deterministic ? 2 * 4 * 2 * 4 : 0) + 4 * 4;
  CHECK(bytes >= want);
  CHECK(bytes <= want + 4 * 256);
  const HostGrads own = p.backward(params);
  Kokkos::View<std::uint64_t*, typename Space::memory_space> ws("ws", (bytes + 7) / 8);
  Kokkos::deep_copy(ws, ~std::uint64_t(0));  // a dirty workspace must not matter
  p.poison();
  kfa::backward(Space(), p.dout, p.fwd.q, p.fwd.k, p.fwd.v, p.fwd.o, p.fwd.lse, p.dq, p.dk, p.dv, params, ws);
  Space().fence();
  const HostGrads given = p.read();
  const std::vector<double>* a[3] = {&own.dq, &own.dk, &own.dv};
  const std::vector<double>* b[3] = {&given.dq, &given.dk, &given.dv};
  const HostGrads ref = reference_backward(p.fwd.host, p.dout_host, o);
  const std::vector<double>* r[3] = {&ref.dq, &ref.dk, &ref.dv};
  for (int t = 0; t < 3; ++t) {
    if (deterministic) CHECK(*a[t] == *b[t]);
    // either way both are close to fp64 (within what the harness's grid tests establish for kfa)
    CHECK(max_abs_diff(*b[t], *r[t]) <= 2 * max_abs_diff(*a[t], *r[t]) + abs_eps<T>() * 100);
  }
}

TEST_CASE("backward: LayoutRight views and Views of const inputs", "[backward]") {
  RefOptions o;
  o.causal = true;
  BackwardProblem<S, float> p({1, 40, 50, 2, 1, 16}, o);
  kfa::Params params = to_params(o);
  params.deterministic = true;
  p.forward(params);
  const HostGrads strided = p.backward(params);
  using C4 = Kokkos::View<const float****, Mem>;
  auto copy = [](const auto& src, const char* name) {
    Kokkos::View<float****, Mem> dst(name, src.extent(0), src.extent(1), src.extent(2), src.extent(3));
    Kokkos::deep_copy(dst, src);
    return dst;
  };
  const C4 q = copy(p.fwd.q, "q"), k = copy(p.fwd.k, "k"), v = copy(p.fwd.v, "v"), out = copy(p.fwd.o, "o"),
           dout = copy(p.dout, "dout");
  Kokkos::View<float***, Mem> lse_rw("lse", 1, 2, 40);
  Kokkos::deep_copy(lse_rw, p.fwd.lse);
  const Kokkos::View<const float***, Mem> lse = lse_rw;
  Kokkos::View<float****, Mem> dq("dq", 1, 40, 2, 16), dk("dk", 1, 50, 1, 16), dv("dv", 1, 50, 1, 16);
  Kokkos::deep_copy(dq, std::numeric_limits<float>::quiet_NaN());
  kfa::backward(S(), dout, q, k, v, out, lse, dq, dk, dv, params);
  S().fence();
  CHECK(read4(dq) == strided.dq);
  CHECK(read4(dk) == strided.dk);
  CHECK(read4(dv) == strided.dv);
}
