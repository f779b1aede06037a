// Ring attention over MPI (kfa::distributed) on host ranks: every rank builds the same global q, k, v,
// dout (a seed from rank 0), runs the ring on its slice (contiguous with uneven lengths, or zigzag) and
// checks its slice of o, lse, dq, dk, dv against the fp64 reference on the whole sequence with the
// tolerance rule of the host suites (tests/common/harness.hpp, backward_harness.hpp): per tensor, at
// most 2x the error of the plain unfused attention (forward and standard backward) in the same
// precision, plus the rule's floor, abs_eps for o, abs_eps x max(1, max |lse|) for lse and
// backward_eps x max(1, max |grad|) for dq, dk, dv; outputs are NaN-poisoned first. The packed form
// (sequences of cu_seqlens spanning the ranks' slices, or cut into zigzag chunks) against a
// per-sequence reference likewise. The inputs come from Catch2's seed on rank 0 (--rng-seed repeats a
// run); the worst error / bound ratio of the run is printed at the end. Run under mpirun with any
// number of ranks.
#include <mpi.h>

#include <catch2/catch_session.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backward_harness.hpp"  // the tolerance rule: abs_eps, backward_eps, max_abs, rng
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

/// A seed for one problem, drawn on rank 0 from the stream of Catch2's seed and the same on every rank.
std::uint64_t shared_seed() {
  std::uint64_t s = rank() == 0 ? kfa::test::rng()() : 0;
  MPI_Bcast(&s, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return s;
}

/// max |x| over the finite values of a reference View: the scale of the rule's floor for lse and grads.
template <class X>
double max_abs(const X& x) {
  return kfa::test::max_abs(std::vector<double>(x.data(), x.data() + x.span()));
}

/// The rule's floors (tests/common): o, abs_eps; lse, abs_eps x max(1, max |lse|); a gradient, backward_eps x
/// max(1, max |grad|), as in backward_harness.hpp: the fused backward's D = rowsum(dO * O) reads the stored O,
/// rounded to T, which the standard backward's D = rowsum(P * dP) does not (at one rank the ring's backward is
/// one kfa::backward; more ranks add only a rounding per block of the dQ, dK, dV sums).
template <class T>
double o_floor() {
  return kfa::test::abs_eps<T>();
}
template <class T, class X>
double lse_floor(const X& ref) {
  return kfa::test::abs_eps<T>() * std::max(1.0, max_abs(ref));
}
template <class T, class X>
double grad_floor(const X& ref) {
  return kfa::test::backward_eps<T>() * std::max(1.0, max_abs(ref));
}

/// One output's check: this rank's error, the plain attention's error on the whole tensor, the floor.
struct Out {
  const char* name;
  double err, plain, floor;
};

/// The worst error / bound of this rank's checks so far, and what it was.
struct Worst {
  double ratio = 0;
  std::string what;
};
Worst& worst() {
  static Worst w;
  return w;
}

/// The rule on every output: err <= 2 x plain + floor.
void judge(const Out (&outs)[5], const std::string& what) {
  for (const Out& x : outs) {
    const double bound = 2 * x.plain + x.floor;
    INFO("rank " << rank() << " of " << ranks() << ", " << what << ", " << x.name << ": error " << x.err
                 << ", bound " << bound << " (plain " << x.plain << ", floor " << x.floor << ")");
    CHECK(x.err <= bound);
    if (!(x.err <= worst().ratio * bound)) worst() = {x.err / bound, what + ", " + x.name};
  }
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

  const Out outs[] = {
      {"o", err4(o, o_ref, pos), err4(o_pl, o_ref, all), o_floor<T>()},
      {"lse", err3(lse, lse_ref, pos), err3(lse_pl, lse_ref, all), lse_floor<T>(lse_ref)},
      {"dq", err4(dq, dq_ref, pos), err4(dq_pl, dq_ref, all), grad_floor<T>(dq_ref)},
      {"dk", err4(dk, dk_ref, pos), err4(dk_pl, dk_ref, all), grad_floor<T>(dk_ref)},
      {"dv", err4(dv, dv_ref, pos), err4(dv_pl, dv_ref, all), grad_floor<T>(dv_ref)},
  };
  judge(outs, std::string(kfa::test::type_name<T>()) + " causal " + std::to_string(c.causal) + " layout " +
                  std::to_string(int(c.layout)) + " heads " + std::to_string(c.heads) + "/" +
                  std::to_string(c.heads_kv) + " softcap " + std::to_string(c.softcap));
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

namespace {

// ---- packed sequences

/// Rows [b, e) of a [1, n, h, d] View as a fresh [1, e - b, h, d] copy, and back.
template <class T>
V4<T> rows_of(const V4<T>& g, std::int64_t b, std::int64_t e) {
  V4<T> x("rows", 1, e - b, g.extent(2), g.extent(3));
  Kokkos::deep_copy(x, Kokkos::subview(g, Kokkos::ALL, std::make_pair(b, e), Kokkos::ALL, Kokkos::ALL));
  return x;
}

/// fp64 reference and plain attention in T of a packed stream, one sequence at a time: outputs
/// [1, total, h, d] (lse [1, h, total]) in stream order.
template <class T>
struct PackedReference {
  V4<double> o, dq, dk, dv;
  V3<double> lse;
  PackedReference(const V4<double>& q, const V4<double>& k, const V4<double>& v, const V4<double>& dout,
                  const std::vector<std::int32_t>& cu, const kfa::Params& p)
      : o("o", 1, q.extent(1), q.extent(2), q.extent(3)), dq("dq", 1, q.extent(1), q.extent(2), q.extent(3)),
        dk("dk", 1, k.extent(1), k.extent(2), k.extent(3)), dv("dv", 1, k.extent(1), k.extent(2), k.extent(3)),
        lse("lse", 1, q.extent(2), q.extent(1)) {
    for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
      const std::int64_t b = cu[i], e = cu[i + 1];
      if (b == e) continue;
      const V4<T> qs = cast<T>(rows_of(q, b, e)), ks = cast<T>(rows_of(k, b, e)), vs = cast<T>(rows_of(v, b, e)),
                  ds = cast<T>(rows_of(dout, b, e));
      V4<T> os("o", 1, e - b, q.extent(2), q.extent(3)), dqs("dq", 1, e - b, q.extent(2), q.extent(3));
      V4<T> dks("dk", 1, e - b, k.extent(2), k.extent(3)), dvs("dv", 1, e - b, k.extent(2), k.extent(3));
      V3<kfa::lse_type<T>> ls("lse", 1, q.extent(2), e - b);
      kfa::reference::attention(Host(), qs, ks, vs, os, ls, p);
      kfa::reference::attention_backward(Host(), ds, qs, ks, vs, os, ls, dqs, dks, dvs, p);
      Host().fence();
      const auto put = [&](const V4<double>& dst, const V4<T>& src) {
        for (std::size_t r = 0; r < src.extent(1); ++r)
          for (std::size_t h = 0; h < src.extent(2); ++h)
            for (std::size_t d = 0; d < src.extent(3); ++d) dst(0, b + r, h, d) = static_cast<double>(src(0, r, h, d));
      };
      put(o, os), put(dq, dqs), put(dk, dks), put(dv, dvs);
      for (std::size_t h = 0; h < ls.extent(1); ++h)
        for (std::int64_t r = 0; r < e - b; ++r) lse(0, h, b + r) = static_cast<double>(ls(0, h, r));
    }
  }
};

/// max |a(i, h, d) - ref(0, pos[i], h, d)| (a: [n, h, d]; lse: [h, n] against [1, h, total]).
template <class A>
double packed_err(const A& a, const V4<double>& ref, const std::vector<std::int64_t>& pos) {
  double m = 0;
  for (std::size_t i = 0; i < a.extent(0); ++i)
    for (std::size_t h = 0; h < a.extent(1); ++h)
      for (std::size_t d = 0; d < a.extent(2); ++d) {
        const double x = static_cast<double>(a(i, h, d));
        if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
        m = std::max(m, std::abs(x - ref(0, pos[i], h, d)));
      }
  return m;
}
template <class A>
double packed_lse_err(const A& a, const V3<double>& ref, const std::vector<std::int64_t>& pos) {
  double m = 0;
  for (std::size_t h = 0; h < a.extent(0); ++h)
    for (std::size_t i = 0; i < a.extent(1); ++i) {
      const double x = static_cast<double>(a(h, i));
      if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
      m = std::max(m, std::abs(x - ref(0, h, pos[i])));
    }
  return m;
}

/// The stream row of every row of rank r's packed slice: contiguous, rows [start, start + lengths[r])
/// after the earlier ranks' lengths; zigzag, chunk r then chunk 2P - 1 - r of each sequence of cu.
std::vector<std::int64_t> packed_positions(RingLayout layout, const std::vector<std::int32_t>& cu,
                                           const std::vector<std::int64_t>& lengths, int r) {
  const int P = ranks();
  std::vector<std::int64_t> pos;
  if (layout == RingLayout::contiguous) {
    std::int64_t start = 0;
    for (int s = 0; s < r; ++s) start += lengths[s];
    for (std::int64_t i = 0; i < lengths[r]; ++i) pos.push_back(start + i);
    return pos;
  }
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    const std::int64_t c = (cu[b + 1] - cu[b]) / (2 * P);
    for (const std::int64_t chunk : {std::int64_t(r), 2 * std::int64_t(P) - 1 - r})
      for (std::int64_t i = 0; i < c; ++i) pos.push_back(cu[b] + chunk * c + i);
  }
  return pos;
}

template <class T>
void check_packed_ring(const std::vector<std::int32_t>& cu, RingLayout layout, const std::vector<std::int64_t>& lengths,
                       std::int64_t heads, std::int64_t heads_kv, bool causal, double softcap = 0.0) {
  const int r = rank();
  const std::int64_t total = cu.back(), d = 32;
  std::mt19937_64 gen(shared_seed());
  std::normal_distribution<double> dist(0.0, 1.0);
  auto randn = [&](std::int64_t h) {
    V4<double> x("global", 1, total, h, d);
    for (std::size_t i = 0; i < x.span(); ++i) x.data()[i] = static_cast<double>(static_cast<T>(dist(gen)));
    return x;
  };
  const V4<double> q = randn(heads), k = randn(heads_kv), v = randn(heads_kv), dout = randn(heads);
  kfa::Params p;
  p.causal = causal;
  p.softcap = softcap;
  const PackedReference<double> ref(q, k, v, dout, cu, p);
  const PackedReference<T> plain(q, k, v, dout, cu, p);

  const std::vector<std::int64_t> pos = packed_positions(layout, cu, lengths, r);
  const std::int64_t n = static_cast<std::int64_t>(pos.size());
  const auto slice = [&](const V4<double>& g) {
    V3<T> x("slice", n, g.extent(2), g.extent(3));
    for (std::int64_t i = 0; i < n; ++i)
      for (std::size_t h = 0; h < g.extent(2); ++h)
        for (std::size_t e = 0; e < g.extent(3); ++e) x(i, h, e) = static_cast<T>(g(0, pos[i], h, e));
    return x;
  };
  const V3<T> ql = slice(q), kl = slice(k), vl = slice(v), dl = slice(dout);
  const T nan = static_cast<T>(std::numeric_limits<double>::quiet_NaN());
  V3<T> o("o", n, heads, d), dq("dq", n, heads, d), dk("dk", n, heads_kv, d), dv("dv", n, heads_kv, d);
  Kokkos::View<kfa::lse_type<T>**, Kokkos::LayoutRight, Kokkos::HostSpace> lse("lse", heads, n);
  for (auto* x : {&o, &dq, &dk, &dv}) Kokkos::deep_copy(*x, nan);
  Kokkos::deep_copy(lse, static_cast<kfa::lse_type<T>>(nan));
  const kfa::distributed::RingOptions opt{layout};
  kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), ql, kl, vl, o, lse, cu, p, opt);
  kfa::distributed::ring_attention_backward_varlen(MPI_COMM_WORLD, Host(), dl, ql, kl, vl, o, lse, dq, dk, dv, cu, p,
                                                   opt);
  Host().fence();

  const auto whole = [&](const auto& a, const auto& b) {
    double m = 0;
    for (std::size_t i = 0; i < a.span(); ++i) m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
    return m;
  };
  const Out outs[] = {
      {"o", packed_err(o, ref.o, pos), whole(plain.o, ref.o), o_floor<T>()},
      {"lse", packed_lse_err(lse, ref.lse, pos), whole(plain.lse, ref.lse), lse_floor<T>(ref.lse)},
      {"dq", packed_err(dq, ref.dq, pos), whole(plain.dq, ref.dq), grad_floor<T>(ref.dq)},
      {"dk", packed_err(dk, ref.dk, pos), whole(plain.dk, ref.dk), grad_floor<T>(ref.dk)},
      {"dv", packed_err(dv, ref.dv, pos), whole(plain.dv, ref.dv), grad_floor<T>(ref.dv)},
  };
  judge(outs, std::string("packed ") + kfa::test::type_name<T>() + " causal " + std::to_string(causal) + " layout " +
                  std::to_string(int(layout)) + " heads " + std::to_string(heads) + "/" + std::to_string(heads_kv) +
                  " softcap " + std::to_string(softcap));
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("ring attention: packed sequences spanning ranks, empty ones, causal and not, GQA", "[ring]",
                        Types) {
  // 6 sequences (one empty, one of a single token) over uneven rank slices: sequences cross slices
  const std::vector<std::int32_t> cu = {0, 37, 38, 38, 91, 111, 150};
  const int P = ranks();
  std::vector<std::int64_t> lengths(P, 150 / P);
  lengths[0] += 150 % P;
  if (P > 1) lengths[0] -= 9, lengths[P - 1] += 9;  // uneven
  const bool causal = GENERATE(false, true);
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 1}}));
  check_packed_ring<TestType>(cu, RingLayout::contiguous, lengths, heads, heads_kv, causal);
}

