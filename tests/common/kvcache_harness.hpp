#pragma once
// KV-cache problems and their checks (kfa::forward_kvcache), shared by the host and the GPU suites.
// A cache holds random keys/values for each sequence's first cache_seqlens[b] positions and NaN
// everywhere else (so a kernel that reads past a sequence's keys, or a wrong page, fails); with a
// page table the pages are a random permutation with spare NaN pages. Appended keys must land in
// place, bit for bit, and every sequence's attention is judged against fp64 with the tolerance rule,
// the yardstick being the plain unfused attention over that sequence's keys in the same precision.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "harness.hpp"
#include "kfa/kvcache.hpp"

namespace kfa::test {

struct KvShape {
  std::int64_t batch = 2, seqlen_q = 1, heads = 4, heads_kv = 1, head_dim = 32;
  std::int64_t capacity = 64;  // keys per sequence the cache can hold
  std::int64_t page_size = 0;  // 0 = contiguous cache
  std::int64_t seqlen_new = 0; // keys appended by the call
};

template <class S, class T>
struct KvProblem {
  using Mem = typename S::memory_space;
  using L = kfa::lse_type<T>;
  using V4 = Kokkos::View<T****, Kokkos::LayoutRight, Mem>;
  KvShape n;
  std::vector<std::int32_t> lens;          // cache_seqlens (before the append)
  std::int64_t max_pages = 0, num_pages = 0;
  std::vector<std::int32_t> table;         // [batch, max_pages]
  std::vector<std::vector<double>> keys, values;  // per sequence: its lens[b] + seqlen_new keys, [j, hk, d]
  std::vector<double> qh;                  // [b, sq, h, d]
  V4 q, o, kc, vc, knew, vnew;
  Kokkos::View<L***, Kokkos::LayoutRight, Mem> lse;
  Kokkos::View<std::int32_t*, Mem> dlens;
  Kokkos::View<std::int32_t**, Kokkos::LayoutRight, Mem> dtable;

  static double stored(T x) {
    if constexpr (std::is_same_v<T, double>) return x;
    else return static_cast<double>(static_cast<float>(x));
  }
  static double draw() {
    std::normal_distribution<double> dist(0.0, 1.0);
    return stored(static_cast<T>(dist(rng())));
  }

