// kfa::merge_attention_states on every host execution space and element type: attention split over
// disjoint key ranges and merged equals attention over all keys (against fp64, with the tolerance
// rule), empty parts and fully masked rows, large LSEs, the two-part in-place form, bad input.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "portable/merge_kernel.hpp"
#include "spaces.hpp"

using namespace kfa::test;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

template <class T>
double to_double(T x) {
  if constexpr (std::is_same_v<T, double>) return x;
  else return static_cast<double>(static_cast<float>(x));
}

/// Unit roundoff of the math type (float, or double for double).
template <class T>
constexpr double acc_roundoff() {
  return std::is_same_v<T, double> ? 0x1p-53 : 0x1p-24;
}

/// A LayoutRight View with v's extents, in v's memory space.
template <class V>
auto contiguous_like(const V& v) {
  using C = Kokkos::View<typename V::non_const_data_type, Kokkos::LayoutRight, typename V::memory_space>;
  Kokkos::LayoutRight l;
  for (unsigned r = 0; r < V::rank(); ++r) l.dimension[r] = v.extent(r);
  return C("contiguous", l);
}

/// v's values in logical (row-major) order, whatever its layout and memory space.
template <class V>
std::vector<double> download(const V& v) {
  auto c = contiguous_like(v);
  Kokkos::deep_copy(c, v);
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), c);
  std::vector<double> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = to_double(h.data()[i]);
  return out;
}

/// Sets v from values in logical order (rounded to v's element type).
template <class V>
void upload(const V& v, const std::vector<double>& vals) {
  using E = typename V::non_const_value_type;
  auto c = contiguous_like(v);
  auto h = Kokkos::create_mirror_view(c);
  for (std::size_t i = 0; i < h.size(); ++i) h.data()[i] = static_cast<E>(vals[i]);
  Kokkos::deep_copy(c, h);
  Kokkos::deep_copy(v, c);
}

/// Rounds values to T as upload does, so host references see the stored values.
template <class T>
void round_to(std::vector<double>& vals) {
  for (double& x : vals) x = to_double(static_cast<T>(x));
}

bool any_nan(const std::vector<double>& v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
}

/// Parts' states o [parts, batch, seqlen, heads, head_dim] and lse [parts, batch, heads, seqlen], stored
/// either in that order or permuted (o as [batch, heads, parts, seqlen, head_dim], lse as
/// [heads, parts, batch, seqlen]), so the Views are LayoutStride with the parts axis inside.
template <class Space, class T>
struct Parts {
  using Mem = typename Space::memory_space;
  using L = kfa::lse_type<T>;
  std::int64_t P, B, S, H, D;
  Kokkos::View<T*, Mem> ob;
  Kokkos::View<L*, Mem> lb;
  Kokkos::View<T*****, Kokkos::LayoutStride, Mem> o;
  Kokkos::View<L****, Kokkos::LayoutStride, Mem> lse;

