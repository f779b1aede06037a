#pragma once
// fp64 host gradients of attention: the analytic backward of reference_forward (fp64_reference.hpp),
// for the loss L = sum(dO * O). Per row i:  P = softmax(score),  dP_ij = dO_i . v_j,
// D_i = sum_j P_ij dP_ij,  dscore_ij = P_ij (dP_ij - D_i),  dx_ij = dscore_ij * softcap'(x_ij)
// with x = scale * q.k,  dq_i += scale dx_ij k_j,  dk_j += scale dx_ij q_i,  dv_j += P_ij dO_i.
// The ALiBi bias does not depend on q or k. A finite-difference test checks this file.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fp64_reference.hpp"

namespace kfa::test {

struct HostGrads {
  std::vector<double> dq, dk, dv;  // [b, s, h, d] like q / k / v
};

inline HostGrads reference_backward(const HostQKV& in, const std::vector<double>& dout, const RefOptions& opt) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  const double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(n.head_dim));
  HostGrads g;
  g.dq.assign(in.q.size(), 0.0);
  g.dk.assign(in.k.size(), 0.0);
  g.dv.assign(in.v.size(), 0.0);
  std::vector<double> p(n.seqlen_k), x(n.seqlen_k);
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        const std::int64_t hk = h / group;
        const double* qi = &in.q[((b * n.seqlen_q + i) * n.heads + h) * d];
        const double* doi = &dout[((b * n.seqlen_q + i) * n.heads + h) * d];
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          p[j] = -std::numeric_limits<double>::infinity();
          if (!ref_visible(n, opt, i, j)) continue;
          const double* kj = &in.k[((b * n.seqlen_k + j) * n.heads_kv + hk) * d];
          double dot = 0;
          for (std::int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
          x[j] = dot * scale;
          p[j] = ref_score(n, opt, dot, h, i, j);
          mx = std::max(mx, p[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // no key: all gradients 0
        double sum = 0;
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
        std::vector<double> dp(n.seqlen_k, 0.0);
        double dd = 0;
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          p[j] /= sum;
          if (p[j] == 0) continue;
          const double* vj = &in.v[((b * n.seqlen_k + j) * n.heads_kv + hk) * d];
          for (std::int64_t c = 0; c < d; ++c) dp[j] += doi[c] * vj[c];
          dd += p[j] * dp[j];
        }
        double* dqi = &g.dq[((b * n.seqlen_q + i) * n.heads + h) * d];
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          if (p[j] == 0) continue;
          double dx = p[j] * (dp[j] - dd);
          if (opt.softcap != 0) {
            const double t = std::tanh(x[j] / opt.softcap);
            dx *= 1 - t * t;
          }
          const std::int64_t kv = ((b * n.seqlen_k + j) * n.heads_kv + hk) * d;
          for (std::int64_t c = 0; c < d; ++c) {
            dqi[c] += scale * dx * in.k[kv + c];
            g.dk[kv + c] += scale * dx * qi[c];
            g.dv[kv + c] += p[j] * doi[c];
          }
        }
      }
  return g;
}

/// The loss sum(dO * O) of reference_forward, for finite differences.
inline double reference_loss(const HostQKV& in, const std::vector<double>& dout, const RefOptions& opt) {
  std::vector<double> o, lse;
  reference_forward(in, opt, o, lse);
  double l = 0;
  for (std::size_t e = 0; e < o.size(); ++e) l += dout[e] * o[e];
  return l;
}

}  // namespace kfa::test