  KvProblem(const KvShape& s, std::vector<std::int32_t> l) : n(s), lens(std::move(l)) {
    const std::int64_t B = n.batch, hk = n.heads_kv, d = n.head_dim;
    REQUIRE(static_cast<std::int64_t>(lens.size()) == B);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    qh.resize(B * n.seqlen_q * n.heads * d);
    for (double& x : qh) x = draw();
    keys.resize(B);
    values.resize(B);
    for (std::int64_t b = 0; b < B; ++b) {
      keys[b].resize((lens[b] + n.seqlen_new) * hk * d);
      values[b].resize(keys[b].size());
      for (double& x : keys[b]) x = draw();
      for (double& x : values[b]) x = draw();
    }
    q = upload4("q", qh, B, n.seqlen_q, n.heads, d);
    o = V4("o", B, n.seqlen_q, n.heads, d);
    lse = Kokkos::View<L***, Kokkos::LayoutRight, Mem>("lse", B, n.heads, n.seqlen_q);
    // the cache: NaN, then each sequence's first lens[b] keys at their positions
    std::int64_t e0 = B, e1 = n.capacity;
    if (n.page_size > 0) {
      max_pages = (n.capacity + n.page_size - 1) / n.page_size;
      num_pages = B * max_pages + 3;  // spare pages stay NaN
      std::vector<std::int32_t> perm(num_pages);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng());
      table.assign(perm.begin(), perm.begin() + B * max_pages);
      e0 = num_pages;
      e1 = n.page_size;
    }
    std::vector<double> kh(e0 * e1 * hk * d, nan), vh(kh.size(), nan);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t j = 0; j < lens[b]; ++j)
        for (std::int64_t c = 0; c < hk * d; ++c) {
          kh[cache_row(b, j) * hk * d + c] = keys[b][j * hk * d + c];
          vh[cache_row(b, j) * hk * d + c] = values[b][j * hk * d + c];
        }
    kc = upload4("k_cache", kh, e0, e1, hk, d);
    vc = upload4("v_cache", vh, e0, e1, hk, d);
    std::vector<double> kn(B * n.seqlen_new * hk * d), vn(kn.size());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < n.seqlen_new; ++i)
        for (std::int64_t c = 0; c < hk * d; ++c) {
          kn[(b * n.seqlen_new + i) * hk * d + c] = keys[b][(lens[b] + i) * hk * d + c];
          vn[(b * n.seqlen_new + i) * hk * d + c] = values[b][(lens[b] + i) * hk * d + c];
        }
    knew = upload4("k_new", kn, B, n.seqlen_new, hk, d);
    vnew = upload4("v_new", vn, B, n.seqlen_new, hk, d);
    dlens = Kokkos::View<std::int32_t*, Mem>("cache_seqlens", B);
    auto lm = Kokkos::create_mirror_view(dlens);
    for (std::int64_t b = 0; b < B; ++b) lm(b) = lens[b];
    Kokkos::deep_copy(dlens, lm);
    if (n.page_size > 0) {
      dtable = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, Mem>("block_table", B, max_pages);
      auto tm = Kokkos::create_mirror_view(dtable);
      for (std::int64_t i = 0; i < B * max_pages; ++i) tm.data()[i] = table[i];
      Kokkos::deep_copy(dtable, tm);
    }
  }

  /// Row of the cache (first index times the second extent plus the second) holding key j of sequence b.
  std::int64_t cache_row(std::int64_t b, std::int64_t j) const {
    if (n.page_size == 0) return b * n.capacity + j;
    return std::int64_t(table[b * max_pages + j / n.page_size]) * n.page_size + j % n.page_size;
  }

  static V4 upload4(const char* name, const std::vector<double>& vals, std::int64_t e0, std::int64_t e1, std::int64_t e2,
                    std::int64_t e3) {
    V4 v(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(name)), e0, e1, e2, e3);
    auto h = Kokkos::create_mirror_view(v);
    for (std::size_t i = 0; i < vals.size(); ++i) h.data()[i] = static_cast<T>(vals[i]);
    Kokkos::deep_copy(v, h);
    return v;
  }

  template <class View>
  static std::vector<double> download(const View& v) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
    std::vector<double> out(h.size());
    for (std::size_t i = 0; i < h.size(); ++i) {
      if constexpr (std::is_same_v<typename View::non_const_value_type, T>) out[i] = stored(h.data()[i]);
      else out[i] = static_cast<double>(h.data()[i]);
    }
    return out;
  }

  void poison() {
    Kokkos::deep_copy(o, static_cast<T>(std::numeric_limits<float>::quiet_NaN()));
    Kokkos::deep_copy(lse, std::numeric_limits<L>::quiet_NaN());
  }

  kfa::Params params(const RefOptions& opt, kfa::Backend backend) const {
    kfa::Params p = to_params(opt);
    p.backend = backend;
    return p;
  }

  /// forward_kvcache with this problem's append and page table.
  template <class Run>
  void run(const S& space, const kfa::Params& p, int splits, bool append, Run&& call) const {
    auto opt = kfa::KvCacheOptions<>{};
    opt.num_splits = splits;
    if (n.page_size > 0) {
      if (append) call(space, *this, p, opt.append(knew, vnew).paged(dtable));
      else call(space, *this, p, opt.paged(dtable));
    } else {
      if (append) call(space, *this, p, opt.append(knew, vnew));
      else call(space, *this, p, opt);
    }
  }
};

/// The entry point under test: kfa::forward_kvcache unless a suite swaps in another.
struct KfaKvCache {
  template <class S, class P, class Opt>
  void operator()(const S& space, const P& pb, const kfa::Params& p, const Opt& opt) const {
    kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, p, opt);
  }
};