  Parts(std::int64_t p, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, bool permuted)
      : P(p), B(b), S(s), H(h), D(d), ob("o_parts", p * b * s * h * d), lb("lse_parts", p * b * h * s) {
    Kokkos::LayoutStride lo = permuted ? Kokkos::LayoutStride(P, S * D, B, H * P * S * D, S, D, H, P * S * D, D, 1)
                                       : Kokkos::LayoutStride(P, B * S * H * D, B, S * H * D, S, H * D, H, D, D, 1);
    Kokkos::LayoutStride ll = permuted ? Kokkos::LayoutStride(P, B * S, B, S, H, P * B * S, S, 1)
                                       : Kokkos::LayoutStride(P, B * H * S, B, H * S, H, S, S, 1);
    o = Kokkos::View<T*****, Kokkos::LayoutStride, Mem>(ob.data(), lo);
    lse = Kokkos::View<L****, Kokkos::LayoutStride, Mem>(lb.data(), ll);
  }
  auto o_part(std::int64_t p) const { return Kokkos::subview(o, p, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL); }
  auto lse_part(std::int64_t p) const { return Kokkos::subview(lse, p, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL); }
  void poison() {
    Kokkos::deep_copy(ob, static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    Kokkos::deep_copy(lb, std::numeric_limits<L>::quiet_NaN());
  }
};

/// One merged state: o [batch, seqlen, heads, head_dim] (strided when bhsd) and lse [batch, heads, seqlen].
template <class Space, class T>
struct State {
  using Mem = typename Space::memory_space;
  using L = kfa::lse_type<T>;
  Kokkos::View<T*, Mem> ob;
  Kokkos::View<T****, Kokkos::LayoutStride, Mem> o;
  Kokkos::View<L***, Mem> lse;
  State(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, bool bhsd)
      : ob("o", b * s * h * d), o(strided4(ob, b, s, h, d, bhsd)), lse("lse", b, h, s) {}
  void poison() {
    Kokkos::deep_copy(ob, static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    Kokkos::deep_copy(lse, std::numeric_limits<L>::quiet_NaN());
  }
};

/// fp64 merge of host states o [P, B, S, H, D], lse [P, B, H, S] (logical order), max subtracted.
void reference_merge(std::int64_t P, std::int64_t B, std::int64_t S, std::int64_t H, std::int64_t D,
                     const std::vector<double>& o, const std::vector<double>& lse, std::vector<double>& out,
                     std::vector<double>& out_lse) {
  out.assign(B * S * H * D, 0.0);
  out_lse.assign(B * H * S, -inf);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t s = 0; s < S; ++s)
      for (std::int64_t h = 0; h < H; ++h) {
        auto l = [&](std::int64_t p) { return lse[((p * B + b) * H + h) * S + s]; };
        double m = -inf;
        for (std::int64_t p = 0; p < P; ++p) m = std::max(m, l(p));
        if (m == -inf) continue;
        double sum = 0;
        for (std::int64_t p = 0; p < P; ++p)
          if (l(p) != -inf) sum += std::exp(l(p) - m);
        out_lse[(b * H + h) * S + s] = m + std::log(sum);
        double* r = &out[((b * S + s) * H + h) * D];
        for (std::int64_t p = 0; p < P; ++p) {
          if (l(p) == -inf) continue;
          const double w = std::exp(l(p) - m) / sum;
          const double* x = &o[(((p * B + b) * S + s) * H + h) * D];
          for (std::int64_t c = 0; c < D; ++c) r[c] += w * x[c];
        }
      }
}

/// Random states: o_p uniform in [-1, 1] (NaN where the part's lse is -inf: it must not be read) and
/// lse from `lse_of(p, row)`; host copies are the stored (rounded) values, with 0 for the NaN o.
template <class Space, class T, class F>
void fill_states(Parts<Space, T>& parts, std::vector<double>& o_h, std::vector<double>& lse_h, F lse_of) {
  using L = kfa::lse_type<T>;
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const auto [P, B, S, H, D] = std::tuple{parts.P, parts.B, parts.S, parts.H, parts.D};
  lse_h.resize(P * B * H * S);
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t s = 0; s < S; ++s)
          lse_h[((p * B + b) * H + h) * S + s] = static_cast<double>(static_cast<L>(lse_of(p, (b * S + s) * H + h)));
  o_h.resize(P * B * S * H * D);
  std::vector<double> stored(o_h.size());
  for (std::int64_t p = 0; p < P; ++p)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t c = 0; c < D; ++c) {
            const std::size_t e = (((p * B + b) * S + s) * H + h) * D + c;
            const bool empty = lse_h[((p * B + b) * H + h) * S + s] == -inf;
            o_h[e] = empty ? 0.0 : to_double(static_cast<T>(u(rng())));
            stored[e] = empty ? std::numeric_limits<double>::quiet_NaN() : o_h[e];
          }
  upload(parts.o, stored);
  upload(parts.lse, std::vector<double>(lse_h.begin(), lse_h.end()));
}

/// Largest |a - b| relative to max(1, |b|) (for LSEs of large magnitude); infinities must match.
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return inf;
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return inf;
      continue;
    }
    m = std::max(m, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  }
  return m;
}

