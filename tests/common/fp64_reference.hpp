#pragma once
// fp64 host attention: the ground truth of every test. Plain loops over std::vector<double>,
// with the same mask and score-modifier semantics as the library (kfa/detail/tile_rules.hpp
// states them; this file restates them independently).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kfa::test {

struct Dims {
  std::int64_t batch = 1, seqlen_q = 1, seqlen_k = 1, heads = 1, heads_kv = 1, head_dim = 16;
};

struct RefOptions {
  double scale = 0;  // 0 -> 1/sqrt(d)
  bool causal = false;
  std::int64_t window_left = -1, window_right = -1;
  double softcap = 0;
  std::vector<float> alibi;
};

/// Host tensors in [b, s, h, d] order, contiguous.
struct HostQKV {
  Dims n;
  std::vector<double> q, k, v;
  double& at(std::vector<double>& t, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t c,
             std::int64_t seqlen, std::int64_t heads) const {
    return t[((b * seqlen + s) * heads + h) * n.head_dim + c];
  }
};

inline bool ref_visible(const Dims& n, const RefOptions& o, std::int64_t i, std::int64_t j) {
  const std::int64_t diag = i + n.seqlen_k - n.seqlen_q;
  std::int64_t wr = o.window_right;
  if (o.causal) wr = (wr < 0) ? 0 : std::min<std::int64_t>(wr, 0);
  if (o.window_left >= 0 && j < diag - o.window_left) return false;
  if (wr >= 0 && j > diag + wr) return false;
  return true;
}

/// Scaled, modified score of (i, j) in double.
inline double ref_score(const Dims& n, const RefOptions& o, double dot, std::int64_t h, std::int64_t i,
                        std::int64_t j) {
  const double scale = o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(n.head_dim));
  double x = dot * scale;
  if (o.softcap != 0) x = o.softcap * std::tanh(x / o.softcap);
  if (!o.alibi.empty()) x -= double(o.alibi[h]) * std::abs(double(i + n.seqlen_k - n.seqlen_q - j));
  return x;
}

/// out [b, sq, h, d], lse [b, h, sq]; rows that see no key give zeros and -inf.
inline void reference_forward(const HostQKV& in, const RefOptions& opt, std::vector<double>& out,
                              std::vector<double>& lse) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  out.assign(n.batch * n.seqlen_q * n.heads * d, 0.0);
  lse.assign(n.batch * n.heads * n.seqlen_q, -std::numeric_limits<double>::infinity());
  std::vector<double> s(n.seqlen_k);
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        const double* qi = &in.q[((b * n.seqlen_q + i) * n.heads + h) * d];
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          if (!ref_visible(n, opt, i, j)) { s[j] = -std::numeric_limits<double>::infinity(); continue; }
          const double* kj = &in.k[((b * n.seqlen_k + j) * n.heads_kv + h / group) * d];
          double dot = 0;
          for (std::int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
          s[j] = ref_score(n, opt, dot, h, i, j);
          mx = std::max(mx, s[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) { s[j] = std::exp(s[j] - mx); sum += s[j]; }
        double* oi = &out[((b * n.seqlen_q + i) * n.heads + h) * d];
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          if (s[j] == 0) continue;
          const double* vj = &in.v[((b * n.seqlen_k + j) * n.heads_kv + h / group) * d];
          const double p = s[j] / sum;
          for (std::int64_t c = 0; c < d; ++c) oi[c] += p * vj[c];
        }
        lse[(b * n.heads + h) * n.seqlen_q + i] = mx + std::log(sum);
      }
}

}  // namespace kfa::test
