#pragma once
// fp64 ground truth for the optional features: an extra element mask (what a block mask allows,
// restated by each test from its own description), dropout with the library's Philox function
// (the one shared definition of the mask), and a check that runs kfa::forward and the unfused
// kfa::reference::attention with the same Params and applies the tolerance rule of harness.hpp.
#include <functional>
#include <string>

#include "harness.hpp"
#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/philox.hpp"

namespace kfa::test {

struct FeatureOptions {
  /// Extra element mask allowed(batch, head, row, col); empty = everything allowed.
  std::function<bool(std::int64_t, std::int64_t, std::int64_t, std::int64_t)> allowed;
  double dropout_p = 0;
  std::uint64_t seed = 0, offset = 0;
  /// Added to the reference's batch index (a packed sequence checked alone keeps its index).
  std::int64_t batch_base = 0;
};

/// Dropout options with probability p under (seed, offset).
inline FeatureOptions dropout(double p, std::uint64_t seed, std::uint64_t offset = 0) {
  FeatureOptions x;
  x.dropout_p = p;
  x.seed = seed;
  x.offset = offset;
  return x;
}

/// The Params of `opt` with the dropout of `x`.
inline kfa::Params with_dropout(const RefOptions& opt, const FeatureOptions& x) {
  kfa::Params p = to_params(opt);
  p.dropout_p = x.dropout_p;
  p.seed = x.seed;
  p.offset = x.offset;
  return p;
}

/// Keep decision of element (b, h, i, j) exactly as kfa defines it (p rounded to float as in Params).
inline bool ref_keep(const FeatureOptions& x, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
  if (x.dropout_p == 0) return true;
  const auto key = kfa::detail::derive_dropout_key(x.seed, x.offset);
  return kfa::detail::dropout_keep(key, kfa::detail::dropout_threshold(static_cast<float>(x.dropout_p)),
                                   b + x.batch_base, h, i, j);
}

inline double ref_keep_scale(const FeatureOptions& x) {
  return kfa::detail::dropout_keep_scale(static_cast<float>(x.dropout_p));
}

/// Like reference_forward, with the extra mask and dropout; probs (optional) receives the softmax
/// probabilities [b, h, sq, sk] before dropout.
inline void reference_forward_features(const HostQKV& in, const RefOptions& opt, const FeatureOptions& x,
                                       std::vector<double>& out, std::vector<double>& lse,
                                       std::vector<double>* probs = nullptr) {
  const Dims& n = in.n;
  const std::int64_t d = n.head_dim, group = n.heads / n.heads_kv;
  out.assign(n.batch * n.seqlen_q * n.heads * d, 0.0);
  lse.assign(n.batch * n.heads * n.seqlen_q, -std::numeric_limits<double>::infinity());
  if (probs) probs->assign(n.batch * n.heads * n.seqlen_q * n.seqlen_k, 0.0);
  const double scale = ref_keep_scale(x);
  std::vector<double> s(n.seqlen_k);
  for (std::int64_t b = 0; b < n.batch; ++b)
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < n.seqlen_q; ++i) {
        const double* qi = &in.q[((b * n.seqlen_q + i) * n.heads + h) * d];
        double mx = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < n.seqlen_k; ++j) {
          s[j] = -std::numeric_limits<double>::infinity();
          if (!ref_visible(n, opt, i, j) || (x.allowed && !x.allowed(b + x.batch_base, h, i, j))) continue;
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
          if (probs) (*probs)[((b * n.heads + h) * n.seqlen_q + i) * n.seqlen_k + j] = s[j] / sum;
          if (s[j] == 0 || !ref_keep(x, b, h, i, j)) continue;
          const double* vj = &in.v[((b * n.seqlen_k + j) * n.heads_kv + h / group) * d];
          const double p = s[j] / sum * scale;
          for (std::int64_t c = 0; c < d; ++c) oi[c] += p * vj[c];
        }
        lse[(b * n.heads + h) * n.seqlen_q + i] = mx + std::log(sum);
      }
}

/// Runs kfa::forward (or `run`) and kfa::reference::attention with `params` on `p` and checks both
/// against the fp64 reference with `x` (the tolerance rule). Returns kfa's output error.
template <class Space, class T, class Run = KfaForward>
double check_forward_features(Problem<Space, T>& p, const Params& params, const FeatureOptions& x,
                              const std::string& what, Run run = {}) {
  std::vector<double> ref_o, ref_lse, o, lse, std_o, std_lse;
  reference_forward_features(p.host, p.opt, x, ref_o, ref_lse);
  Space space;
  p.poison();
  kfa::reference::attention(space, p.q, p.k, p.v, p.o, p.lse, params);
  space.fence();
  p.read(std_o, std_lse);
  p.poison();
  run(space, p, params);
  space.fence();
  p.read(o, lse);
  const Dims& n = p.n;
  const double eo = max_abs_diff(o, ref_o), po = max_abs_diff(std_o, ref_o);
  const double el = max_abs_diff(lse, ref_lse), pl = max_abs_diff(std_lse, ref_lse);
  INFO(what << ": " << type_name<T>() << " b" << n.batch << " sq" << n.seqlen_q << " sk" << n.seqlen_k << " h"
            << n.heads << "/" << n.heads_kv << " d" << n.head_dim << " causal " << p.opt.causal << " dropout "
            << x.dropout_p);
  INFO("o error " << eo << " (plain " << po << "), lse error " << el << " (plain " << pl << ")");
  CHECK(eo <= 2 * po + abs_eps<T>());
  CHECK(el <= 2 * pl + abs_eps<T>() * std::max(1.0, max_abs(ref_lse)));
  return eo;
}

}  // namespace kfa::test
