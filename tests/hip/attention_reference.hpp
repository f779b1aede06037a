#pragma once
// Host attention forward and backward for the standalone HIP runner (no Kokkos), with a rounding
// hook: with the identity it is the fp64 truth; with rounding to half/bfloat16 it stands for a plain
// unfused implementation that stores scores, probabilities and gradients in the input precision
// (the baseline of the tolerance rule). Masks and modifiers follow tests/common/fp64_reference.hpp.
// The features beyond tests/common's options (a block mask's element answer, the dropout factor)
// come in as an Extra: predicates of (batch, head, row, col), rows and cols within the sequence; a
// packed sequence is run as its own batch-1 problem whose batch index is Extra::batch_index.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "../common/fp64_reference.hpp"

namespace kfa::test {

using Round = std::function<double(double)>;
inline double no_rounding(double x) { return x; }

/// Block-mask and dropout semantics of the reference, as functions of (batch, head, row, col).
struct Extra {
  std::function<bool(std::int64_t, std::int64_t, std::int64_t, std::int64_t)> allow;  // empty: every element
  std::function<double(std::int64_t, std::int64_t, std::int64_t, std::int64_t)> keep;  // empty: 1 (no dropout)
  std::int64_t batch_index = 0;  // added to the problem's batch index before asking allow / keep
  double z(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    return keep ? keep(b + batch_index, h, i, j) : 1.0;
  }
  bool allowed(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    return !allow || allow(b + batch_index, h, i, j);
  }
};

struct Grads {
  std::vector<double> dq, dk, dv;  // [b, s, h, d] (dk, dv over heads_kv)
};

/// Probabilities P[i][j] of one (batch, head), rounded by `rnd` like a plain implementation;
/// `t` receives tanh of the capped argument (softcap) for the backward; lse of each row. Undropped.
inline void probabilities(const HostQKV& in, const RefOptions& opt, std::int64_t b, std::int64_t h, const Round& rnd,
                          std::vector<double>& p, std::vector<double>& t, std::vector<double>& lse,
                          const Extra& x = {}) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv, hk = h / group;
  const double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(d));
  p.assign(n.seqlen_q * n.seqlen_k, 0.0);
  t.assign(n.seqlen_q * n.seqlen_k, 0.0);
  lse.assign(n.seqlen_q, -std::numeric_limits<double>::infinity());
  std::vector<double> s(n.seqlen_k);
  for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
      s[j] = -std::numeric_limits<double>::infinity();
      if (!ref_visible(n, opt, i, j) || !x.allowed(b, h, i, j)) continue;
      double dot = 0;
      for (std::int64_t c = 0; c < d; ++c)
        dot += in.q[((b * n.seqlen_q + i) * n.heads + h) * d + c] * in.k[((b * n.seqlen_k + j) * n.heads_kv + hk) * d + c];
      if (opt.softcap != 0) t[i * n.seqlen_k + j] = std::tanh(dot * scale / opt.softcap);
      s[j] = rnd(ref_score(n, opt, dot, h, i, j));
      mx = std::max(mx, s[j]);
    }
    if (mx == -std::numeric_limits<double>::infinity()) continue;
    double sum = 0;
    for (std::int64_t j = 0; j < n.seqlen_k; ++j) sum += std::exp(s[j] - mx);
    for (std::int64_t j = 0; j < n.seqlen_k; ++j) p[i * n.seqlen_k + j] = rnd(std::exp(s[j] - mx) / sum);
    lse[i] = mx + std::log(sum);
  }
}

/// out [b, sq, h, d], lse [b, h, sq]. Dropout: O = (P Z) V, LSE of the undropped scores.
inline void attention_forward(const HostQKV& in, const RefOptions& opt, const Round& rnd, std::vector<double>& out,
                              std::vector<double>& lse_out, const Extra& x = {}) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  out.assign(n.batch * n.seqlen_q * n.heads * d, 0.0);
  lse_out.assign(n.batch * n.heads * n.seqlen_q, 0.0);
  std::vector<double> p, t, lse;
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h) {
      probabilities(in, opt, b, h, rnd, p, t, lse, x);
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        lse_out[(b * n.heads + h) * n.seqlen_q + i] = lse[i];
        for (std::int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (std::int64_t j = 0; j < n.seqlen_k; ++j)
            acc += rnd(p[i * n.seqlen_k + j] * x.z(b, h, i, j)) *
                   in.v[((b * n.seqlen_k + j) * n.heads_kv + h / group) * d + c];
          out[((b * n.seqlen_q + i) * n.heads + h) * d + c] = rnd(acc);
        }
      }
    }
}

/// Gradients of L = sum(O * dout) with respect to q, k, v; `o` is the forward output the backward
/// is given (delta = rowsum(dout * o)). Dropout, Z = keep * keep_scale: dV = (P Z)^T dout,
/// dP = Z (dout V^T), dS = P (dP - delta).
inline Grads attention_backward(const HostQKV& in, const RefOptions& opt, const std::vector<double>& o,
                                const std::vector<double>& dout, const Round& rnd, const Extra& x = {}) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  const double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(double(d));
  Grads g;
  g.dq.assign(in.q.size(), 0.0);
  std::vector<double> dk(in.k.size(), 0.0), dv(in.v.size(), 0.0);
  std::vector<double> p, t, lse, ds(n.seqlen_q * n.seqlen_k);
  const auto qi = [&](std::int64_t b, std::int64_t i, std::int64_t h) { return ((b * n.seqlen_q + i) * n.heads + h) * d; };
  const auto kj = [&](std::int64_t b, std::int64_t j, std::int64_t h) { return ((b * n.seqlen_k + j) * n.heads_kv + h / group) * d; };
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h) {
      probabilities(in, opt, b, h, rnd, p, t, lse, x);
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        double delta = 0;
        for (std::int64_t c = 0; c < d; ++c) delta += dout[qi(b, i, h) + c] * o[qi(b, i, h) + c];
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          const double pij = p[i * n.seqlen_k + j], z = x.z(b, h, i, j), pz = rnd(pij * z);
          double dp = 0;
          for (std::int64_t c = 0; c < d; ++c) dp += dout[qi(b, i, h) + c] * in.v[kj(b, j, h) + c];
          double g = pij * (rnd(z * rnd(dp)) - delta);
          if (opt.softcap != 0) g *= 1.0 - t[i * n.seqlen_k + j] * t[i * n.seqlen_k + j];
          ds[i * n.seqlen_k + j] = rnd(g);
          for (std::int64_t c = 0; c < d; ++c) dv[kj(b, j, h) + c] += pz * dout[qi(b, i, h) + c];
        }
      }
      for (std::int64_t i = 0; i < n.seqlen_q; ++i)
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          const double x = ds[i * n.seqlen_k + j] * scale;
          if (x == 0) continue;
          for (std::int64_t c = 0; c < d; ++c) {
            g.dq[qi(b, i, h) + c] += x * in.k[kj(b, j, h) + c];
            dk[kj(b, j, h) + c] += x * in.q[qi(b, i, h) + c];
          }
        }
    }
  for (double& x : g.dq) x = rnd(x);
  for (double& x : dk) x = rnd(x);
  for (double& x : dv) x = rnd(x);
  g.dk = std::move(dk);
  g.dv = std::move(dv);
  return g;
}

}  // namespace kfa::test