/// Runs forward_kvcache (appending when the problem has seqlen_new > 0) and checks: the appended keys
/// and values in place bit for bit, the rest of the cache untouched, and every sequence's O and LSE
/// against fp64 within the tolerance rule (sequences without keys: O = 0, LSE = -inf).
template <class S, class T, class Call = KfaKvCache>
void check_kvcache(const KvShape& shape, const std::vector<std::int32_t>& lens, const RefOptions& opt,
                   kfa::Backend backend = kfa::Backend::automatic, int splits = 0, Call call = {}) {
  KvProblem<S, T> pb(shape, lens);
  const KvShape& n = pb.n;
  const std::int64_t B = n.batch, hk = n.heads_kv, d = n.head_dim, H = n.heads, sq = n.seqlen_q;
  INFO(type_name<T>() << " b" << B << " sq" << sq << " h" << H << "/" << hk << " d" << d << " capacity " << n.capacity
                      << " page " << n.page_size << " new " << n.seqlen_new << " splits " << splits << " causal "
                      << opt.causal << " window " << opt.window_left << "," << opt.window_right << " softcap "
                      << opt.softcap << " alibi " << !opt.alibi.empty() << " backend " << static_cast<int>(backend));
  S space;
  pb.poison();
  pb.run(space, pb.params(opt, backend), splits, n.seqlen_new > 0, call);
  space.fence();
  const std::vector<double> o = pb.download(pb.o), lse = pb.download(pb.lse);
  const std::vector<double> kc = pb.download(pb.kc), vc = pb.download(pb.vc);

  // the cache: every sequence's keys (old and appended) in place, every other row still NaN
  std::vector<char> used(kc.size() / (hk * d), 0);
  bool cache_ok = true;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t j = 0; j < lens[b] + n.seqlen_new; ++j) {
      const std::int64_t r = pb.cache_row(b, j);
      used[r] = 1;
      for (std::int64_t c = 0; c < hk * d; ++c)
        cache_ok = cache_ok && kc[r * hk * d + c] == pb.keys[b][j * hk * d + c] &&
                   vc[r * hk * d + c] == pb.values[b][j * hk * d + c];
    }
  for (std::size_t r = 0; r < used.size(); ++r)
    if (!used[r])
      for (std::int64_t c = 0; c < hk * d; ++c) cache_ok = cache_ok && std::isnan(kc[r * hk * d + c]) && std::isnan(vc[r * hk * d + c]);
  CHECK(cache_ok);

  using Mem = typename S::memory_space;
  using L = kfa::lse_type<T>;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = lens[b] + n.seqlen_new;
    INFO("sequence " << b << " of " << len << " keys");
    std::vector<double> so(o.begin() + b * sq * H * d, o.begin() + (b + 1) * sq * H * d), sl(sq * H);
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < sq; ++i) sl[h * sq + i] = lse[(b * H + h) * sq + i];
    if (len == 0) {
      CHECK(std::all_of(so.begin(), so.end(), [](double x) { return x == 0.0; }));
      CHECK(std::all_of(sl.begin(), sl.end(), [](double x) { return x == -std::numeric_limits<double>::infinity(); }));
      continue;
    }
    HostQKV seq;
    seq.n = Dims{1, sq, len, H, hk, d};
    seq.q.assign(pb.qh.begin() + b * sq * H * d, pb.qh.begin() + (b + 1) * sq * H * d);
    seq.k = pb.keys[b];
    seq.v = pb.values[b];
    std::vector<double> ref_o, ref_lse;
    reference_forward(seq, opt, ref_o, ref_lse);
    // the plain unfused attention over the same stored values
    auto qd = KvProblem<S, T>::upload4("q", seq.q, 1, sq, H, d);
    auto kd = KvProblem<S, T>::upload4("k", seq.k, 1, len, hk, d);
    auto vd = KvProblem<S, T>::upload4("v", seq.v, 1, len, hk, d);
    Kokkos::View<T****, Kokkos::LayoutRight, Mem> od("o", 1, sq, H, d);
    Kokkos::View<L***, Kokkos::LayoutRight, Mem> ld("lse", 1, H, sq);
    kfa::reference::attention(space, qd, kd, vd, od, ld, to_params(opt));
    space.fence();
    const std::vector<double> po = pb.download(od), pl = pb.download(ld);
    const double eo = max_abs_diff(so, ref_o), plain_o = max_abs_diff(po, ref_o);
    const double el = max_abs_diff(sl, ref_lse), plain_l = max_abs_diff(pl, ref_lse);
    INFO("o error " << eo << " (plain " << plain_o << "), lse error " << el << " (plain " << plain_l << ")");
    CHECK(eo <= 2 * plain_o + abs_eps<T>());
    CHECK(el <= 2 * plain_l + abs_eps<T>() * std::max(1.0, max_abs(ref_lse)));
  }
}

/// Random cache lengths covering the edge cases: 0, 1, odd, full (capacity minus the append).
inline std::vector<std::int32_t> edge_lengths(std::int64_t batch, std::int64_t capacity, std::int64_t added) {
  const std::int64_t room = capacity - added;
  std::vector<std::int32_t> l(batch);
  std::uniform_int_distribution<std::int64_t> any(0, room);
  for (std::int64_t b = 0; b < batch; ++b) {
    std::int64_t x = any(rng());
    if (b == 0) x = room;
    if (b == 1) x = 0;
    if (b == 2) x = std::min<std::int64_t>(1, room);
    if (b == 3) x = room % 2 == 1 ? room : std::max<std::int64_t>(room - 1, 0);
    l[b] = static_cast<std::int32_t>(x);
  }
  return l;
}

}  // namespace kfa::test
