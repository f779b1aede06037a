#pragma once
// Packed variable-length problems and their checks: every sequence of a forward_varlen /
// backward_varlen call against that sequence computed alone in fp64, with the per-sequence unfused
// reference as the yardstick of the tolerance rule. Shared by the host and the GPU suites.
#include <cmath>
#include <numeric>

#include "feature_backward.hpp"

namespace kfa::test {

/// A packed problem: q [total_q, heads, d], k/v [total_k, heads_kv, d], lse [heads, total_q], row-major
/// (LayoutRight: the default layout of a GPU space is LayoutLeft).
template <class S, class T>
struct Packed {
  using Mem = typename S::memory_space;
  using L = kfa::lse_type<T>;
  std::vector<std::int64_t> len_q, len_k;
  std::vector<std::int32_t> cu_q{0}, cu_k{0};
  std::int64_t heads, heads_kv, d, max_q = 0, max_k = 0;
  Problem<S, T> data;  // the packed tensors as a batch-1 problem of total_q x total_k rows
  Kokkos::View<T***, Kokkos::LayoutRight, Mem> q, k, v, o;
  Kokkos::View<L**, Kokkos::LayoutRight, Mem> lse;
  Kokkos::View<std::int32_t*, Mem> dcu_q, dcu_k;

  static std::int64_t sum(const std::vector<std::int64_t>& v) { return std::accumulate(v.begin(), v.end(), std::int64_t(0)); }

  Packed(std::vector<std::int64_t> lq, std::vector<std::int64_t> lk, std::int64_t h, std::int64_t hkv, std::int64_t dim)
      : len_q(lq), len_k(lk), heads(h), heads_kv(hkv), d(dim),
        data(Dims{1, std::max<std::int64_t>(sum(lq), 1), std::max<std::int64_t>(sum(lk), 1), h, hkv, dim}, RefOptions{}) {
    for (std::size_t b = 0; b < lq.size(); ++b) {
      cu_q.push_back(cu_q.back() + static_cast<std::int32_t>(lq[b]));
      cu_k.push_back(cu_k.back() + static_cast<std::int32_t>(lk[b]));
      max_q = std::max(max_q, lq[b]);
      max_k = std::max(max_k, lk[b]);
    }
    q = Kokkos::View<T***, Kokkos::LayoutRight, Mem>(data.qb.data(), cu_q.back(), h, dim);
    k = Kokkos::View<T***, Kokkos::LayoutRight, Mem>(data.kb.data(), cu_k.back(), hkv, dim);
    v = Kokkos::View<T***, Kokkos::LayoutRight, Mem>(data.vb.data(), cu_k.back(), hkv, dim);
    o = Kokkos::View<T***, Kokkos::LayoutRight, Mem>(data.ob.data(), cu_q.back(), h, dim);
    lse = Kokkos::View<L**, Kokkos::LayoutRight, Mem>(data.lb.data(), h, cu_q.back());
    dcu_q = to_device(cu_q);
    dcu_k = to_device(cu_k);
  }

  static Kokkos::View<std::int32_t*, Mem> to_device(const std::vector<std::int32_t>& h) {
    Kokkos::View<std::int32_t*, Mem> d("cu_seqlens", h.size());
    auto m = Kokkos::create_mirror_view(d);
    for (std::size_t i = 0; i < h.size(); ++i) m(i) = h[i];
    Kokkos::deep_copy(d, m);
    return d;
  }

  /// Sequence b alone as host tensors.
  HostQKV sequence(std::int64_t b) const {
    HostQKV s;
    s.n = Dims{1, len_q[b], len_k[b], heads, heads_kv, d};
    s.q.assign(data.host.q.begin() + cu_q[b] * heads * d, data.host.q.begin() + cu_q[b + 1] * heads * d);
    s.k.assign(data.host.k.begin() + cu_k[b] * heads_kv * d, data.host.k.begin() + cu_k[b + 1] * heads_kv * d);
    s.v.assign(data.host.v.begin() + cu_k[b] * heads_kv * d, data.host.v.begin() + cu_k[b + 1] * heads_kv * d);
    return s;
  }

