#pragma once
// Random backward problems and their judgement: kfa::backward and the standard (materialized)
// backward run on the same inputs, with O and LSE from kfa::forward in the same precision, and
// both are compared with the fp64 analytic gradients. The tolerance rule of the forward applies
// to each of dQ, dK, dV: kfa's error <= 2 x (the standard backward's error) + backward_eps<T>()
// scaled by the gradient's magnitude. Gradients are poisoned with NaN before each run.
#include <Kokkos_Core.hpp>
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "fp64_backward.hpp"
#include "harness.hpp"

namespace kfa::test {

/// Host values of a [b, s, h, d] View (any storage order) in [b, s, h, d] order.
template <class View>
std::vector<double> read4(const View& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  using T = typename View::non_const_value_type;
  std::vector<double> out;
  out.reserve(h.size());
  for (std::size_t b = 0; b < h.extent(0); ++b)
    for (std::size_t s = 0; s < h.extent(1); ++s)
      for (std::size_t hh = 0; hh < h.extent(2); ++hh)
        for (std::size_t c = 0; c < h.extent(3); ++c) {
          if constexpr (std::is_same_v<T, double>) out.push_back(h(b, s, hh, c));
          else out.push_back(static_cast<double>(static_cast<float>(h(b, s, hh, c))));
        }
  return out;
}

template <class Space, class T>
struct BackwardProblem {
  using Mem = typename Space::memory_space;
  using V4 = Kokkos::View<T****, Kokkos::LayoutStride, Mem>;
  Problem<Space, T> fwd;  // q, k, v and the forward's o, lse
  std::vector<double> dout_host;
  Kokkos::View<T*, Mem> dob, dqb, dkb, dvb;
  V4 dout, dq, dk, dv;

  BackwardProblem(Dims n, RefOptions opt, bool bhsd = false, double magnitude = 1.0)
      : fwd(n, std::move(opt), bhsd, magnitude) {
    const std::int64_t nq = n.batch * n.seqlen_q * n.heads * n.head_dim;
    const std::int64_t nk = n.batch * n.seqlen_k * n.heads_kv * n.head_dim;
    dob = fwd.fill(nq, dout_host, 1.0);
    dqb = Kokkos::View<T*, Mem>("dq", nq);
    dkb = Kokkos::View<T*, Mem>("dk", nk);
    dvb = Kokkos::View<T*, Mem>("dv", nk);
    dout = strided4(dob, n.batch, n.seqlen_q, n.heads, n.head_dim, bhsd);
    dq = strided4(dqb, n.batch, n.seqlen_q, n.heads, n.head_dim, bhsd);
    dk = strided4(dkb, n.batch, n.seqlen_k, n.heads_kv, n.head_dim, bhsd);
    dv = strided4(dvb, n.batch, n.seqlen_k, n.heads_kv, n.head_dim, bhsd);
  }

  /// O and LSE from kfa::forward, the inputs a training step hands to the backward.
  void forward(const Params& params) {
    kfa::forward(Space(), fwd.q, fwd.k, fwd.v, fwd.o, fwd.lse, params);
    Space().fence();
  }

  void poison() {
    const T nan = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    Kokkos::deep_copy(dqb, nan);
    Kokkos::deep_copy(dkb, nan);
    Kokkos::deep_copy(dvb, nan);
  }

  template <class Exec = Space>
  HostGrads backward(const Params& params, const Exec& exec = Exec()) {
    poison();
    kfa::backward(exec, dout, fwd.q, fwd.k, fwd.v, fwd.o, fwd.lse, dq, dk, dv, params);
    exec.fence();
    return read();
  }

  HostGrads standard_backward(const Params& params) {
    poison();
    kfa::reference::attention_backward(Space(), dout, fwd.q, fwd.k, fwd.v, fwd.o, fwd.lse, dq, dk, dv, params);
    Space().fence();
    return read();
  }

  HostGrads read() const { return {read4(dq), read4(dk), read4(dv)}; }
};

/// The absolute floor of the backward's rule, 4 x the forward's. The fused backward takes
/// D = rowsum(dO * O) from the stored O, as FlashAttention-2 does, so D carries O's rounding to T;
/// the standard backward's D = rowsum(P * dP) is consistent with its own P and does not. Where both
/// errors are a few ulps (a handful of keys) that alone can exceed the factor 2.
template <class T>
constexpr double backward_eps() {
  return 4 * abs_eps<T>();
}

struct BackwardErrors {
  double kfa[3], plain[3];  // dq, dk, dv
};

/// Runs kfa::backward and the standard backward on one random problem and checks both against fp64.
template <class Space, class T>
BackwardErrors check_backward(const Dims& n, const RefOptions& opt, bool bhsd = false, double magnitude = 1.0,
                              bool deterministic = false) {
  BackwardProblem<Space, T> p(n, opt, bhsd, magnitude);
  Params params = to_params(opt);
  params.deterministic = deterministic;
  p.forward(params);
  const HostGrads ref = reference_backward(p.fwd.host, p.dout_host, opt);
  const HostGrads plain = p.standard_backward(params);
  const HostGrads got = p.backward(params);
  INFO(type_name<T>() << " b" << n.batch << " sq" << n.seqlen_q << " sk" << n.seqlen_k << " h" << n.heads << "/"
                      << n.heads_kv << " d" << n.head_dim << " causal " << opt.causal << " window " << opt.window_left
                      << "," << opt.window_right << " softcap " << opt.softcap << " alibi " << !opt.alibi.empty()
                      << " bhsd " << bhsd << " magnitude " << magnitude << " deterministic " << deterministic);
  BackwardErrors e{};
  const std::vector<double>* r[3] = {&ref.dq, &ref.dk, &ref.dv};
  const std::vector<double>* g[3] = {&got.dq, &got.dk, &got.dv};
  const std::vector<double>* s[3] = {&plain.dq, &plain.dk, &plain.dv};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int t = 0; t < 3; ++t) {
    e.kfa[t] = max_abs_diff(*g[t], *r[t]);
    e.plain[t] = max_abs_diff(*s[t], *r[t]);
    INFO(names[t] << " error " << e.kfa[t] << " (standard " << e.plain[t] << "), max |grad| " << max_abs(*r[t]));
    CHECK(e.kfa[t] <= 2 * e.plain[t] + backward_eps<T>() * std::max(1.0, max_abs(*r[t])));
  }
  return e;
}

}  // namespace kfa::test
