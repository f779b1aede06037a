#pragma once
// fp64 ground truth for the benchmark: exact attention of a chosen subset of query rows, so the
// error of a long-sequence run can be checked in seconds. Inputs are the values the run saw
// (already rounded to its element type), in [b, s, h, d] order, MHA.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace kfa::bench {

struct HostProblem {
  std::int64_t batch, heads, seqlen_q, seqlen_k, head_dim;
  bool causal;
  std::vector<double> q, k, v;  // rounded input values
};

/// Query rows to check: all of them when there are at most `max_rows`, else `max_rows` evenly
/// spread rows that include the first and the last (the causal extremes).
inline std::vector<std::int64_t> sample_rows(std::int64_t seqlen_q, std::int64_t max_rows) {
  std::vector<std::int64_t> rows;
  if (max_rows <= 0 || seqlen_q <= max_rows) {
    for (std::int64_t i = 0; i < seqlen_q; ++i) rows.push_back(i);
    return rows;
  }
  for (std::int64_t r = 0; r < max_rows; ++r) rows.push_back(r * (seqlen_q - 1) / (max_rows - 1));
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

/// Exact output rows: out[((b * H + h) * rows.size() + r) * d + c] for every batch and head.
inline std::vector<double> reference_rows(const HostProblem& p, const std::vector<std::int64_t>& rows) {
  const std::int64_t d = p.head_dim, H = p.heads;
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> out(p.batch * H * rows.size() * d, 0.0), s(p.seqlen_k);
  for (std::int64_t b = 0; b < p.batch; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::size_t r = 0; r < rows.size(); ++r) {
        const std::int64_t i = rows[r];
        // bottom-right aligned causal: query i sees keys j <= i + seqlen_k - seqlen_q
        const std::int64_t last = p.causal ? std::min(p.seqlen_k - 1, i + p.seqlen_k - p.seqlen_q) : p.seqlen_k - 1;
        double* o = &out[((b * H + h) * rows.size() + r) * d];
        if (last < 0) continue;
        const double* qi = &p.q[((b * p.seqlen_q + i) * H + h) * d];
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j <= last; ++j) {
          const double* kj = &p.k[((b * p.seqlen_k + j) * H + h) * d];
          double dot = 0;
          for (std::int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (std::int64_t j = 0; j <= last; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (std::int64_t j = 0; j <= last; ++j) {
          const double* vj = &p.v[((b * p.seqlen_k + j) * H + h) * d];
          const double w = s[j] / sum;
          for (std::int64_t c = 0; c < d; ++c) o[c] += w * vj[c];
        }
      }
  return out;
}

}  // namespace kfa::bench