  /// o [total_q, heads, d] and lse [heads, total_q] on the host.
  void read(std::vector<double>& out, std::vector<double>& l) const {
    auto oh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), o);
    auto lh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), lse);
    out.resize(oh.size());
    for (std::size_t e = 0; e < oh.size(); ++e) out[e] = static_cast<double>(static_cast<float>(oh.data()[e]));
    if constexpr (std::is_same_v<T, double>)
      for (std::size_t e = 0; e < oh.size(); ++e) out[e] = oh.data()[e];
    l.assign(lh.data(), lh.data() + lh.size());
  }

  /// Unmanaged [1, len, heads, d] views of sequence b (for the unfused reference, run per sequence).
  using V4 = Kokkos::View<T****, Kokkos::LayoutStride, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  using L3 = Kokkos::View<L***, Kokkos::LayoutStride, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
  static V4 rows(T* base, std::int64_t start, std::int64_t len, std::int64_t h, std::int64_t dim) {
    return V4(base + start * h * dim, Kokkos::LayoutStride(1, len * h * dim, len, h * dim, h, dim, dim, 1));
  }
  L3 lse_rows(std::int64_t b) const {
    const std::int64_t total = cu_q.back();
    return L3(data.lb.data() + cu_q[b], Kokkos::LayoutStride(1, heads * total, heads, total, len_q[b], 1));
  }
};