TEMPLATE_LIST_TEST_CASE("ring attention (packed, zigzag): uneven sequences in 2P chunks, an empty one, causal and "
                        "not, MHA/GQA/MQA", "[ring]", Types) {
  // sequence lengths of 5, 0, 1, 8 and 3 times 2P: several chunk sizes, one empty sequence
  const std::int32_t parts = 2 * ranks();
  std::vector<std::int32_t> cu = {0};
  for (const std::int32_t units : {5, 0, 1, 8, 3}) cu.push_back(cu.back() + units * parts);
  const bool causal = GENERATE(false, true);
  const auto [heads, heads_kv] = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 2}, {4, 1}}));
  check_packed_ring<TestType>(cu, RingLayout::zigzag, {}, heads, heads_kv, causal);
}

TEST_CASE("ring attention (packed, zigzag): softcap; leading and trailing empty sequences, one-row chunks", "[ring]") {
  const std::int32_t parts = 2 * ranks();
  const std::vector<std::int32_t> cu = {0, 0, parts, 3 * parts, 3 * parts};
  check_packed_ring<double>(cu, RingLayout::zigzag, {}, 2, 1, true, 5.0);
}

TEST_CASE("ring attention (packed): cu_seqlens that do not match the slices are errors on every rank", "[ring]") {
  const int P = ranks();
  V3<double> q("q", 8, 2, 16), o("o", 8, 2, 16);
  Kokkos::View<double**, Kokkos::LayoutRight, Kokkos::HostSpace> lse("lse", 2, 8);
  const std::vector<std::int32_t> short_cu = {0, 8 * P - 1};  // one token short
  CHECK_THROWS_AS(kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), q, q, q, o, lse, short_cu, {}),
                  kfa::Error);
  const std::vector<std::int32_t> decreasing = {0, 9, 4, 8 * P};
  CHECK_THROWS_AS(
      kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), q, q, q, o, lse, decreasing, {}),
      kfa::Error);
}