/// Checks a merged state against the fp64 merge of the parts' stored values.
template <class T>
void check_against_reference_merge(const std::vector<double>& o, const std::vector<double>& lse,
                                   const std::vector<double>& ref_o, const std::vector<double>& ref_lse,
                                   double o_tol_ulps = 2, double o_tol_extra = 0) {
  const double tol_o = o_tol_ulps * unit_roundoff<T>() + 16 * acc_roundoff<T>() + o_tol_extra;
  const double tol_lse = 8 * acc_roundoff<T>();
  INFO("o error " << max_abs_diff(o, ref_o) << " (tol " << tol_o << "), lse relative error "
                  << max_rel_diff(lse, ref_lse) << " (tol " << tol_lse << ")");
  CHECK_FALSE(any_nan(o));
  CHECK_FALSE(any_nan(lse));
  CHECK(max_abs_diff(o, ref_o) <= tol_o);
  CHECK(max_rel_diff(lse, ref_lse) <= tol_lse);
}

/// `count` disjoint, nonempty, contiguous key ranges covering [0, seqlen_k), cut at random places.
std::vector<std::int64_t> random_cuts(std::int64_t seqlen_k, std::int64_t count) {
  std::set<std::int64_t> cuts{0, seqlen_k};
  std::uniform_int_distribution<std::int64_t> pick(1, seqlen_k - 1);
  while (static_cast<std::int64_t>(cuts.size()) < count + 1) cuts.insert(pick(rng()));
  return {cuts.begin(), cuts.end()};
}

/// Splits a random attention problem's keys into `count` ranges, runs kfa::forward on each range, merges
/// the parts and checks the result against fp64 and against kfa::forward over all keys. Causal masks are
/// kept by giving range [k0, k1) the window_right seqlen_k - k1 (the forward aligns masks to the range's
/// own corner), so ranges a row cannot see give LSE = -inf parts, and rows with no key at all (seqlen_q >
/// seqlen_k) give all-empty rows.
template <class S, class T>
void check_split(const Dims& n, std::int64_t count, bool causal, bool bhsd, double magnitude = 1.0) {
  RefOptions opt;
  opt.causal = causal;
  Problem<S, T> p(n, opt, bhsd, magnitude);
  std::vector<double> ref_o, ref_lse, std_o, std_lse, fwd_o, fwd_lse, o, lse;
  reference_forward(p.host, opt, ref_o, ref_lse);
  const kfa::Params params = to_params(opt);
  S space;
  p.poison();
  kfa::reference::attention(space, p.q, p.k, p.v, p.o, p.lse, params);
  space.fence();
  p.read(std_o, std_lse);
  p.poison();
  kfa::forward(space, p.q, p.k, p.v, p.o, p.lse, params);
  space.fence();
  p.read(fwd_o, fwd_lse);

  const std::vector<std::int64_t> cuts = random_cuts(n.seqlen_k, count);
  Parts<S, T> parts(count, n.batch, n.seqlen_q, n.heads, n.head_dim, bhsd);
  parts.poison();
  std::int64_t empty_parts = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const std::pair<std::int64_t, std::int64_t> keys{cuts[i], cuts[i + 1]};
    auto k = Kokkos::subview(p.k, Kokkos::ALL, keys, Kokkos::ALL, Kokkos::ALL);
    auto v = Kokkos::subview(p.v, Kokkos::ALL, keys, Kokkos::ALL, Kokkos::ALL);
    kfa::Params pp = params;
    if (causal) {
      pp.causal = false;
      pp.window_right = n.seqlen_k - cuts[i + 1];
    }
    kfa::forward(space, p.q, k, v, parts.o_part(i), parts.lse_part(i), pp);
  }
  space.fence();
  for (double l : download(parts.lse)) empty_parts += l == -inf;
  p.poison();
  kfa::merge_attention_states(space, parts.o, parts.lse, p.o, p.lse);
  space.fence();
  p.read(o, lse);

  const double e_o = max_abs_diff(o, ref_o), plain_o = max_abs_diff(std_o, ref_o);
  const double e_lse = max_abs_diff(lse, ref_lse), plain_lse = max_abs_diff(std_lse, ref_lse);
  const double fwd_e_o = max_abs_diff(fwd_o, ref_o), fwd_e_lse = max_abs_diff(fwd_lse, ref_lse);
  const double lse_eps = abs_eps<T>() * std::max(1.0, max_abs(ref_lse));
  INFO(type_name<T>() << " b" << n.batch << " sq" << n.seqlen_q << " sk" << n.seqlen_k << " h" << n.heads << "/"
                      << n.heads_kv << " d" << n.head_dim << " parts " << count << " causal " << causal << " bhsd "
                      << bhsd << " magnitude " << magnitude << "; empty (row, part) pairs " << empty_parts);
  INFO("merged o error " << e_o << " (plain " << plain_o << ", forward over all keys " << fwd_e_o
                         << "), lse error " << e_lse << " (plain " << plain_lse << ", forward " << fwd_e_lse
                         << "); merged vs forward: o " << max_abs_diff(o, fwd_o) << ", lse "
                         << max_abs_diff(lse, fwd_lse));
  CHECK_FALSE(any_nan(o));
  CHECK_FALSE(any_nan(lse));
  CHECK(e_o <= 2 * plain_o + abs_eps<T>());
  CHECK(e_lse <= 2 * plain_lse + lse_eps);
  // and within the same band around kfa::forward over all keys
  CHECK(max_abs_diff(o, fwd_o) <= 2 * plain_o + fwd_e_o + abs_eps<T>());
  CHECK(max_abs_diff(lse, fwd_lse) <= 2 * plain_lse + fwd_e_lse + lse_eps);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("merge: forward over disjoint key ranges, merged, equals forward over all keys", "[merge]",
                        HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const auto [sq, sk, count] = GENERATE(table<std::int64_t, std::int64_t, std::int64_t>(
      {{37, 100, 2}, {64, 129, 3}, {1, 300, 4}, {90, 70, 4}, {5, 4, 4}}));
  const bool causal = GENERATE(false, true);
  const bool bhsd = GENERATE(false, true);
  check_split<S, T>({2, sq, sk, 4, 2, 64}, count, causal, bhsd);
}

