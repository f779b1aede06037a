// Ring attention over MPI (kfa::distributed) on host ranks: every rank builds the same global q, k, v,
// dout (a seed from rank 0), runs the ring on its slice (contiguous with uneven lengths, or zigzag) and
// checks its slice of o, lse, dq, dk, dv against the fp64 reference on the whole sequence with the
// tolerance rule (at most 2x the error of the plain unfused attention in the same precision, plus a tiny
// epsilon); outputs are NaN-poisoned first. Run under mpirun with any number of ranks.
#include <mpi.h>

#include <catch2/catch_session.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kfa/distributed.hpp"
#include "kfa/reference.hpp"

namespace {

using Host = Kokkos::DefaultHostExecutionSpace;
template <class T>
using V4 = Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace>;
template <class T>
using V3 = Kokkos::View<T***, Kokkos::LayoutRight, Kokkos::HostSpace>;
using kfa::distributed::RingLayout;

int rank() {
  int r;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int ranks() {
  int p;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

std::uint64_t shared_seed() {
  std::uint64_t s = std::random_device{}();
  MPI_Bcast(&s, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return s;
}

struct Case {
  std::int64_t batch, heads, heads_kv, head_dim;
  bool causal;
  RingLayout layout;
  double softcap = 0.0;
};

/// The global position of every row of rank r's slice.
std::vector<std::int64_t> positions(const Case& c, const std::vector<std::int64_t>& lengths, int r) {
  const int P = static_cast<int>(lengths.size());
  std::vector<std::int64_t> pos;
  if (c.layout == RingLayout::contiguous) {
    std::int64_t off = 0;
    for (int s = 0; s < r; ++s) off += lengths[s];
    for (std::int64_t i = 0; i < lengths[r]; ++i) pos.push_back(off + i);
  } else {
    const std::int64_t half = lengths[r] / 2;
    for (std::int64_t i = 0; i < half; ++i) pos.push_back(r * half + i);
    for (std::int64_t i = 0; i < half; ++i) pos.push_back((2 * std::int64_t(P) - 1 - r) * half + i);
  }
  return pos;
}

template <class T, class S>
V4<T> gather_rows(const V4<S>& g, const std::vector<std::int64_t>& pos) {
  V4<T> x("slice", g.extent(0), pos.size(), g.extent(2), g.extent(3));
  for (std::size_t b = 0; b < g.extent(0); ++b)
    for (std::size_t i = 0; i < pos.size(); ++i)
      for (std::size_t h = 0; h < g.extent(2); ++h)
        for (std::size_t d = 0; d < g.extent(3); ++d) x(b, i, h, d) = static_cast<T>(g(b, pos[i], h, d));
  return x;
}

template <class T>
V4<T> cast(const V4<double>& g) {
  V4<T> x("cast", g.extent(0), g.extent(1), g.extent(2), g.extent(3));
  for (std::size_t i = 0; i < g.span(); ++i) x.data()[i] = static_cast<T>(g.data()[i]);
  return x;
}

/// max |a(b, i, h, d) - ref(b, pos[i], h, d)| over the slice (inf when a is not finite).
template <class A>
double err4(const A& a, const V4<double>& ref, const std::vector<std::int64_t>& pos) {
  double m = 0;
  for (std::size_t b = 0; b < a.extent(0); ++b)
    for (std::size_t i = 0; i < pos.size(); ++i)
      for (std::size_t h = 0; h < a.extent(2); ++h)
        for (std::size_t d = 0; d < a.extent(3); ++d) {
          const double x = static_cast<double>(a(b, i, h, d));
          if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
          m = std::max(m, std::abs(x - ref(b, pos[i], h, d)));
        }
  return m;
}
template <class A>
double err3(const A& a, const V3<double>& ref, const std::vector<std::int64_t>& pos) {
  double m = 0;
  for (std::size_t b = 0; b < a.extent(0); ++b)
    for (std::size_t h = 0; h < a.extent(1); ++h)
      for (std::size_t i = 0; i < pos.size(); ++i) {
        const double x = static_cast<double>(a(b, h, i));
        if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
        m = std::max(m, std::abs(x - ref(b, h, pos[i])));
      }
  return m;
}

template <class T>
void check_ring(const Case& c, const std::vector<std::int64_t>& lengths) {
  const int r = rank();
  std::int64_t n = 0;
  for (auto l : lengths) n += l;
  std::mt19937_64 gen(shared_seed());
  std::normal_distribution<double> dist(0.0, 1.0);
  auto randn = [&](std::int64_t h) {
    V4<double> x("global", c.batch, n, h, c.head_dim);
    for (std::size_t i = 0; i < x.span(); ++i) x.data()[i] = static_cast<double>(static_cast<T>(dist(gen)));
    return x;
  };
  const V4<double> q = randn(c.heads), k = randn(c.heads_kv), v = randn(c.heads_kv), dout = randn(c.heads);
  kfa::Params p;
  p.causal = c.causal;
  p.softcap = c.softcap;

  // fp64 reference and the plain attention in T, on the whole sequence
  V4<double> o_ref("o", c.batch, n, c.heads, c.head_dim), dq_ref("dq", c.batch, n, c.heads, c.head_dim);
  V4<double> dk_ref("dk", c.batch, n, c.heads_kv, c.head_dim), dv_ref("dv", c.batch, n, c.heads_kv, c.head_dim);
  V3<double> lse_ref("lse", c.batch, c.heads, n);
  kfa::reference::attention(Host(), q, k, v, o_ref, lse_ref, p);
  kfa::reference::attention_backward(Host(), dout, q, k, v, o_ref, lse_ref, dq_ref, dk_ref, dv_ref, p);
  const V4<T> qt = cast<T>(q), kt = cast<T>(k), vt = cast<T>(v), dt = cast<T>(dout);
  V4<T> o_pl("o", c.batch, n, c.heads, c.head_dim), dq_pl("dq", c.batch, n, c.heads, c.head_dim);
  V4<T> dk_pl("dk", c.batch, n, c.heads_kv, c.head_dim), dv_pl("dv", c.batch, n, c.heads_kv, c.head_dim);
  V3<kfa::lse_type<T>> lse_pl("lse", c.batch, c.heads, n);
  kfa::reference::attention(Host(), qt, kt, vt, o_pl, lse_pl, p);
  kfa::reference::attention_backward(Host(), dt, qt, kt, vt, o_pl, lse_pl, dq_pl, dk_pl, dv_pl, p);
  Host().fence();

  // this rank's slice through the ring
  const std::vector<std::int64_t> pos = positions(c, lengths, r);
  std::vector<std::int64_t> all(n);
  for (std::int64_t i = 0; i < n; ++i) all[i] = i;
  const V4<T> ql = gather_rows<T>(q, pos), kl = gather_rows<T>(k, pos), vl = gather_rows<T>(v, pos),
              dl = gather_rows<T>(dout, pos);
  const std::int64_t nl = static_cast<std::int64_t>(pos.size());
  const T nan = static_cast<T>(std::numeric_limits<double>::quiet_NaN());
  V4<T> o("o", c.batch, nl, c.heads, c.head_dim), dq("dq", c.batch, nl, c.heads, c.head_dim);
  V4<T> dk("dk", c.batch, nl, c.heads_kv, c.head_dim), dv("dv", c.batch, nl, c.heads_kv, c.head_dim);
  V3<kfa::lse_type<T>> lse("lse", c.batch, c.heads, nl);
  for (auto* x : {&o, &dq, &dk, &dv}) Kokkos::deep_copy(*x, nan);
  Kokkos::deep_copy(lse, static_cast<kfa::lse_type<T>>(nan));
  const kfa::distributed::RingOptions opt{c.layout};
  kfa::distributed::ring_attention_forward(MPI_COMM_WORLD, Host(), ql, kl, vl, o, lse, p, opt);
  kfa::distributed::ring_attention_backward(MPI_COMM_WORLD, Host(), dl, ql, kl, vl, o, lse, dq, dk, dv, p, opt);
  Host().fence();

  const double eps = std::is_same_v<T, double> ? 1e-12 : 1e-6;
  struct Out {
    const char* name;
    double err, bound;
  };
  const Out outs[] = {
      {"o", err4(o, o_ref, pos), 2 * err4(o_pl, o_ref, all) + eps},
      {"lse", err3(lse, lse_ref, pos), 2 * err3(lse_pl, lse_ref, all) + eps},
      {"dq", err4(dq, dq_ref, pos), 2 * err4(dq_pl, dq_ref, all) + eps},
      {"dk", err4(dk, dk_ref, pos), 2 * err4(dk_pl, dk_ref, all) + eps},
      {"dv", err4(dv, dv_ref, pos), 2 * err4(dv_pl, dv_ref, all) + eps},
  };
  for (const Out& x : outs) {
    INFO("rank " << r << " of " << ranks() << ", " << x.name << ": error " << x.err << ", bound " << x.bound
                 << " (causal " << c.causal << ", layout " << int(c.layout) << ", heads " << c.heads << "/"
                 << c.heads_kv << ")");
    CHECK(x.err <= x.bound);
  }
}

using Types = std::tuple<float, double>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("ring attention: contiguous slices of uneven length, causal and not, GQA", "[ring]", Types) {
  const int P = ranks();
  std::vector<std::int64_t> lengths;
  for (int r = 0; r < P; ++r) lengths.push_back(23 + 7 * r);  // 23, 30, 37, ...
  const bool causal = GENERATE(false, true);
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {4, 1}}));
  check_ring<TestType>(Case{2, heads, heads_kv, 32, causal, RingLayout::contiguous}, lengths);
}

TEMPLATE_LIST_TEST_CASE("ring attention: zigzag layout", "[ring]", Types) {
  const std::vector<std::int64_t> lengths(ranks(), 34);
  const bool causal = GENERATE(false, true);
  check_ring<TestType>(Case{1, 4, 2, 32, causal, RingLayout::zigzag}, lengths);
}

TEST_CASE("ring attention: softcap; a rank with an empty slice", "[ring]") {
  std::vector<std::int64_t> lengths(ranks(), 20);
  if (ranks() > 1) lengths[1] = 0;
  check_ring<double>(Case{1, 2, 1, 16, true, RingLayout::contiguous, 5.0}, lengths);
}

TEST_CASE("ring attention: options it does not take, and mismatched slices, are errors on every rank", "[ring]") {
  V4<double> q("q", 1, 8, 2, 16), o("o", 1, 8, 2, 16);
  V3<double> lse("lse", 1, 2, 8);
  kfa::Params p;
  p.window_left = 4;
  CHECK_THROWS_AS(kfa::distributed::ring_attention_forward(MPI_COMM_WORLD, Host(), q, q, q, o, lse, p), kfa::Error);
  kfa::Params ok;
  kfa::distributed::RingOptions zig{RingLayout::zigzag};
  V4<double> odd("odd", 1, 7, 2, 16), oo("o", 1, 7, 2, 16);
  V3<double> lo("lse", 1, 2, 7);
  CHECK_THROWS_AS(kfa::distributed::ring_attention_forward(MPI_COMM_WORLD, Host(), odd, odd, odd, oo, lo, ok, zig),
                  kfa::Error);  // zigzag needs an even length
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    Kokkos::ScopeGuard guard(argc, argv);
    rc = Catch::Session().run(argc, argv);
  }
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