TEST_CASE("ring attention (packed, zigzag): a length that is not a multiple of 2P, or a rank holding other than "
          "cu_seqlens.back() / P tokens, is an error on every rank before anything is written", "[ring]") {
  const int P = ranks();
  const kfa::distributed::RingOptions zig{RingLayout::zigzag};
  using L2 = Kokkos::View<double**, Kokkos::LayoutRight, Kokkos::HostSpace>;
  // 4 tokens on every rank, but the stream's 4P tokens cut into sequences of 2P + 1 and 2P - 1
  V3<double> q("q", 4, 2, 16), o("o", 4, 2, 16), dq("dq", 4, 2, 16), dk("dk", 4, 2, 16), dv("dv", 4, 2, 16);
  L2 lse("lse", 2, 4);
  Kokkos::deep_copy(q, 1.0);
  for (auto* x : {&o, &dq, &dk, &dv}) Kokkos::deep_copy(*x, 7.0);
  Kokkos::deep_copy(lse, 7.0);
  const std::vector<std::int32_t> odd = {0, 2 * P + 1, 4 * P};
  kfa::Params causal;
  causal.causal = true;
  const auto untouched = [](const auto& x) {
    bool same = true;
    for (std::size_t i = 0; i < x.span(); ++i) same = same && x.data()[i] == 7.0;
    return same;
  };
  CHECK_THROWS_WITH(
      kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), q, q, q, o, lse, odd, causal, zig),
      Catch::Matchers::ContainsSubstring("not a multiple of 2P"));
  CHECK((untouched(o) && untouched(lse)));
  CHECK_THROWS_AS(kfa::distributed::ring_attention_backward_varlen(MPI_COMM_WORLD, Host(), q, q, q, q, q, lse, dq, dk,
                                                                   dv, odd, causal, zig),
                  kfa::Error);
  CHECK((untouched(dq) && untouched(dk) && untouched(dv)));
  const std::vector<std::int32_t> even = {0, 2 * P, 4 * P};  // fine in both layouts
  CHECK_NOTHROW(kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), q, q, q, o, lse, even, causal, zig));
  if (P > 1) {  // the same total, but one token moved from the last rank to rank 0
    const std::int64_t n = rank() == 0 ? 5 : rank() == P - 1 ? 3 : 4;
    V3<double> qu("q", n, 2, 16), ou("o", n, 2, 16);
    L2 lu("lse", 2, n);
    Kokkos::deep_copy(ou, 7.0);
    CHECK_THROWS_WITH(
        kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), qu, qu, qu, ou, lu, even, causal, zig),
        Catch::Matchers::ContainsSubstring("cu_seqlens.back() / P"));
    CHECK(untouched(ou));
    CHECK_NOTHROW(kfa::distributed::ring_attention_forward_varlen(MPI_COMM_WORLD, Host(), qu, qu, qu, ou, lu, even,
                                                                  causal));  // contiguous takes any lengths
  }
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  {
    Kokkos::ScopeGuard guard(argc, argv);
    rc = Catch::Session().run(argc, argv);
  }
  struct {
    double ratio;
    int rank;
  } mine{worst().ratio, rank()}, top{};
  MPI_Allreduce(&mine, &top, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD);
  if (rank() == top.rank && !worst().what.empty())
    std::printf("worst error / bound: %.3g (rank %d of %d, %s)\n", top.ratio, top.rank, ranks(), worst().what.c_str());
  int failed = 0;
  MPI_Allreduce(&rc, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return failed;
}