TEMPLATE_LIST_TEST_CASE("merge: head dimensions and large scores", "[merge]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t d = GENERATE(1, 40, 80, 128, 256);
  check_split<S, T>({1, 33, 77, 2, 1, d}, 3, false, false);
  // scores of magnitude ~ 100: LSEs far from 0
  check_split<S, T>({1, 33, 77, 2, 2, d}, 2, true, false, 4.0);
}

TEMPLATE_LIST_TEST_CASE("merge: rows that see no key give O = 0 and LSE = -inf", "[merge]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  // causal with seqlen_q > seqlen_k: the first 30 rows see no key in any range; later ranges are empty
  // for many more rows
  check_split<S, T>({1, 50, 20, 2, 1, 32}, 3, true, GENERATE(false, true));

  // synthetic parts: some (row, part) pairs empty (their o is NaN and must not be read), some rows empty
  // in every part
  const std::int64_t P = 3, B = 2, Sq = 7, H = 3, D = 24;
  Parts<S, T> parts(P, B, Sq, H, D, true);
  std::vector<double> o_h, lse_h, ref_o, ref_lse;
  std::normal_distribution<double> nd(0.0, 2.0);
  fill_states(parts, o_h, lse_h, [&](std::int64_t p, std::int64_t row) {
    if (row % 5 == 0) return -inf;                 // every part empty
    if ((row + p) % 3 == 0) return -inf;           // this part empty
    return nd(rng());
  });
  reference_merge(P, B, Sq, H, D, o_h, lse_h, ref_o, ref_lse);
  State<S, T> out(B, Sq, H, D, false);
  out.poison();
  S space;
  kfa::merge_attention_states(space, parts.o, parts.lse, out.o, out.lse);
  space.fence();
  const std::vector<double> o = download(out.o), lse = download(out.lse);
  check_against_reference_merge<T>(o, lse, ref_o, ref_lse);
  for (std::int64_t r = 0; r < B * Sq * H; r += 5) {
    const std::int64_t h = r % H, s = (r / H) % Sq, b = r / (H * Sq);
    CHECK(lse[(b * H + h) * Sq + s] == -inf);
    for (std::int64_t c = 0; c < D; ++c) CHECK(o[r * D + c] == 0.0);
  }
}

