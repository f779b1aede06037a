#pragma once
// Building random problems on an execution space, running kfa on them and judging the result
// against fp64 with the tolerance rule: kfa's error <= 2 x (error of a plain unfused attention in
// the same input precision) + a tiny absolute epsilon. Outputs are poisoned with NaN first.
#include <Kokkos_Core.hpp>
#include <catch2/catch_get_random_seed.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>

#include "fp64_reference.hpp"
#include "kfa/kfa.hpp"

namespace kfa::test {

using half = Kokkos::Experimental::half_t;
using bhalf = Kokkos::Experimental::bhalf_t;

/// One execution space and element type under test.
template <class Space, class T>
struct Case {
  using space = Space;
  using value = T;
};

template <class T>
constexpr double abs_eps() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  else if constexpr (std::is_same_v<T, float>) return 1e-6;
  else if constexpr (std::is_same_v<T, half>) return 1e-4;
  else return 1e-3;
}

/// Unit roundoff of T's storage (half: 2^-11, bfloat16: 2^-8): the error of rounding a result to T.
template <class T>
constexpr double unit_roundoff() {
  if constexpr (std::is_same_v<T, double>) return 0x1p-53;
  else if constexpr (std::is_same_v<T, float>) return 0x1p-24;
  else if constexpr (std::is_same_v<T, half>) return 0x1p-11;
  else return 0x1p-8;
}

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, half>) return "half";
  else return "bfloat16";
}

/// A fresh random stream for every call (Catch2 picks a new seed each run; --rng-seed repeats one).
inline std::mt19937_64& rng() {
  static std::mt19937_64 g(Catch::getSeed());
  return g;
}

inline Params to_params(const RefOptions& o) {
  Params p;
  if (o.scale != 0) p.softmax_scale = o.scale;
  p.causal = o.causal;
  p.window_left = o.window_left;
  p.window_right = o.window_right;
  p.softcap = o.softcap;
  p.alibi_slopes = o.alibi;
  return p;
}

/// A [b, s, h, d] tensor stored either as [b, s, h, d] or as [b, h, s, d] (then strided).
template <class T, class Mem>
Kokkos::View<T****, Kokkos::LayoutStride, Mem> strided4(Kokkos::View<T*, Mem> buf, std::int64_t b, std::int64_t s,
                                                       std::int64_t h, std::int64_t d, bool bhsd) {
  Kokkos::LayoutStride l = bhsd ? Kokkos::LayoutStride(b, h * s * d, s, d, h, s * d, d, 1)
                                : Kokkos::LayoutStride(b, s * h * d, s, h * d, h, d, d, 1);
  return Kokkos::View<T****, Kokkos::LayoutStride, Mem>(buf.data(), l);
}

template <class Space, class T>
struct Problem {
  using Mem = typename Space::memory_space;
  using L = kfa::lse_type<T>;
  Dims n;
  RefOptions opt;
  HostQKV host;
  Kokkos::View<T*, Mem> qb, kb, vb, ob;
  Kokkos::View<L*, Mem> lb;
  Kokkos::View<T****, Kokkos::LayoutStride, Mem> q, k, v, o;
  Kokkos::View<L***, Kokkos::LayoutStride, Mem> lse;

  Problem(Dims dims, RefOptions o_, bool bhsd = false, double magnitude = 1.0) : n(dims), opt(std::move(o_)) {
    host.n = n;
    qb = fill(n.batch * n.seqlen_q * n.heads * n.head_dim, host.q, magnitude);
    kb = fill(n.batch * n.seqlen_k * n.heads_kv * n.head_dim, host.k, magnitude);
    vb = fill(n.batch * n.seqlen_k * n.heads_kv * n.head_dim, host.v, 1.0);
    ob = Kokkos::View<T*, Mem>("o", n.batch * n.seqlen_q * n.heads * n.head_dim);
    lb = Kokkos::View<L*, Mem>("lse", n.batch * n.heads * n.seqlen_q);
    q = strided4(qb, n.batch, n.seqlen_q, n.heads, n.head_dim, bhsd);
    k = strided4(kb, n.batch, n.seqlen_k, n.heads_kv, n.head_dim, bhsd);
    v = strided4(vb, n.batch, n.seqlen_k, n.heads_kv, n.head_dim, bhsd);
    o = strided4(ob, n.batch, n.seqlen_q, n.heads, n.head_dim, bhsd);
    // lse [b, h, s] stored contiguously in that order
    lse = Kokkos::View<L***, Kokkos::LayoutStride, Mem>(
        lb.data(), Kokkos::LayoutStride(n.batch, n.heads * n.seqlen_q, n.heads, n.seqlen_q, n.seqlen_q, 1));
  }

