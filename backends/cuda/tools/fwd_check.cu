// Standalone check and timing of the native CUDA forwards, without Kokkos:
//   fwd_check            correctness: the Hopper kernel (wgmma/TMA) and the mma.sync kernel against an
//                        fp64 host forward, NaN-poisoned outputs; the Hopper error must stay within
//                        2 x the mma.sync kernel's error + 1e-3 (that kernel passes the tolerance rule in
//                        the GPU suite), LSE likewise.
//                        Feature cases (softcap, ALiBi, dropout, block masks, packed varlen sequences)
//                        compare both kernels' Featured variants with an fp64 reference of the feature
//                        policy's definitions; packed cases also check that no row past the last
//                        sequence was written.
//   fwd_check --bench    FlashAttention-2 paper setup (bf16, batch * seqlen = 16k, hidden 2048), both
//                        kernels, median of CUDA-event-timed calls with L2 flushed before each; TFLOP/s
//                        with 4 * b * h * n^2 * d FLOPs (halved when causal). One JSON line per case.
//   fwd_check --profile D CAUSAL SEQLEN   one Hopper forward after a warm-up (for ncu)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "sm80/forward_config.hpp"
#include "sm90/forward_sm90_config.hpp"
#include "device_fill.cuh"
#include "kfa/detail/feature_policy.hpp"

#define CHECK(x)                                                                                       \
  do {                                                                                                 \
    const cudaError_t e_ = (x);                                                                        \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_)); \
  } while (0)

namespace {

using kfa::detail::DType;
using kfa::detail::ForwardArgs;

/// Optional features of a case.
struct Feat {
  float softcap = 0.0f;
  bool alibi = false;
  float dropout = 0.0f;
  int block = 0;        // block mask of block x block blocks (random skipped / full / partial); 0: none
  bool varlen = false;  // packed sequences of random lengths up to (sq, sk)
};

struct Case {
  std::int64_t b, sq, sk, h, hkv, d;
  bool causal;
  std::int64_t wl = -1, wr = -1;
  bool bhsd = false;  // [b, h, s, d] storage (strided)
  double magnitude = 1.0;
  Feat f{};
};

template <class T>
T from_float(float x);
template <>
__nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__half from_float<__half>(float x) { return __float2half(x); }
float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
float to_float(__half x) { return __half2float(x); }

enum class Kernel { mma, wgmma };

template <class T>
void launch(Kernel k, const ForwardArgs& a, cudaStream_t st) {
  auto go = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if (k == Kernel::mma)
      kfa::cuda::launch_forward<D, T>(a, st);
    else
      kfa::cuda::hopper::launch_forward_sm90<D, T>(a, st);
  };
  switch (a.shape.head_dim) {
    case 64: go(std::integral_constant<int, 64>{}); break;
    case 96: go(std::integral_constant<int, 96>{}); break;
    case 128: go(std::integral_constant<int, 128>{}); break;
    case 256: go(std::integral_constant<int, 256>{}); break;
    default: throw std::runtime_error("head_dim");
  }
}

/// Device buffers and launcher arguments of one case (host copies only for checked cases).
template <class T>
struct Problem {
  Case c;
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  ForwardArgs a;
  std::vector<T> hq, hk, hv;
  // Features: sequence offsets and lengths (padded: 0 and the call's), ALiBi slopes, the block mask.
  std::vector<std::int32_t> cu_q, cu_k;
  std::int64_t rows_q = 0, rows_k = 0;  // rows of q/o and k/v per batch stride (packed: all)
  static constexpr std::int64_t tail = 128;  // packed: poisoned rows after the last sequence's
  std::vector<float> slopes;
  std::vector<std::int32_t> states;
  std::vector<std::uint32_t> bits;
  kfa::detail::BlockSparseSpec host_mask;
  std::int32_t *d_cu_q = nullptr, *d_cu_k = nullptr, *d_states = nullptr;
  std::uint32_t* d_bits = nullptr;
  float* d_slopes = nullptr;

  std::int64_t o_elems() const { return (c.f.varlen ? rows_q + tail : c.b * c.sq) * c.h * c.d; }
  std::int64_t lse_elems() const { return c.f.varlen ? c.h * rows_q : c.b * c.h * c.sq; }