TEMPLATE_LIST_TEST_CASE("merge: large-magnitude LSEs do not overflow", "[merge]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t P = GENERATE(1, 2, 4, 7), B = 2, Sq = 9, H = 2, D = GENERATE(1, 33, 64);
  Parts<S, T> parts(P, B, Sq, H, D, GENERATE(false, true));
  std::vector<double> o_h, lse_h, ref_o, ref_lse;
  const double bases[] = {0.0, 1e4, -1e4, 3e4, 1e30, -1e30};
  std::normal_distribution<double> nd(0.0, 3.0);
  fill_states(parts, o_h, lse_h, [&](std::int64_t p, std::int64_t row) {
    const double base = bases[row % 6];
    switch ((row / 6) % 4) {
      case 0: return base + nd(rng());                          // close together
      case 1: return base + (p % 2 ? 200.0 : -200.0) + nd(rng());  // far apart
      case 2: return (p % 2 ? 1e4 : -1e4) + nd(rng());           // opposite signs
      default: return base;                                     // all equal
    }
  });
  reference_merge(P, B, Sq, H, D, o_h, lse_h, ref_o, ref_lse);
  State<S, T> out(B, Sq, H, D, true);
  out.poison();
  S space;
  // inputs as const Views
  const Kokkos::View<const T*****, Kokkos::LayoutStride, typename S::memory_space> o_parts = parts.o;
  const Kokkos::View<const kfa::lse_type<T>****, Kokkos::LayoutStride, typename S::memory_space> lse_parts = parts.lse;
  kfa::merge_attention_states(space, o_parts, lse_parts, out.o, out.lse);
  space.fence();
  INFO(type_name<T>() << " parts " << P << " head_dim " << D);
  check_against_reference_merge<T>(download(out.o), download(out.lse), ref_o, ref_lse);
}

TEMPLATE_LIST_TEST_CASE("merge: the two-part in-place form equals the multi-part form", "[merge]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t P = GENERATE(2, 5), B = 2, Sq = 11, H = 3, D = GENERATE(16, 72);
  Parts<S, T> parts(P, B, Sq, H, D, false);
  std::vector<double> o_h, lse_h, ref_o, ref_lse;
  std::normal_distribution<double> nd(0.0, 4.0);
  fill_states(parts, o_h, lse_h, [&](std::int64_t p, std::int64_t row) {
    return (row + 2 * p) % 7 == 0 ? -inf : 50.0 * (row % 3) + nd(rng());
  });
  reference_merge(P, B, Sq, H, D, o_h, lse_h, ref_o, ref_lse);
  S space;
  State<S, T> multi(B, Sq, H, D, false);
  multi.poison();
  kfa::merge_attention_states(space, parts.o, parts.lse, multi.o, multi.lse);

  // an accumulator that starts empty: lse_a = -inf, o_a uninitialized (NaN), then takes part after part
  State<S, T> acc(B, Sq, H, D, true);
  acc.poison();
  Kokkos::deep_copy(acc.lse, -std::numeric_limits<kfa::lse_type<T>>::infinity());
  kfa::merge_attention_states(space, acc.o, acc.lse, parts.o_part(0), parts.lse_part(0));
  space.fence();
  {  // merging into an empty state gives the part exactly (o of an empty part is 0, and NaN is not read)
    std::vector<double> o0(o_h.begin(), o_h.begin() + B * Sq * H * D), l0(lse_h.begin(), lse_h.begin() + B * H * Sq);
    CHECK(download(acc.o) == o0);
    CHECK(download(acc.lse) == l0);
  }
  for (std::int64_t p = 1; p < P; ++p)
    kfa::merge_attention_states(space, acc.o, acc.lse, parts.o_part(p), parts.lse_part(p));
  space.fence();
  const std::vector<double> o_multi = download(multi.o), lse_multi = download(multi.lse);
  INFO(type_name<T>() << " parts " << P << " head_dim " << D);
  check_against_reference_merge<T>(o_multi, lse_multi, ref_o, ref_lse);
  if (P == 2) {
    // the same arithmetic in the same order: bitwise equal
    CHECK(download(acc.o) == o_multi);
    CHECK(download(acc.lse) == lse_multi);
  } else {
    // each step rounds the accumulator to T and its LSE to lse_type<T>: an LSE rounding error e scales
    // the next weights by exp(e), e <= |lse| u
    check_against_reference_merge<T>(download(acc.o), download(acc.lse), ref_o, ref_lse, 2.0 * P,
                                     2.0 * P * max_abs(ref_lse) * acc_roundoff<T>());
  }
}