/// Runs forward_varlen and the per-sequence unfused reference, checks every sequence against fp64.
/// With dropout the unfused reference (which keys the mask by its own batch index 0) runs without it
/// and the bound is scaled by the keep-scale, the size of the dropout's amplification of errors.
template <class S, class T>
void check_varlen(Packed<S, T>& pk, const RefOptions& opt, FeatureOptions x = {}, const kfa::BlockMask* mask = nullptr,
                  kfa::Backend backend = kfa::Backend::automatic) {
  kfa::Params params = to_params(opt);
  params.backend = backend;
  params.block_mask = mask;
  params.dropout_p = x.dropout_p;
  params.seed = x.seed;
  params.offset = x.offset;
  kfa::Params plain_params = to_params(opt);
  S space;
  if (mask) x.allowed = [spec = mask->host_spec()](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
    return kfa::detail::block_mask_allows(spec, b, h, i, j);
  };
  pk.data.poison();
  for (std::size_t b = 0; b < pk.len_q.size(); ++b) {
    if (pk.len_q[b] == 0 || pk.len_k[b] == 0) continue;
    const auto q = pk.rows(pk.data.qb.data(), pk.cu_q[b], pk.len_q[b], pk.heads, pk.d);
    const auto k = pk.rows(pk.data.kb.data(), pk.cu_k[b], pk.len_k[b], pk.heads_kv, pk.d);
    const auto v = pk.rows(pk.data.vb.data(), pk.cu_k[b], pk.len_k[b], pk.heads_kv, pk.d);
    const auto o = pk.rows(pk.data.ob.data(), pk.cu_q[b], pk.len_q[b], pk.heads, pk.d);
    if (mask) {  // the unfused reference checks lengths: give it the sequence's own slice of the mask
      const kfa::BlockMask own = kfa::BlockMask::from_element_mask(
          {pk.len_q[b], pk.len_k[b], mask->shape().block_q, mask->shape().block_k, 1, mask->shape().heads},
          [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) { return x.allowed(b, h, i, j); });
      plain_params.block_mask = &own;
      kfa::reference::attention(space, q, k, v, o, pk.lse_rows(b), plain_params);
      space.fence();
    } else {
      kfa::reference::attention(space, q, k, v, o, pk.lse_rows(b), plain_params);
    }
  }
  space.fence();
  std::vector<double> std_o, std_lse, o, lse;
  pk.read(std_o, std_lse);
  pk.data.poison();
  kfa::forward_varlen(space, pk.q, pk.k, pk.v, pk.o, pk.lse, pk.dcu_q, pk.dcu_k, pk.max_q, pk.max_k, params);
  space.fence();
  pk.read(o, lse);
  const std::int64_t hd = pk.heads * pk.d, total = pk.cu_q.back();
  for (std::size_t b = 0; b < pk.len_q.size(); ++b) {
    const std::int64_t lq = pk.len_q[b], q0 = pk.cu_q[b];
    if (lq == 0) continue;
    std::vector<double> ref_o, ref_lse, plain_ref_o, plain_ref_lse;
    FeatureOptions xb = x;
    xb.batch_base = static_cast<std::int64_t>(b);
    reference_forward_features(pk.sequence(b), opt, xb, ref_o, ref_lse);
    FeatureOptions plain_x;
    plain_x.allowed = x.allowed;
    plain_x.batch_base = xb.batch_base;
    reference_forward_features(pk.sequence(b), opt, plain_x, plain_ref_o, plain_ref_lse);
    std::vector<double> so(o.begin() + q0 * hd, o.begin() + (q0 + lq) * hd);
    std::vector<double> po(std_o.begin() + q0 * hd, std_o.begin() + (q0 + lq) * hd);
    std::vector<double> sl, pl;
    for (std::int64_t h = 0; h < pk.heads; ++h)
      for (std::int64_t i = 0; i < lq; ++i) {
        sl.push_back(lse[h * total + q0 + i]);
        pl.push_back(std_lse[h * total + q0 + i]);
      }
    INFO(type_name<T>() << " sequence " << b << " of " << pk.len_q.size() << ": lq " << lq << " lk " << pk.len_k[b]
                        << " heads " << pk.heads << "/" << pk.heads_kv << " causal " << opt.causal << " dropout "
                        << x.dropout_p);
    if (pk.len_k[b] == 0) {  // no keys: zeros and -inf
      CHECK(max_abs(so) == 0.0);
      for (double l : sl) CHECK(l == -std::numeric_limits<double>::infinity());
      continue;
    }
    const double amp = ref_keep_scale(x);
    const double eo = max_abs_diff(so, ref_o), plain_o = max_abs_diff(po, plain_ref_o);
    const double el = max_abs_diff(sl, ref_lse), plain_l = max_abs_diff(pl, plain_ref_lse);
    // With dropout the yardstick runs without it (see above), so it misses the rounding of the
    // amplified output to T, which no kernel avoids (it is all there is with a single key: O = Z V).
    const double rounding = amp > 1 ? amp * unit_roundoff<T>() * max_abs(ref_o) : 0.0;
    INFO("o error " << eo << " (plain " << plain_o << "), lse error " << el << " (plain " << plain_l << ")");
    CHECK(eo <= 2 * amp * plain_o + amp * abs_eps<T>() + rounding);
    CHECK(el <= 2 * plain_l + abs_eps<T>() * std::max(1.0, max_abs(ref_lse)));
  }
}


