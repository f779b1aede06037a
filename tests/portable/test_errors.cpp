// Bad input: a kfa::Error naming the problem, and nothing written.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "spaces.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;
using S = Kokkos::DefaultHostExecutionSpace;
using Mem = S::memory_space;
using V4 = Kokkos::View<float****, Mem>;
using L3 = Kokkos::View<float***, Mem>;

namespace {

struct Sentinel {
  V4 o{"o", 2, 8, 4, 16};
  L3 lse{"lse", 2, 4, 8};
  Sentinel() {
    Kokkos::deep_copy(o, 7.0f);
    Kokkos::deep_copy(lse, 7.0f);
  }
  bool untouched() const {
    for (std::size_t i = 0; i < o.span(); ++i)
      if (o.data()[i] != 7.0f) return false;
    for (std::size_t i = 0; i < lse.span(); ++i)
      if (lse.data()[i] != 7.0f) return false;
    return true;
  }
};

V4 filled(const char* name, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) {
  V4 v(name, b, s, h, d);
  Kokkos::deep_copy(v, 0.5f);
  return v;
}

}  // namespace

TEST_CASE("errors: shape mismatches name the argument and the expected shape", "[errors]") {
  Sentinel out;
  V4 q = filled("q", 2, 8, 4, 16), k = filled("k", 2, 8, 4, 16), v = filled("v", 2, 8, 4, 16);
  V4 k_bad_d = filled("k", 2, 8, 4, 8), v_bad_s = filled("v", 2, 9, 4, 16), k_bad_h = filled("k", 2, 8, 3, 16);
  CHECK_THROWS_WITH(kfa::forward(S(), q, k_bad_d, v, out.o, out.lse),
                    ContainsSubstring("k has extents [2, 8, 4, 8]") && ContainsSubstring("head_dim"));
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v_bad_s, out.o, out.lse), ContainsSubstring("v has extents"));
  CHECK_THROWS_WITH(kfa::forward(S(), q, k_bad_h, filled("v", 2, 8, 3, 16), out.o, out.lse),
                    ContainsSubstring("multiple of heads_kv"));
  V4 o_bad("o", 2, 8, 4, 8);
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, o_bad, out.lse), ContainsSubstring("o has extents"));
  L3 lse_bad("lse", 2, 8, 4);
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, lse_bad), ContainsSubstring("lse has extents"));
  Kokkos::View<float***, Mem> q3("q3", 2, 8, 16);
  CHECK_THROWS_WITH(kfa::forward(S(), q3, k, v, out.o, out.lse), ContainsSubstring("q must have rank 4"));
  CHECK(out.untouched());
}

TEST_CASE("errors: empty sizes and unsupported head_dim and bad layout", "[errors]") {
  Sentinel out;
  V4 k = filled("k", 2, 8, 4, 16), v = filled("v", 2, 8, 4, 16);
  CHECK_THROWS_WITH(kfa::forward(S(), V4("q", 2, 0, 4, 16), k, v, out.o, out.lse), ContainsSubstring("empty"));
  CHECK_THROWS_WITH(kfa::forward(S(), filled("q", 2, 8, 4, 16), V4("k", 2, 0, 4, 16), V4("v", 2, 0, 4, 16), out.o,
                                 out.lse),
                    ContainsSubstring("empty"));
  V4 big = filled("q", 1, 4, 1, 300);
  V4 o_big("o", 1, 4, 1, 300);
  L3 l_big("l", 1, 1, 4);
  Kokkos::deep_copy(o_big, 7.0f);
  CHECK_THROWS_WITH(kfa::forward(S(), big, big, big, o_big, l_big), ContainsSubstring("head_dim 300"));
  for (std::size_t i = 0; i < o_big.span(); ++i) REQUIRE(o_big.data()[i] == 7.0f);
  // a LayoutLeft View has a non-unit stride in its last dimension
  Kokkos::View<float****, Kokkos::LayoutLeft, Mem> q_left("q", 2, 8, 4, 16);
  CHECK_THROWS_WITH(kfa::forward(S(), q_left, k, v, out.o, out.lse), ContainsSubstring("unit stride"));
  CHECK(out.untouched());
}

TEST_CASE("errors: outputs that alias inputs", "[errors]") {
  V4 q = filled("q", 2, 8, 4, 16), k = filled("k", 2, 8, 4, 16), v = filled("v", 2, 8, 4, 16);
  L3 lse("lse", 2, 4, 8);
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, q, lse), ContainsSubstring("o and q overlap"));
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, v, lse), ContainsSubstring("o and v overlap"));
  Kokkos::View<float***, Kokkos::LayoutRight, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> lse_in_k(k.data(), 2, 4, 8);
  V4 o("o", 2, 8, 4, 16);
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, o, lse_in_k), ContainsSubstring("lse and k overlap"));
  for (std::size_t i = 0; i < q.span(); ++i) REQUIRE(q.data()[i] == 0.5f);
}

TEST_CASE("errors: invalid options", "[errors]") {
  Sentinel out;
  V4 q = filled("q", 2, 8, 4, 16), k = filled("k", 2, 8, 4, 16), v = filled("v", 2, 8, 4, 16);
  kfa::Params p;
  p.alibi_slopes = {0.1f, 0.2f};
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("alibi_slopes has 2 entries"));
  p = {};
  p.window_left = -3;
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("window"));
  p = {};
  p.dropout_p = 1.0;
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("dropout_p"));
  p = {};
  p.softcap = -1;
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("softcap"));
  p = {};
  p.softmax_scale = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("softmax_scale"));
  p = {};
  p.backend = kfa::Backend::native;
  CHECK_THROWS_WITH(kfa::forward(S(), q, k, v, out.o, out.lse, p), ContainsSubstring("no native kernel"));
  CHECK(out.untouched());
}