TEMPLATE_LIST_TEST_CASE("merge: the GPU launch shape (32 lanes per row) on the host", "[merge]", HostCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  const std::int64_t P = 3, B = 1, Sq = 5, H = 3, D = GENERATE(1, 7, 32, 100, 256, 300);
  Parts<S, T> parts(P, B, Sq, H, D, true);
  std::vector<double> o_h, lse_h, ref_o, ref_lse;
  std::normal_distribution<double> nd(0.0, 3.0);
  fill_states(parts, o_h, lse_h, [&](std::int64_t p, std::int64_t row) {
    return (row + p) % 4 == 0 ? -inf : nd(rng());
  });
  reference_merge(P, B, Sq, H, D, o_h, lse_h, ref_o, ref_lse);
  State<S, T> out(B, Sq, H, D, false);
  out.poison();
  S space;
  kfa::portable::run_merge<S, T, true>(space, kfa::detail::merge_args<S>(parts.o, parts.lse, out.o, out.lse));
  space.fence();
  INFO(type_name<T>() << " head_dim " << D);
  check_against_reference_merge<T>(download(out.o), download(out.lse), ref_o, ref_lse);
}

namespace {

using Catch::Matchers::ContainsSubstring;
using HS = Kokkos::DefaultHostExecutionSpace;
using HM = HS::memory_space;
using V5 = Kokkos::View<float*****, HM>;
using V4 = Kokkos::View<float****, HM>;
using V3 = Kokkos::View<float***, HM>;

template <class V>
V filled(const char* name, float x, std::size_t n0, std::size_t n1, std::size_t n2, std::size_t n3 = KOKKOS_INVALID_INDEX,
         std::size_t n4 = KOKKOS_INVALID_INDEX) {
  V v(name, n0, n1, n2, n3, n4);
  Kokkos::deep_copy(v, x);
  return v;
}

template <class... V>
bool untouched(const V&... v) {
  auto one = [](const auto& x) {
    for (std::size_t i = 0; i < x.span(); ++i)
      if (x.data()[i] != 7.0f) return false;
    return true;
  };
  return (one(v) && ...);
}

}  // namespace