/// forward_varlen then backward_varlen on a packed problem; each sequence's gradients against fp64,
/// with the per-sequence standard backward as the yardstick (without dropout: scaled as in check_varlen);
/// deterministic: a second run must give the same bits.
template <class S, class T>
void check_varlen_backward(Packed<S, T>& pk, const RefOptions& opt, FeatureOptions x, bool deterministic,
                           kfa::Backend backend = kfa::Backend::automatic) {
  using Mem = typename S::memory_space;
  using Pk = Packed<S, T>;
  kfa::Params params = to_params(opt);
  params.backend = backend;
  params.dropout_p = x.dropout_p;
  params.seed = x.seed;
  params.offset = x.offset;
  params.deterministic = deterministic;
  const std::int64_t tq = pk.cu_q.back(), tk = pk.cu_k.back(), h = pk.heads, hk = pk.heads_kv, d = pk.d;
  std::vector<double> dout_host;
  auto dob = pk.data.fill(tq * h * d, dout_host, 1.0);
  Kokkos::View<T*, Mem> dqb("dq", tq * h * d), dkb("dk", tk * hk * d), dvb("dv", tk * hk * d);
  Kokkos::View<T***, Kokkos::LayoutRight, Mem> dout(dob.data(), tq, h, d), dq(dqb.data(), tq, h, d), dk(dkb.data(), tk, hk, d),
      dv(dvb.data(), tk, hk, d);
  S space;
  kfa::forward_varlen(space, pk.q, pk.k, pk.v, pk.o, pk.lse, pk.dcu_q, pk.dcu_k, pk.max_q, pk.max_k, params);
  auto read = [&](const Kokkos::View<T*, Mem>& v) {
    auto m = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
    std::vector<double> r(m.size());
    for (std::size_t e = 0; e < m.size(); ++e) r[e] = static_cast<double>(static_cast<float>(m(e)));
    if constexpr (std::is_same_v<T, double>)
      for (std::size_t e = 0; e < m.size(); ++e) r[e] = m(e);
    return r;
  };
  auto poison = [&] {
    const T nan = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
    Kokkos::deep_copy(dqb, nan);
    Kokkos::deep_copy(dkb, nan);
    Kokkos::deep_copy(dvb, nan);
  };
  // the standard backward per sequence, without dropout (LSE does not depend on it)
  poison();
  const kfa::Params plain_params = to_params(opt);
  for (std::size_t b = 0; b < pk.len_q.size(); ++b) {
    if (pk.len_q[b] == 0 || pk.len_k[b] == 0) continue;
    auto rq = [&](auto& buf, std::int64_t heads) { return Pk::rows(buf.data(), pk.cu_q[b], pk.len_q[b], heads, d); };
    auto rk = [&](auto& buf) { return Pk::rows(buf.data(), pk.cu_k[b], pk.len_k[b], hk, d); };
    kfa::reference::attention_backward(space, rq(dob, h), rq(pk.data.qb, h), rk(pk.data.kb), rk(pk.data.vb),
                                       rq(pk.data.ob, h), pk.lse_rows(b), rq(dqb, h), rk(dkb), rk(dvb), plain_params);
  }
  space.fence();
  const std::vector<double> pdq = read(dqb), pdk = read(dkb), pdv = read(dvb);
  poison();
  kfa::backward_varlen(space, dout, pk.q, pk.k, pk.v, pk.o, pk.lse, dq, dk, dv, pk.dcu_q, pk.dcu_k, pk.max_q, pk.max_k,
                       params);
  space.fence();
  const std::vector<double> gdq = read(dqb), gdk = read(dkb), gdv = read(dvb);
  if (deterministic) {  // a second run (poisoned again first) gives the same bits
    poison();
    kfa::backward_varlen(space, dout, pk.q, pk.k, pk.v, pk.o, pk.lse, dq, dk, dv, pk.dcu_q, pk.dcu_k, pk.max_q, pk.max_k,
                         params);
    space.fence();
    CHECK(read(dqb) == gdq);
    CHECK(read(dkb) == gdk);
    CHECK(read(dvb) == gdv);
  }
  const double amp = ref_keep_scale(x);
  std::vector<double> fwd_o, fwd_lse;
  pk.read(fwd_o, fwd_lse);  // the forward's O as the backward reads it (rounded to T)
  const double scale = opt.scale != 0 ? opt.scale : 1.0 / std::sqrt(static_cast<double>(d));
  for (std::size_t b = 0; b < pk.len_q.size(); ++b) {
    const std::int64_t lq = pk.len_q[b], lk = pk.len_k[b], q0 = pk.cu_q[b] * h * d, k0 = pk.cu_k[b] * hk * d;
    auto slice = [](const std::vector<double>& v, std::int64_t at, std::int64_t n) {
      return std::vector<double>(v.begin() + at, v.begin() + at + n);
    };
    INFO(type_name<T>() << " sequence " << b << ": lq " << lq << " lk " << lk << " heads " << h << "/" << hk
                        << " causal " << opt.causal << " dropout " << x.dropout_p << " deterministic " << deterministic);
    if (lq == 0 || lk == 0) {  // nothing to attend: zero gradients
      CHECK(max_abs_diff(slice(gdq, q0, lq * h * d), std::vector<double>(lq * h * d, 0.0)) == 0.0);
      CHECK(max_abs_diff(slice(gdk, k0, lk * hk * d), std::vector<double>(lk * hk * d, 0.0)) == 0.0);
      CHECK(max_abs_diff(slice(gdv, k0, lk * hk * d), std::vector<double>(lk * hk * d, 0.0)) == 0.0);
      continue;
    }
    const HostQKV seq = pk.sequence(b);
    const std::vector<double> sd = slice(dout_host, q0, lq * h * d);
    FeatureOptions xb = x;
    xb.batch_base = static_cast<std::int64_t>(b);
    HostGrads ref, plain_ref;
    reference_backward_features(seq, opt, xb, sd, ref);
    reference_backward_features(seq, opt, FeatureOptions{}, sd, plain_ref);
    const std::int64_t n[3] = {lq * h * d, lk * hk * d, lk * hk * d}, at[3] = {q0, k0, k0};
    const std::vector<double>* g[3] = {&gdq, &gdk, &gdv};
    const std::vector<double>* p[3] = {&pdq, &pdk, &pdv};
    const std::vector<double>* r[3] = {&ref.dq, &ref.dk, &ref.dv};
    const std::vector<double>* pr[3] = {&plain_ref.dq, &plain_ref.dk, &plain_ref.dv};
    const char* names[3] = {"dq", "dk", "dv"};
    // With dropout the yardstick (the standard backward without it) does not see the rounding of the
    // amplified O that the fused backward's D = rowsum(dO * O) carries: bound its effect from the
    // measured error of D, |dD| <= max_i |sum_c dO_ic (O_ic - O_exact_ic)|, through dS = P Z (dP - D):
    // |d dQ| <= scale amp |dD| max|K|, |d dK| <= scale amp |dD| max|Q| lq group (a KV head's dK sums
    // over the group's query heads; dV does not use D).
    double d_rounding = 0;
    if (amp > 1) {
      std::vector<double> exact_o, exact_lse;
      reference_forward_features(seq, opt, xb, exact_o, exact_lse);
      for (std::int64_t i = 0; i < lq * h; ++i) {
        double dd = 0;
        for (std::int64_t c = 0; c < d; ++c) dd += sd[i * d + c] * (fwd_o[q0 + i * d + c] - exact_o[i * d + c]);
        d_rounding = std::max(d_rounding, std::abs(dd));
      }
    }
    const double d_term[3] = {scale * amp * d_rounding * max_abs(seq.k),
                              scale * amp * d_rounding * max_abs(seq.q) * static_cast<double>(lq * (h / hk)), 0.0};
    for (int t = 0; t < 3; ++t) {
      const double e = max_abs_diff(slice(*g[t], at[t], n[t]), *r[t]);
      const double pe = max_abs_diff(slice(*p[t], at[t], n[t]), *pr[t]);
      INFO(names[t] << " error " << e << " (standard " << pe << "), max |grad| " << max_abs(*r[t]) << ", D rounding term "
                    << d_term[t]);
      CHECK(e <= amp * (2 * pe + backward_eps<T>() * std::max(1.0, max_abs(*r[t]))) + d_term[t]);
    }
  }
}


}  // namespace kfa::test