  explicit Problem(const Case& cs, std::mt19937_64& rng, bool timing_only = false) : c(cs) {
    std::normal_distribution<float> nd(0.0f, static_cast<float>(c.magnitude));
    auto fill = [&](std::vector<T>& h, std::int64_t n) {
      h.resize(n);
      for (auto& x : h) x = from_float<T>(nd(rng));
    };
    cu_q.assign(c.b + 1, 0), cu_k.assign(c.b + 1, 0);
    for (std::int64_t b = 0; b < c.b; ++b) {
      std::int64_t lq = c.sq, lk = c.sk;
      if (c.f.varlen && b > 0) {  // sequence 0 keeps the maximal lengths
        lq = std::uniform_int_distribution<std::int64_t>(0, c.sq)(rng);
        lk = std::uniform_int_distribution<std::int64_t>(0, c.sk)(rng);
      }
      cu_q[b + 1] = static_cast<std::int32_t>(cu_q[b] + (c.f.varlen ? lq : 0));
      cu_k[b + 1] = static_cast<std::int32_t>(cu_k[b] + (c.f.varlen ? lk : 0));
    }
    rows_q = c.f.varlen ? cu_q[c.b] : c.sq;
    rows_k = c.f.varlen ? cu_k[c.b] : c.sk;
    const std::int64_t nq = c.f.varlen ? rows_q * c.h * c.d : c.b * c.sq * c.h * c.d;
    const std::int64_t nk = c.f.varlen ? rows_k * c.hkv * c.d : c.b * c.sk * c.hkv * c.d;
    CHECK(cudaMalloc(&q, std::max<std::int64_t>(nq, 8) * sizeof(T)));
    CHECK(cudaMalloc(&o, o_elems() * sizeof(T)));
    CHECK(cudaMalloc(&k, std::max<std::int64_t>(nk, 8) * sizeof(T)));
    CHECK(cudaMalloc(&v, std::max<std::int64_t>(nk, 8) * sizeof(T)));
    CHECK(cudaMalloc(&lse, std::max<std::int64_t>(lse_elems(), 1) * sizeof(float)));
    if (timing_only) {
      const float m = static_cast<float>(c.magnitude) * 1.7f;  // about the normal's spread
      fill_uniform<<<1024, 256>>>(q, std::size_t(nq), 1, m);
      fill_uniform<<<1024, 256>>>(k, std::size_t(nk), 2, m);
      fill_uniform<<<1024, 256>>>(v, std::size_t(nk), 3, m);
      CHECK(cudaDeviceSynchronize());
    } else {
      fill(hq, nq);
      fill(hk, nk);
      fill(hv, nk);
      CHECK(cudaMemcpy(q, hq.data(), nq * sizeof(T), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(k, hk.data(), nk * sizeof(T), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(v, hv.data(), nk * sizeof(T), cudaMemcpyHostToDevice));
    }
    a.dtype = std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
    a.shape = {c.b, c.sq, c.sk, c.h, c.hkv, c.d};
    auto t4 = [&](void* p, std::int64_t s, std::int64_t heads) {
      kfa::detail::Tensor4 t;
      t.data = p;
      if (c.f.varlen) {  // [total, h, d]
        t.stride_b = 0, t.stride_s = heads * c.d, t.stride_h = c.d;
      } else if (c.bhsd) {  // [b, h, s, d]
        t.stride_b = heads * s * c.d, t.stride_h = s * c.d, t.stride_s = c.d;
      } else {  // [b, s, h, d]
        t.stride_b = s * heads * c.d, t.stride_s = heads * c.d, t.stride_h = c.d;
      }
      return t;
    };
    a.q = t4(q, c.sq, c.h), a.o = t4(o, c.sq, c.h), a.k = t4(k, c.sk, c.hkv), a.v = t4(v, c.sk, c.hkv);
    a.lse = c.f.varlen ? kfa::detail::Tensor3{lse, 0, rows_q, 1} : kfa::detail::Tensor3{lse, c.h * c.sq, c.sq, 1};
    a.score.scale = 1.0 / std::sqrt(double(c.d));
    a.score.window_left = c.wl;
    a.score.window_right = c.causal ? (c.wr < 0 ? 0 : std::min<std::int64_t>(c.wr, 0)) : c.wr;
    if (c.f.varlen) {
      CHECK(cudaMalloc(&d_cu_q, cu_q.size() * sizeof(std::int32_t)));
      CHECK(cudaMalloc(&d_cu_k, cu_k.size() * sizeof(std::int32_t)));
      CHECK(cudaMemcpy(d_cu_q, cu_q.data(), cu_q.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(d_cu_k, cu_k.data(), cu_k.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
      a.varlen.cu_seqlens_q = d_cu_q, a.varlen.cu_seqlens_k = d_cu_k;
    }
    a.score.softcap = c.f.softcap;
    if (c.f.alibi) {
      for (std::int64_t h = 0; h < c.h; ++h) slopes.push_back(std::exp2(-8.0f * float(h + 1) / float(c.h)));
      CHECK(cudaMalloc(&d_slopes, slopes.size() * sizeof(float)));
      CHECK(cudaMemcpy(d_slopes, slopes.data(), slopes.size() * sizeof(float), cudaMemcpyHostToDevice));
      a.score.alibi_slopes = d_slopes;
    }
    if (c.f.dropout > 0) {
      a.score.dropout_p = c.f.dropout;
      a.score.seed = rng(), a.score.offset = rng() % 4096;
      a.score.batch_base = 3;
    }
    if (c.f.block > 0) {  // one mask for every batch and head: states skipped 30%, full 40%, partial 30%
      kfa::detail::BlockSparseSpec& m = host_mask;
      m.block_q = m.block_k = c.f.block;
      m.n_qblocks = static_cast<std::int32_t>((c.sq + c.f.block - 1) / c.f.block);
      m.n_kblocks = static_cast<std::int32_t>((c.sk + c.f.block - 1) / c.f.block);
      m.words_per_block = c.f.block * c.f.block / 32;
      std::uniform_int_distribution<int> pick(0, 9);
      int partial = 0;
      for (std::int64_t i = 0; i < std::int64_t(m.n_qblocks) * m.n_kblocks; ++i) {
        const int r = pick(rng);
        states.push_back(r < 3 ? kfa::detail::block_skipped : r < 7 ? kfa::detail::block_full : partial++);
      }
      for (std::int64_t i = 0; i < std::int64_t(partial) * m.words_per_block; ++i)
        bits.push_back(static_cast<std::uint32_t>(rng()) & static_cast<std::uint32_t>(rng()) ? static_cast<std::uint32_t>(rng()) : 0u);
      CHECK(cudaMalloc(&d_states, states.size() * sizeof(std::int32_t)));
      CHECK(cudaMalloc(&d_bits, std::max<std::size_t>(bits.size(), 1) * sizeof(std::uint32_t)));
      CHECK(cudaMemcpy(d_states, states.data(), states.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
      if (!bits.empty())
        CHECK(cudaMemcpy(d_bits, bits.data(), bits.size() * sizeof(std::uint32_t), cudaMemcpyHostToDevice));
      a.score.blocks = m;
      a.score.blocks.row_ptr = d_states;  // enabled(); the forwards read the dense states and the bits only
      a.score.blocks.block_state = d_states;
      a.score.blocks.partial_bits = d_bits;
      m.row_ptr = states.data();
      m.block_state = states.data();
      m.partial_bits = bits.data();
    }
  }
  ~Problem() {
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(lse);
    cudaFree(d_cu_q), cudaFree(d_cu_k), cudaFree(d_states), cudaFree(d_bits), cudaFree(d_slopes);
  }
  std::int64_t qi(std::int64_t b, std::int64_t s, std::int64_t h, const kfa::detail::Tensor4& t) const {
    return b * t.stride_b + s * t.stride_s + h * t.stride_h;
  }
  std::int64_t len_q(std::int64_t b) const { return c.f.varlen ? cu_q[b + 1] - cu_q[b] : c.sq; }
  std::int64_t len_k(std::int64_t b) const { return c.f.varlen ? cu_k[b + 1] - cu_k[b] : c.sk; }
  std::int64_t off_q(std::int64_t b) const { return c.f.varlen ? cu_q[b] : 0; }
  std::int64_t off_k(std::int64_t b) const { return c.f.varlen ? cu_k[b] : 0; }
};

struct Errors {
  double o = 0, lse = 0;
  bool finite = true;
};

/// Runs kernel `k`, compares sampled rows with the fp64 reference (the feature policy's definitions:
/// softcap and ALiBi of modify_score, block_allows, dropout_keep after the softmax sum).
template <class T>
Errors run_and_compare(Problem<T>& p, Kernel k, const std::vector<std::int64_t>& rows) {
  const Case& c = p.c;
  CHECK(cudaMemset(p.o, 0xFF, p.o_elems() * sizeof(T)));  // NaN poison
  CHECK(cudaMemset(p.lse, 0xFF, p.lse_elems() * sizeof(float)));
  launch<T>(k, p.a, 0);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<T> ho(p.o_elems());
  std::vector<float> hl(p.lse_elems());
  CHECK(cudaMemcpy(ho.data(), p.o, ho.size() * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(hl.data(), p.lse, hl.size() * sizeof(float), cudaMemcpyDeviceToHost));
  Errors e;
  if (c.f.varlen)  // nothing past the last sequence's rows may have been written
    for (std::int64_t x = p.rows_q * c.h * c.d; x < p.o_elems(); ++x)
      if (!std::isnan(to_float(ho[x]))) e.finite = false;
  const std::int64_t wr = p.a.score.window_right, wl = c.wl;
  const kfa::detail::DropoutPolicy drop = kfa::detail::make_dropout(p.a.score);
  std::vector<double> s(c.sk), acc(c.d);
  for (std::int64_t b = 0; b < c.b; ++b) {
    const std::int64_t lq = p.len_q(b), lk = p.len_k(b), oq = p.off_q(b), ok = p.off_k(b);
    kfa::detail::Shape ss = p.a.shape;
    ss.seqlen_q = lq, ss.seqlen_k = lk;
    const std::int64_t diag = lk - lq;
    for (std::int64_t h = 0; h < c.h; ++h)
      for (std::int64_t i : rows) {
        if (i >= lq) continue;
        const std::int64_t hk = h / (c.h / c.hkv);
        const kfa::detail::BlockRow br = kfa::detail::block_row(p.host_mask, b, h, i);
        double mx = -INFINITY;
        for (std::int64_t j = 0; j < lk; ++j) {
          bool vis = !(wl >= 0 && j < i + diag - wl) && !(wr >= 0 && j > i + diag + wr);
          if (c.f.block > 0) vis = vis && kfa::detail::block_allows(p.host_mask, br, j);
          double dot = 0;
          for (std::int64_t x = 0; x < c.d; ++x)
            dot += double(to_float(p.hq[p.qi(b, oq + i, h, p.a.q) + x])) *
                   double(to_float(p.hk[p.qi(b, ok + j, hk, p.a.k) + x]));
          double sc = dot * p.a.score.scale;
          if (c.f.softcap != 0) sc = c.f.softcap * std::tanh(sc / c.f.softcap);
          if (c.f.alibi) sc += kfa::detail::alibi_bias<double>(p.slopes[h], i, j, ss);
          s[j] = vis ? sc : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0;
        if (mx > -INFINITY)
          for (std::int64_t j = 0; j < lk; ++j) {
            const double w = std::exp(s[j] - mx);
            sum += w;
            double wv = w;
            if (drop.on)
              wv = kfa::detail::dropout_keep(drop.key, drop.threshold, b + drop.batch_base, h, i, j) ? w * drop.keep_scale : 0.0;
            if (wv != 0)
              for (std::int64_t x = 0; x < c.d; ++x) acc[x] += wv * double(to_float(p.hv[p.qi(b, ok + j, hk, p.a.v) + x]));
          }
        for (std::int64_t x = 0; x < c.d; ++x) {
          const double ref = sum > 0 ? acc[x] / sum : 0.0;
          const double got = to_float(ho[p.qi(b, oq + i, h, p.a.o) + x]);
          if (!std::isfinite(got)) e.finite = false;
          e.o = std::max(e.o, std::abs(got - ref));
        }
        const double lref = sum > 0 ? mx + std::log(sum) : -INFINITY;
        const double lgot = hl[b * p.a.lse.stride_b + h * p.a.lse.stride_h + (oq + i) * p.a.lse.stride_s];
        if (std::isnan(lgot) || (std::isinf(lgot) != std::isinf(lref))) e.finite = false;
        else if (std::isfinite(lref)) e.lse = std::max(e.lse, std::abs(lgot - lref));
      }
  }
  return e;
}

template <class T>
bool check_case(const Case& c, std::mt19937_64& rng) {
  Problem<T> p(c, rng);
  std::vector<std::int64_t> rows;
  const std::int64_t step = c.f.varlen ? 1 : std::max<std::int64_t>(1, c.sq / 97);  // packed: every row
  for (std::int64_t i = 0; i < c.sq; i += step) rows.push_back(i);
  if (rows.back() != c.sq - 1) rows.push_back(c.sq - 1);
  const Errors base = run_and_compare<T>(p, Kernel::mma, rows);
  const Errors hop = run_and_compare<T>(p, Kernel::wgmma, rows);
  const bool ok = hop.finite && base.finite && hop.o <= 2 * base.o + 1e-3 && hop.lse <= 2 * base.lse + 1e-4;
  char feat[96] = "";
  if (c.f.softcap != 0 || c.f.alibi || c.f.dropout > 0 || c.f.block > 0 || c.f.varlen)
    std::snprintf(feat, sizeof feat, " [softcap%.0f alibi%d drop%.2f block%d varlen%d]", c.f.softcap, int(c.f.alibi),
                  c.f.dropout, c.f.block, int(c.f.varlen));
  std::printf("%s %-5s b%lld sq%lld sk%lld h%lld/%lld d%lld causal%d win(%lld,%lld)%s mag%.0f%s  err O mma %.2e wgmma %.2e  LSE %.2e %.2e\n",
              ok ? "ok  " : "FAIL", std::is_same_v<T, __half> ? "fp16" : "bf16", (long long)c.b, (long long)c.sq,
              (long long)c.sk, (long long)c.h, (long long)c.hkv, (long long)c.d, int(c.causal), (long long)c.wl,
              (long long)c.wr, c.bhsd ? " bhsd" : "", c.magnitude, feat, base.o, hop.o, base.lse, hop.lse);
  return ok;
}

int run_checks() {
  std::random_device rd;
  std::mt19937_64 rng((std::uint64_t(rd()) << 32) ^ rd());
  const std::vector<Case> cases = {
      {1, 128, 128, 1, 1, 64, false},   {1, 128, 128, 1, 1, 128, false}, {2, 257, 257, 4, 4, 64, false},
      {1, 300, 300, 4, 2, 128, true},   {2, 129, 200, 2, 2, 128, false, -1, -1, true},
      {1, 1000, 1000, 3, 1, 64, true},  {1, 200, 77, 2, 2, 128, true},  // rows that see no key
      {1, 17, 4097, 2, 1, 64, false, 32, 8},  {1, 1, 129, 2, 2, 128, false}, {1, 4097, 17, 1, 1, 64, false},
      {1, 384, 384, 2, 2, 64, false, -1, -1, false, 3.0}, {1, 513, 513, 2, 1, 96, true},
      {1, 333, 555, 2, 2, 256, false}, {1, 1024, 1024, 2, 1, 256, true}, {2, 2048, 2048, 2, 2, 128, true},
      {1, 1000, 1000, 2, 2, 128, false, 100, 50},
      // features (Featured variants of both kernels)
      {1, 300, 300, 2, 1, 128, false, -1, -1, false, 3.0, {30.0f}},
      {2, 257, 400, 2, 2, 64, true, -1, -1, false, 1.0, {0.0f, true}},
      {1, 500, 500, 2, 2, 256, true, -1, -1, false, 1.0, {20.0f, true}},
      {2, 300, 300, 2, 1, 128, false, -1, -1, false, 1.0, {0.0f, false, 0.2f}},
      {1, 333, 333, 2, 2, 256, true, -1, -1, false, 1.0, {0.0f, false, 0.15f}},
      {1, 300, 300, 2, 2, 96, false, -1, -1, false, 1.0, {0.0f, false, 0.1f}},
      {1, 700, 700, 2, 2, 128, false, -1, -1, false, 1.0, {0.0f, false, 0.0f, 64}},
      {2, 500, 650, 2, 1, 64, true, -1, -1, false, 1.0, {0.0f, false, 0.0f, 128}},
      {1, 900, 900, 2, 2, 256, false, 300, 0, false, 1.0, {0.0f, false, 0.0f, 256}},
      {1, 513, 513, 2, 2, 96, false, -1, -1, false, 1.0, {10.0f, true, 0.1f, 64}},
      {5, 300, 400, 2, 1, 128, false, -1, -1, false, 1.0, {0.0f, false, 0.0f, 0, true}},
      {6, 200, 200, 4, 2, 64, true, -1, -1, false, 1.0, {0.0f, false, 0.0f, 0, true}},
      {4, 600, 333, 2, 2, 256, true, -1, -1, false, 1.0, {0.0f, false, 0.0f, 0, true}},
      {4, 260, 260, 2, 2, 96, false, 40, 10, false, 1.0, {0.0f, false, 0.0f, 0, true}},
      {5, 400, 400, 2, 1, 128, true, -1, -1, false, 1.0, {25.0f, true, 0.1f, 128, true}},
  };
  int failed = 0;
  for (const Case& c : cases) {
    failed += !check_case<__nv_bfloat16>(c, rng);
    failed += !check_case<__half>(c, rng);
  }
  std::printf("%s: %d of %zu cases failed\n", failed ? "FAILED" : "passed", failed, 2 * cases.size());
  return failed ? 1 : 0;
}

double time_ms(const std::vector<float>& ms) {
  std::vector<float> s = ms;
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

int run_bench(int reps) {
  std::mt19937_64 rng(7);
  void* flush = nullptr;
  const std::size_t flush_bytes = 256u << 20;
  CHECK(cudaMalloc(&flush, flush_bytes));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (int d : {64, 128, 256})
    for (int causal : {0, 1})
      for (std::int64_t n : {512, 1024, 2048, 4096, 8192, 16384}) {
        const std::int64_t b = std::max<std::int64_t>(1, 16384 / n), h = 2048 / d;
        Problem<__nv_bfloat16> p({b, n, n, h, h, d, bool(causal)}, rng, true);
        const double flops = 4.0 * b * h * n * n * d / (causal ? 2 : 1);
        std::printf("{\"d\": %d, \"causal\": %d, \"n\": %lld", d, causal, (long long)n);
        for (Kernel k : {Kernel::mma, Kernel::wgmma}) {
          for (int w = 0; w < 3; ++w) launch<__nv_bfloat16>(k, p.a, 0);
          std::vector<float> ms;
          for (int r = 0; r < reps; ++r) {
            CHECK(cudaMemsetAsync(flush, r, flush_bytes));
            CHECK(cudaEventRecord(e0));
            launch<__nv_bfloat16>(k, p.a, 0);
            CHECK(cudaEventRecord(e1));
            CHECK(cudaEventSynchronize(e1));
            float t = 0;
            CHECK(cudaEventElapsedTime(&t, e0, e1));
            ms.push_back(t);
          }
          CHECK(cudaGetLastError());
          std::printf(", \"%s\": %.1f", k == Kernel::mma ? "mma" : "wgmma", flops / time_ms(ms) / 1e9);
        }
        std::printf("}\n");
        std::fflush(stdout);
      }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return run_bench(argc > 2 ? std::atoi(argv[2]) : 30);
    if (argc > 4 && std::strcmp(argv[1], "--profile") == 0) {
      std::mt19937_64 rng(7);
      const int d = std::atoi(argv[2]);
      const std::int64_t n = std::atoll(argv[4]);
      Problem<__nv_bfloat16> p({std::max<std::int64_t>(1, 16384 / n), n, n, 2048 / d, 2048 / d, d, std::atoi(argv[3]) != 0}, rng, true);
      launch<__nv_bfloat16>(Kernel::wgmma, p.a, 0);
      launch<__nv_bfloat16>(Kernel::wgmma, p.a, 0);
      CHECK(cudaDeviceSynchronize());
      return 0;
    }
    return run_checks();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
