#pragma once
// fp64 gradients for the optional features (extra element mask, dropout with kfa's Philox mask):
// the gradients of loss = sum(O * dout) w.r.t. q, k, v, written out from the forward definition of
// feature_reference.hpp. A finite-difference test checks this reference itself.
#include <cmath>
#include <vector>

#include "backward_harness.hpp"
#include "feature_reference.hpp"

namespace kfa::test {

inline void reference_backward_features(const HostQKV& in, const RefOptions& opt, const FeatureOptions& x,
                                        const std::vector<double>& dout, HostGrads& g) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  const double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(d));
  const double keep_scale = ref_keep_scale(x);
  g.dq.assign(in.q.size(), 0.0);
  g.dk.assign(in.k.size(), 0.0);
  g.dv.assign(in.v.size(), 0.0);
  std::vector<double> p(n.seqlen_k), dfac(n.seqlen_k), z(n.seqlen_k), dp(n.seqlen_k);
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        const std::int64_t qi = ((b * n.seqlen_q + i) * n.heads + h) * d;
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          p[j] = -std::numeric_limits<double>::infinity();
          dfac[j] = 1;
          if (!ref_visible(n, opt, i, j) || (x.allowed && !x.allowed(b + x.batch_base, h, i, j))) continue;
          const std::int64_t kj = ((b * n.seqlen_k + j) * n.heads_kv + h / group) * d;
          double dot = 0;
          for (std::int64_t c = 0; c < d; ++c) dot += in.q[qi + c] * in.k[kj + c];
          p[j] = ref_score(n, opt, dot, h, i, j);
          if (opt.softcap != 0) {
            const double t = std::tanh(dot * scale / opt.softcap);
            dfac[j] = 1 - t * t;
          }
          mx = std::max(mx, p[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // no key: no gradient
        double sum = 0;
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
        double delta = 0;
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          p[j] /= sum;
          z[j] = ref_keep(x, b, h, i, j) ? keep_scale : 0.0;
          const std::int64_t vj = ((b * n.seqlen_k + j) * n.heads_kv + h / group) * d;
          double dpt = 0;
          for (std::int64_t c = 0; c < d; ++c) dpt += dout[qi + c] * in.v[vj + c];
          dp[j] = z[j] * dpt;
          delta += p[j] * dp[j];
        }
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          if (p[j] == 0) continue;
          const std::int64_t kj = ((b * n.seqlen_k + j) * n.heads_kv + h / group) * d;
          const double ds = p[j] * (dp[j] - delta) * dfac[j] * scale;
          for (std::int64_t c = 0; c < d; ++c) {
            g.dq[qi + c] += ds * in.k[kj + c];
            g.dk[kj + c] += ds * in.q[qi + c];
            g.dv[kj + c] += p[j] * z[j] * dout[qi + c];
          }
        }
      }
}

/// sum(O * dout) of the feature reference (for finite differences).
inline double reference_loss_features(const HostQKV& in, const RefOptions& opt, const FeatureOptions& x,
                             const std::vector<double>& dout) {
  std::vector<double> o, lse;
  reference_forward_features(in, opt, x, o, lse);
  double l = 0;
  for (std::size_t e = 0; e < o.size(); ++e) l += o[e] * dout[e];
  return l;
}

/// kfa::backward and the standard backward with `params` (features included) on one random problem,
/// against the fp64 feature gradients, with the backward tolerance rule of backward_harness.hpp;
/// deterministic: a second run must give the same bits.
template <class Space, class T>
void check_backward_features(const Dims& n, const RefOptions& opt, const Params& params, const FeatureOptions& x,
                             const std::string& what) {
  BackwardProblem<Space, T> p(n, opt);
  p.forward(params);
  HostGrads ref;
  reference_backward_features(p.fwd.host, opt, x, p.dout_host, ref);
  const HostGrads plain = p.standard_backward(params);
  const HostGrads got = p.backward(params);
  INFO(what << ": " << type_name<T>() << " b" << n.batch << " sq" << n.seqlen_q << " sk" << n.seqlen_k << " h"
            << n.heads << "/" << n.heads_kv << " d" << n.head_dim << " causal " << opt.causal << " dropout "
            << x.dropout_p << " deterministic " << params.deterministic);
  const std::vector<double>* r[3] = {&ref.dq, &ref.dk, &ref.dv};
  const std::vector<double>* g[3] = {&got.dq, &got.dk, &got.dv};
  const std::vector<double>* s[3] = {&plain.dq, &plain.dk, &plain.dv};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int t = 0; t < 3; ++t) {
    const double e = max_abs_diff(*g[t], *r[t]), pe = max_abs_diff(*s[t], *r[t]);
    INFO(names[t] << " error " << e << " (standard " << pe << "), max |grad| " << max_abs(*r[t]));
    CHECK(e <= 2 * pe + backward_eps<T>() * std::max(1.0, max_abs(*r[t])));
  }
  if (params.deterministic) {  // a second run (poisoned again first) gives the same bits
    const HostGrads again = p.backward(params);
    CHECK(again.dq == got.dq);
    CHECK(again.dk == got.dk);
    CHECK(again.dv == got.dv);
  }
}

}  // namespace kfa::test