TEST_CASE("merge: bad input throws kfa::Error naming the argument, and writes nothing", "[merge][errors]") {
  // parts 3, batch 2, seqlen 5, heads 4, head_dim 16
  V5 op = filled<V5>("o_parts", 0.5f, 3, 2, 5, 4, 16);
  V4 lp = filled<V4>("lse_parts", 0.5f, 3, 2, 4, 5);
  V4 o = filled<V4>("o", 7.0f, 2, 5, 4, 16);
  V3 l = filled<V3>("lse", 7.0f, 2, 4, 5);
  const HS x;
  using kfa::merge_attention_states;
  CHECK_THROWS_AS(merge_attention_states(x, op, filled<V4>("lp", 0.5f, 2, 2, 4, 5), o, l), kfa::Error);
  CHECK_THROWS_WITH(merge_attention_states(x, op, filled<V4>("lp", 0.5f, 2, 2, 4, 5), o, l),
                    ContainsSubstring("lse_parts has extents [2, 2, 4, 5]") &&
                        ContainsSubstring("[parts, batch, heads, seqlen] = [3, 2, 4, 5]"));
  CHECK_THROWS_WITH(merge_attention_states(x, op, filled<V4>("lp", 0.5f, 3, 2, 5, 4), o, l),
                    ContainsSubstring("lse_parts has extents [3, 2, 5, 4]"));
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, filled<V4>("o", 7.0f, 2, 5, 4, 8), l),
                    ContainsSubstring("o has extents [2, 5, 4, 8]") &&
                        ContainsSubstring("[batch, seqlen, heads, head_dim] = [2, 5, 4, 16]"));
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, o, filled<V3>("lse", 7.0f, 2, 5, 4)),
                    ContainsSubstring("lse has extents [2, 5, 4]") &&
                        ContainsSubstring("[batch, heads, seqlen] = [2, 4, 5]"));
  CHECK_THROWS_WITH(merge_attention_states(x, op, filled<V3>("lp", 0.5f, 3, 4, 5), o, l),
                    ContainsSubstring("lse_parts must have rank 4"));
  CHECK_THROWS_WITH(merge_attention_states(x, filled<V3>("o3", 0.5f, 3, 2, 5), lp, o, l),
                    ContainsSubstring("o_parts must have rank 5"));
  CHECK_THROWS_WITH(merge_attention_states(x, V5("empty", 0, 2, 5, 4, 16), Kokkos::View<float****, HM>("lp", 0, 2, 4, 5),
                                           o, l),
                    ContainsSubstring("o_parts has an empty extent"));
  CHECK_THROWS_WITH(merge_attention_states(x, V5(), lp, o, l), ContainsSubstring("o_parts is not allocated"));
  Kokkos::View<float****, Kokkos::LayoutLeft, HM> o_left("o", 2, 5, 4, 16);
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, o_left, l), ContainsSubstring("o: the last dimension must have unit stride"));
  // outputs aliasing inputs
  auto op_as_o = Kokkos::subview(op, 0, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, op_as_o, l), ContainsSubstring("o and o_parts overlap"));
  V3 lp_as_l(lp.data(), 2, 4, 5);
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, o, lp_as_l), ContainsSubstring("lse and lse_parts overlap"));
  V3 o_as_l(o.data(), 2, 4, 5);
  CHECK_THROWS_WITH(merge_attention_states(x, op, lp, o, o_as_l), ContainsSubstring("o and lse overlap"));
  CHECK(untouched(o, l));

  // the two-part in-place form
  V4 ob = filled<V4>("o_b", 0.5f, 2, 5, 4, 16);
  V3 lb = filled<V3>("lse_b", 0.5f, 2, 4, 5);
  CHECK_THROWS_WITH(merge_attention_states(x, o, l, filled<V4>("o_b", 0.5f, 2, 5, 3, 16), lb),
                    ContainsSubstring("o_b has extents [2, 5, 3, 16]"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, l, ob, filled<V3>("lse_b", 0.5f, 2, 4, 6)),
                    ContainsSubstring("lse_b has extents [2, 4, 6]"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, filled<V3>("lse_a", 7.0f, 2, 5, 4), ob, lb),
                    ContainsSubstring("lse_a has extents [2, 5, 4]"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, lp, ob, lb), ContainsSubstring("lse_a must have rank 3") &&
                                                                   ContainsSubstring("o_parts of rank 5"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, l, o, lb), ContainsSubstring("o_a and o_b overlap"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, l, ob, l), ContainsSubstring("lse_a and lse_b overlap"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, o_as_l, ob, lb), ContainsSubstring("o_a and lse_a overlap"));
  V3 ob_as_l(ob.data(), 2, 4, 5);
  CHECK_THROWS_WITH(merge_attention_states(x, ob, lb, o, ob_as_l), ContainsSubstring("o_a and lse_b overlap"));
  CHECK_THROWS_WITH(merge_attention_states(x, o, l, Kokkos::View<float****, Kokkos::LayoutLeft, HM>("o_b", 2, 5, 4, 16), lb),
                    ContainsSubstring("o_b: the last dimension must have unit stride"));
  CHECK(untouched(o, l));
}