  /// Normal random values rounded to T; `vals` receives the rounded values in double, in buffer order.
  Kokkos::View<T*, Mem> fill(std::int64_t count, std::vector<double>& vals, double magnitude) {
    std::normal_distribution<double> dist(0.0, magnitude);
    Kokkos::View<T*, Mem> d(Kokkos::view_alloc(Kokkos::WithoutInitializing, "input"), count);
    auto h = Kokkos::create_mirror_view(d);
    vals.resize(count);
    for (std::int64_t i = 0; i < count; ++i) {
      h(i) = static_cast<T>(dist(rng()));
      vals[i] = static_cast<double>(static_cast<float>(h(i)));
      if constexpr (std::is_same_v<T, double>) vals[i] = h(i);
    }
    Kokkos::deep_copy(d, h);
    return d;
  }

  void poison() {
    Kokkos::deep_copy(ob, static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    Kokkos::deep_copy(lb, std::numeric_limits<L>::quiet_NaN());
  }

  /// Host values of o in [b, s, h, d] order (whatever the storage order) and lse in [b, h, s].
  void read(std::vector<double>& out, std::vector<double>& l) const {
    auto oh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), o);
    auto lh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), lb);
    out.resize(n.batch * n.seqlen_q * n.heads * n.head_dim);
    std::size_t e = 0;
    for (std::int64_t b = 0; b < n.batch; ++b)
      for (std::int64_t s = 0; s < n.seqlen_q; ++s)
        for (std::int64_t h = 0; h < n.heads; ++h)
          for (std::int64_t c = 0; c < n.head_dim; ++c) out[e++] = static_cast<double>(static_cast<float>(oh(b, s, h, c)));
    if constexpr (std::is_same_v<T, double>) {
      e = 0;
      for (std::int64_t b = 0; b < n.batch; ++b)
        for (std::int64_t s = 0; s < n.seqlen_q; ++s)
          for (std::int64_t h = 0; h < n.heads; ++h)
            for (std::int64_t c = 0; c < n.head_dim; ++c) out[e++] = oh(b, s, h, c);
    }
    l.assign(lh.data(), lh.data() + lh.size());
  }
};

/// Largest |a - b|; NaN anywhere, or an infinity on one side only, counts as infinitely wrong.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

inline double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double x : a)
    if (std::isfinite(x)) m = std::max(m, std::abs(x));
  return m;
}

struct ForwardErrors {
  double kfa_o, plain_o, kfa_lse, plain_lse;
};

/// The forward under test: kfa::forward unless a suite swaps in another entry point.
struct KfaForward {
  template <class Space, class P>
  void operator()(const Space& space, P& p, const Params& params) const {
    kfa::forward(space, p.q, p.k, p.v, p.o, p.lse, params);
  }
};

/// Runs kfa::forward (or `run`) and the plain unfused attention on the same inputs and checks both against fp64.
template <class Space, class T, class Run = KfaForward>
ForwardErrors check_forward(const Dims& n, const RefOptions& opt, bool bhsd = false, double magnitude = 1.0,
                            Backend backend = Backend::automatic, Run run = {}) {
  Problem<Space, T> p(n, opt, bhsd, magnitude);
  std::vector<double> ref_o, ref_lse, o, lse, std_o, std_lse;
  reference_forward(p.host, opt, ref_o, ref_lse);
  Params params = to_params(opt);
  params.backend = backend;
  Space space;
  p.poison();
  kfa::reference::attention(space, p.q, p.k, p.v, p.o, p.lse, params);
  space.fence();
  p.read(std_o, std_lse);
  p.poison();
  run(space, p, params);
  space.fence();
  p.read(o, lse);
  ForwardErrors e{max_abs_diff(o, ref_o), max_abs_diff(std_o, ref_o), max_abs_diff(lse, ref_lse),
                  max_abs_diff(std_lse, ref_lse)};
  INFO(type_name<T>() << " b" << n.batch << " sq" << n.seqlen_q << " sk" << n.seqlen_k << " h" << n.heads << "/"
                      << n.heads_kv << " d" << n.head_dim << " causal " << opt.causal << " window " << opt.window_left
                      << "," << opt.window_right << " softcap " << opt.softcap << " alibi " << !opt.alibi.empty()
                      << " bhsd " << bhsd << " magnitude " << magnitude << " backend " << static_cast<int>(backend));
  INFO("o error " << e.kfa_o << " (plain " << e.plain_o << "), lse error " << e.kfa_lse << " (plain " << e.plain_lse
                  << "); kfa vs plain " << max_abs_diff(o, std_o));
  CHECK(e.kfa_o <= 2 * e.plain_o + abs_eps<T>());
  CHECK(e.kfa_lse <= 2 * e.plain_lse + abs_eps<T>() * std::max(1.0, max_abs(ref_lse)));
  return e;
}

}  // namespace kfa::test
