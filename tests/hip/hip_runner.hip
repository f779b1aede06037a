// kfa-hip-runner: the GPU suite of the native HIP kernels without Kokkos (a HIP Kokkos needs ROCm
// >= 6.2; this runs with any ROCm that runs the kernels). Random problems go through
// kfa::hip::forward / kfa::hip::backward on the device and are judged against fp64 with the
// tolerance rule: kfa's max-abs error <= 2 x (error of a plain attention that keeps scores,
// probabilities and gradients in the input precision) + a tiny epsilon. Outputs are poisoned with NaN
// first. Exit status: 0 all passed, 1 a failure, 77 no AMD GPU (CTest: skipped).
//   kfa-hip-runner [--quick] [--only TEXT] [seed]   --quick: a subset that covers every feature once per
//                                                   type; --only: the cases whose name contains TEXT
#include <hip/hip_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_reference.hpp"
#include "kfa/detail/feature_args.hpp"
#include "kfa/detail/philox.hpp"
#include "kfa_hip/launch.hpp"

using namespace kfa::test;
using kfa::detail::DType;

namespace {

void check(hipError_t e, const char* what) {
  if (e != hipSuccess) throw std::runtime_error(std::string(what) + ": " + hipGetErrorString(e));
}

// ---- 16-bit formats on the host (round to nearest even) ----
std::uint16_t to_bf16(double x) {
  const float f = static_cast<float>(x);
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
double from_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::uint16_t to_f16(double x) {
  if (std::isnan(x)) return 0x7e00;
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  x = std::abs(x);
  if (x >= 65520.0) return sign | 0x7c00;  // rounds to infinity
  int e;
  std::frexp(x, &e);
  const int exp = std::max(e - 1, -14);
  const double mant = std::nearbyint(x / std::ldexp(1.0, exp - 10));  // 11 significant bits (ties to even)
  if (mant == 0) return sign;
  std::int64_t m = static_cast<std::int64_t>(mant);
  int biased = exp + 15;
  if (m >= 2048) { m >>= 1; ++biased; }
  if (m < 1024) return static_cast<std::uint16_t>(sign | m);  // subnormal
  return static_cast<std::uint16_t>(sign | (biased << 10) | (m - 1024));
}
double from_f16(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? NAN : s * INFINITY;
  if (e == 0) return s * std::ldexp(m, -24);
  return s * std::ldexp(1024 + m, e - 25);
}
std::uint16_t encode(double x, DType t) { return t == DType::f16 ? to_f16(x) : to_bf16(x); }
double decode(std::uint16_t h, DType t) { return t == DType::f16 ? from_f16(h) : from_bf16(h); }
double round_to(double x, DType t) { return std::isfinite(x) ? decode(encode(x, t), t) : x; }
double abs_eps(DType t) { return t == DType::f16 ? 1e-4 : 1e-3; }

std::mt19937_64 rng;

/// A device tensor [b, s, h, d] stored as [b, s, h, d] or [b, h, s, d].
struct DevTensor {
  std::int64_t b, s, h, d;
  bool bhsd;
  std::uint16_t* ptr = nullptr;
  DevTensor(std::int64_t b_, std::int64_t s_, std::int64_t h_, std::int64_t d_, bool bhsd_)
      : b(b_), s(s_), h(h_), d(d_), bhsd(bhsd_) {
    check(hipMalloc(&ptr, sizeof(std::uint16_t) * b * s * h * d), "hipMalloc");
  }
  DevTensor(const DevTensor&) = delete;
  ~DevTensor() { (void)hipFree(ptr); }
  kfa::detail::Tensor4 desc() const {
    kfa::detail::Tensor4 t;
    t.data = ptr;
    t.stride_b = s * h * d;
    t.stride_s = bhsd ? d : h * d;
    t.stride_h = bhsd ? s * d : d;
    return t;
  }
  std::int64_t offset(std::int64_t bi, std::int64_t si, std::int64_t hi) const {
    const kfa::detail::Tensor4 t = desc();
    return bi * t.stride_b + si * t.stride_s + hi * t.stride_h;
  }
  /// host values in [b, s, h, d] order
  void upload(const std::vector<double>& v, DType t) {
    std::vector<std::uint16_t> raw(v.size());
    std::size_t e = 0;
    for (std::int64_t bi = 0; bi < b; ++bi)
      for (std::int64_t si = 0; si < s; ++si)
        for (std::int64_t hi = 0; hi < h; ++hi)
          for (std::int64_t c = 0; c < d; ++c) raw[offset(bi, si, hi) + c] = encode(v[e++], t);
    check(hipMemcpy(ptr, raw.data(), raw.size() * 2, hipMemcpyHostToDevice), "upload");
  }
  std::vector<double> download(DType t) const {
    std::vector<std::uint16_t> raw(b * s * h * d);
    check(hipMemcpy(raw.data(), ptr, raw.size() * 2, hipMemcpyDeviceToHost), "download");
    std::vector<double> v(raw.size());
    std::size_t e = 0;
    for (std::int64_t bi = 0; bi < b; ++bi)
      for (std::int64_t si = 0; si < s; ++si)
        for (std::int64_t hi = 0; hi < h; ++hi)
          for (std::int64_t c = 0; c < d; ++c) v[e++] = decode(raw[offset(bi, si, hi) + c], t);
    return v;
  }
  void poison() { check(hipMemset(ptr, 0xff, sizeof(std::uint16_t) * b * s * h * d), "poison"); }  // NaN in both formats
};

std::vector<double> random_values(std::size_t n, double magnitude, DType t) {
  std::normal_distribution<double> dist(0.0, magnitude);
  std::vector<double> v(n);
  for (double& x : v) x = round_to(dist(rng), t);
  return v;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

/// Options of the features beyond RefOptions.
struct Features {
  std::vector<std::int64_t> seq_q, seq_k;  // packed sequences (varlen) when not empty; Dims: count, longest
  int block = 0;                           // block mask of block x block blocks (0: none)
  float dropout_p = 0.0f;
  std::int64_t batch_base = 0;             // ScoreSpec::batch_base (dropout and block-mask batch index)
};

struct Case {
  bool quick;  // part of the --quick subset
  std::string name;
  DType dtype;
  Dims n;
  RefOptions opt;
  bool bhsd = false;
  double magnitude = 1.0;
  bool backward = true;
  Features f;
};

/// Device copy of a host vector (freed at scope exit).
template <class T>
struct DevArray {
  T* ptr = nullptr;
  explicit DevArray(const std::vector<T>& v) {
    check(hipMalloc(&ptr, sizeof(T) * (v.empty() ? 1 : v.size())), "hipMalloc");
    if (!v.empty()) check(hipMemcpy(ptr, v.data(), sizeof(T) * v.size(), hipMemcpyHostToDevice), "upload");
  }
  DevArray(const DevArray&) = delete;
  ~DevArray() { (void)hipFree(ptr); }
};

/// A random block mask on the host: dense states per (mask row, key block) (skipped / full / index of
/// a partial entry) and the partial entries' bits, plus its row-compressed lists; broadcast over
/// neither batch nor heads. allow() restates the element rule independently of the kernels' policy.
struct HostBlockMask {
  std::int32_t bq = 0, bk = 0, nq = 0, nk = 0, batch = 0, heads = 0, words = 0;
  std::vector<std::int32_t> state, row_ptr, col_idx, prow_ptr, pcol_idx;
  std::vector<std::uint32_t> bits;
  HostBlockMask(int block, std::int64_t batch_, std::int64_t heads_, std::int64_t sq, std::int64_t sk)
      : bq(block), bk(block), nq(std::int32_t((sq + block - 1) / block)), nk(std::int32_t((sk + block - 1) / block)),
        batch(std::int32_t(batch_)), heads(std::int32_t(heads_)), words(block * block / 32) {
    std::uniform_int_distribution<int> kind(0, 2);
    std::bernoulli_distribution bit(0.6);
    const std::int64_t rows = std::int64_t(batch) * heads * nq;
    row_ptr.push_back(0);
    prow_ptr.push_back(0);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int32_t kb = 0; kb < nk; ++kb) {
        const int k = kind(rng);  // 0 skipped, 1 full, 2 partial
        if (k == 0) state.push_back(kfa::detail::block_skipped);
        if (k == 1) {
          state.push_back(kfa::detail::block_full);
          col_idx.push_back(kb);
        }
        if (k == 2) {
          state.push_back(std::int32_t(pcol_idx.size()));
          pcol_idx.push_back(kb);
          for (int w = 0; w < words; ++w) {
            std::uint32_t x = 0;
            for (int e = 0; e < 32; ++e) x |= std::uint32_t(bit(rng)) << e;
            bits.push_back(x);
          }
        }
      }
      row_ptr.push_back(std::int32_t(col_idx.size()));
      prow_ptr.push_back(std::int32_t(pcol_idx.size()));
    }
  }
  bool allow(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    const std::int32_t v = state[((b * heads + h) * nq + i / bq) * nk + j / bk];
    if (v == kfa::detail::block_full) return true;
    if (v == kfa::detail::block_skipped) return false;
    const std::int64_t e = (i % bq) * bk + j % bk;
    return (bits[std::size_t(v) * words + e / 32] >> (e % 32)) & 1u;
  }
};

/// The rows of each sequence in the packed (or [b, s, ...]) host order.
struct Seq {
  std::int64_t q0, sq, k0, sk;
};

std::vector<Seq> sequences(const Case& c) {
  std::vector<Seq> out;
  if (c.f.seq_q.empty()) {
    for (std::int64_t b = 0; b < c.n.batch; ++b)
      out.push_back({b * c.n.seqlen_q, c.n.seqlen_q, b * c.n.seqlen_k, c.n.seqlen_k});
    return out;
  }
  std::int64_t q0 = 0, k0 = 0;
  for (std::size_t b = 0; b < c.f.seq_q.size(); ++b) {
    out.push_back({q0, c.f.seq_q[b], k0, c.f.seq_k[b]});
    q0 += c.f.seq_q[b];
    k0 += c.f.seq_k[b];
  }
  return out;
}

/// Rows [r0, r0 + n) of a [rows, heads, d] host tensor.
std::vector<double> slice(const std::vector<double>& t, std::int64_t r0, std::int64_t n, std::int64_t row_elems) {
  return {t.begin() + r0 * row_elems, t.begin() + (r0 + n) * row_elems};
}

/// Host forward of every sequence, each as its own batch-1 problem (masks align to its lengths), in
/// the layout the kernels write: O [b, s, h, d] or packed [total_q, h, d]; LSE [b, h, sq] or packed
/// [h, total_q]. fp64 without an Extra: tests/common's reference forward.
void host_forward(const Case& c, const HostQKV& in, const Extra& x, const Round& rnd, bool fp64,
                  std::vector<double>& o, std::vector<double>& lse) {
  const Dims& n = in.n;
  const bool packed = !c.f.seq_q.empty();
  const std::int64_t qrow = n.heads * n.head_dim, krow = n.heads_kv * n.head_dim;
  const std::vector<Seq> seqs = sequences(c);
  const std::int64_t total_q = seqs.back().q0 + seqs.back().sq;
  o.assign(in.q.size(), 0.0);
  lse.assign(total_q * n.heads, -INFINITY);
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const Seq& sq = seqs[b];
    HostQKV sub;
    sub.n = {1, sq.sq, sq.sk, n.heads, n.heads_kv, n.head_dim};
    sub.q = slice(in.q, sq.q0, sq.sq, qrow);
    sub.k = slice(in.k, sq.k0, sq.sk, krow);
    sub.v = slice(in.v, sq.k0, sq.sk, krow);
    Extra xb = x;
    xb.batch_index = std::int64_t(b);
    std::vector<double> so, sl;
    if (fp64 && !x.allow && !x.keep)
      reference_forward(sub, c.opt, so, sl);
    else
      attention_forward(sub, c.opt, rnd, so, sl, xb);
    std::copy(so.begin(), so.end(), o.begin() + sq.q0 * qrow);
    for (std::int64_t h = 0; h < n.heads; ++h)
      for (std::int64_t i = 0; i < sq.sq; ++i)
        lse[packed ? h * total_q + sq.q0 + i : (std::int64_t(b) * n.heads + h) * sq.sq + i] = sl[h * sq.sq + i];
  }
}

/// Host gradients of every sequence, given the forward output `o` and `dout` (host order).
Grads host_backward(const Case& c, const HostQKV& in, const Extra& x, const Round& rnd, const std::vector<double>& o,
                    const std::vector<double>& dout) {
  const Dims& n = in.n;
  const std::int64_t qrow = n.heads * n.head_dim, krow = n.heads_kv * n.head_dim;
  Grads g;
  g.dq.assign(in.q.size(), 0.0);
  g.dk.assign(in.k.size(), 0.0);
  g.dv.assign(in.v.size(), 0.0);
  const std::vector<Seq> seqs = sequences(c);
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const Seq& sq = seqs[b];
    HostQKV sub;
    sub.n = {1, sq.sq, sq.sk, n.heads, n.heads_kv, n.head_dim};
    sub.q = slice(in.q, sq.q0, sq.sq, qrow);
    sub.k = slice(in.k, sq.k0, sq.sk, krow);
    sub.v = slice(in.v, sq.k0, sq.sk, krow);
    Extra xb = x;
    xb.batch_index = std::int64_t(b);
    const Grads s = attention_backward(sub, c.opt, slice(o, sq.q0, sq.sq, qrow), slice(dout, sq.q0, sq.sq, qrow), rnd, xb);
    std::copy(s.dq.begin(), s.dq.end(), g.dq.begin() + sq.q0 * qrow);
    std::copy(s.dk.begin(), s.dk.end(), g.dk.begin() + sq.k0 * krow);
    std::copy(s.dv.begin(), s.dv.end(), g.dv.begin() + sq.k0 * krow);
  }
  return g;
}

int failures = 0, passed = 0;

void judge(const Case& c, const char* what, double kfa_err, double plain_err, double eps) {
  const bool ok = kfa_err <= 2 * plain_err + eps;
  std::printf("%-4s %-58s %-4s %-3s error %.3e (plain %.3e)\n", ok ? "ok" : "FAIL", c.name.c_str(),
              kfa::detail::dtype_name(c.dtype), what, kfa_err, plain_err);
  (ok ? passed : failures)++;
}

void run_case(const Case& c) {
  const Dims& n = c.n;
  const DType t = c.dtype;
  const bool packed = !c.f.seq_q.empty();
  const std::vector<Seq> seqs = sequences(c);
  const std::int64_t total_q = seqs.back().q0 + seqs.back().sq, total_k = seqs.back().k0 + seqs.back().sk;
  // padded: [b, s, h, d] (or [b, h, s, d]) tensors; packed: [total, h, d] with stride_b = 0
  const std::int64_t tb = packed ? 1 : n.batch, tsq = packed ? total_q : n.seqlen_q, tsk = packed ? total_k : n.seqlen_k;
  HostQKV in;
  in.n = n;
  in.q = random_values(tb * tsq * n.heads * n.head_dim, c.magnitude, t);
  in.k = random_values(tb * tsk * n.heads_kv * n.head_dim, c.magnitude, t);
  in.v = random_values(tb * tsk * n.heads_kv * n.head_dim, 1.0, t);
  DevTensor q(tb, tsq, n.heads, n.head_dim, c.bhsd), k(tb, tsk, n.heads_kv, n.head_dim, c.bhsd),
      v(tb, tsk, n.heads_kv, n.head_dim, c.bhsd), o(tb, tsq, n.heads, n.head_dim, c.bhsd);
  const auto desc = [packed](const DevTensor& x) {
    kfa::detail::Tensor4 d = x.desc();
    if (packed) d.stride_b = 0;
    return d;
  };
  q.upload(in.q, t);
  k.upload(in.k, t);
  v.upload(in.v, t);
  float* lse = nullptr;
  float* slopes = nullptr;
  const std::size_t lse_count = total_q * n.heads;
  check(hipMalloc(&lse, lse_count * sizeof(float)), "hipMalloc");
  if (!c.opt.alibi.empty()) {
    check(hipMalloc(&slopes, c.opt.alibi.size() * sizeof(float)), "hipMalloc");
    check(hipMemcpy(slopes, c.opt.alibi.data(), c.opt.alibi.size() * sizeof(float), hipMemcpyHostToDevice), "slopes");
  }

  kfa::detail::ForwardArgs fa;
  fa.dtype = t;
  fa.shape = {n.batch, n.seqlen_q, n.seqlen_k, n.heads, n.heads_kv, n.head_dim};
  fa.q = desc(q);
  fa.k = desc(k);
  fa.v = desc(v);
  fa.o = desc(o);
  fa.lse = packed ? kfa::detail::Tensor3{lse, 0, total_q, 1} : kfa::detail::Tensor3{lse, n.heads * n.seqlen_q, n.seqlen_q, 1};
  kfa::detail::ScoreSpec& sc = fa.score;
  sc.scale = c.opt.scale != 0 ? c.opt.scale : 1.0 / std::sqrt(double(n.head_dim));
  sc.window_left = c.opt.window_left;
  sc.window_right = c.opt.causal ? (c.opt.window_right < 0 ? 0 : std::min<std::int64_t>(c.opt.window_right, 0))
                                 : c.opt.window_right;
  sc.softcap = static_cast<float>(c.opt.softcap);
  sc.alibi_slopes = slopes;
  sc.batch_base = c.f.batch_base;

  // packed sequences
  std::vector<std::int32_t> cu_q{0}, cu_k{0};
  for (const Seq& s : seqs) {
    cu_q.push_back(std::int32_t(s.q0 + s.sq));
    cu_k.push_back(std::int32_t(s.k0 + s.sk));
  }
  DevArray<std::int32_t> cu_q_dev(cu_q), cu_k_dev(cu_k);
  if (packed) fa.varlen = {cu_q_dev.ptr, cu_k_dev.ptr, total_q, total_k};

  // block mask: per (batch + batch_base, head), the dense state table and the row-compressed lists
  Extra x;
  std::unique_ptr<HostBlockMask> mask;
  std::vector<std::unique_ptr<DevArray<std::int32_t>>> mask_ints;
  std::unique_ptr<DevArray<std::uint32_t>> mask_bits;
  if (c.f.block) {
    mask = std::make_unique<HostBlockMask>(c.f.block, n.batch + c.f.batch_base, n.heads, n.seqlen_q, n.seqlen_k);
    const auto dev = [&](const std::vector<std::int32_t>& v) {
      mask_ints.push_back(std::make_unique<DevArray<std::int32_t>>(v));
      return mask_ints.back()->ptr;
    };
    mask_bits = std::make_unique<DevArray<std::uint32_t>>(mask->bits);
    kfa::detail::BlockSparseSpec& m = sc.blocks;
    m.row_ptr = dev(mask->row_ptr);
    m.col_idx = dev(mask->col_idx);
    m.partial_row_ptr = dev(mask->prow_ptr);
    m.partial_col_idx = dev(mask->pcol_idx);
    m.partial_bits = mask_bits->ptr;
    m.block_state = dev(mask->state);
    m.block_q = m.block_k = c.f.block;
    m.n_qblocks = mask->nq;
    m.n_kblocks = mask->nk;
    m.batch = mask->batch;
    m.heads = mask->heads;
    m.words_per_block = mask->words;
    m.block_q_shift = m.block_k_shift = c.f.block == 64 ? 6 : c.f.block == 128 ? 7 : 8;
    const HostBlockMask* hm = mask.get();
    const std::int64_t base = c.f.batch_base;
    x.allow = [hm, base](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
      return hm->allow(b + base, h, i, j);
    };
  }
  // dropout: the mask of kfa/detail/philox.hpp at (sequence + batch_base, head, row, col)
  if (c.f.dropout_p > 0) {
    sc.dropout_p = c.f.dropout_p;
    sc.seed = rng();
    sc.offset = rng() % 1000;
    const kfa::detail::DropoutKey key = kfa::detail::derive_dropout_key(sc.seed, sc.offset);
    const std::uint32_t threshold = kfa::detail::dropout_threshold(sc.dropout_p);
    const double keep_scale = kfa::detail::dropout_keep_scale(sc.dropout_p);
    const std::int64_t base = c.f.batch_base;
    x.keep = [=](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
      return kfa::detail::dropout_keep(key, threshold, b + base, h, i, j) ? keep_scale : 0.0;
    };
  }
  if (!kfa::hip::supports_forward(fa)) throw std::runtime_error(c.name + ": forward case not supported");

  o.poison();
  check(hipMemset(lse, 0xff, lse_count * sizeof(float)), "poison");
  kfa::hip::forward(fa, nullptr);
  check(hipDeviceSynchronize(), "forward");
  const std::vector<double> got_o = o.download(t);
  std::vector<float> got_lse_f(lse_count);
  check(hipMemcpy(got_lse_f.data(), lse, lse_count * sizeof(float), hipMemcpyDeviceToHost), "lse");
  const std::vector<double> got_lse(got_lse_f.begin(), got_lse_f.end());

  const Round rnd = [t](double y) { return round_to(y, t); };
  std::vector<double> ref_o, ref_lse, plain_o, plain_lse;
  host_forward(c, in, x, no_rounding, true, ref_o, ref_lse);
  host_forward(c, in, x, rnd, false, plain_o, plain_lse);
  double lse_scale = 1.0;
  for (double y : ref_lse)
    if (std::isfinite(y)) lse_scale = std::max(lse_scale, std::abs(y));
  judge(c, "O", max_abs_diff(got_o, ref_o), max_abs_diff(plain_o, ref_o), abs_eps(t));
  judge(c, "LSE", max_abs_diff(got_lse, ref_lse), max_abs_diff(plain_lse, ref_lse), abs_eps(t) * lse_scale);

  if (c.backward && n.head_dim <= 128) {
    DevTensor dout(tb, tsq, n.heads, n.head_dim, c.bhsd), dq(tb, tsq, n.heads, n.head_dim, c.bhsd),
        dk(tb, tsk, n.heads_kv, n.head_dim, c.bhsd), dv(tb, tsk, n.heads_kv, n.head_dim, c.bhsd);
    const std::vector<double> dout_h = random_values(got_o.size(), 1.0, t);
    dout.upload(dout_h, t);
    kfa::detail::BackwardArgs ba;
    ba.dtype = t;
    ba.shape = fa.shape;
    ba.q = fa.q;
    ba.k = fa.k;
    ba.v = fa.v;
    ba.o = fa.o;  // the kernel's own output and LSE, as in training
    ba.lse = fa.lse;
    ba.dout = desc(dout);
    ba.dq = desc(dq);
    ba.dk = desc(dk);
    ba.dv = desc(dv);
    ba.score = fa.score;
    ba.varlen = fa.varlen;
    if (!kfa::hip::supports_backward(ba)) throw std::runtime_error(c.name + ": backward case not supported");
    dq.poison();
    dk.poison();
    dv.poison();
    kfa::hip::backward(ba, nullptr);
    check(hipDeviceSynchronize(), "backward");
    const Grads ref = host_backward(c, in, x, no_rounding, ref_o, dout_h);
    const Grads plain = host_backward(c, in, x, rnd, plain_o, dout_h);
    judge(c, "dQ", max_abs_diff(dq.download(t), ref.dq), max_abs_diff(plain.dq, ref.dq), abs_eps(t));
    judge(c, "dK", max_abs_diff(dk.download(t), ref.dk), max_abs_diff(plain.dk, ref.dk), abs_eps(t));
    judge(c, "dV", max_abs_diff(dv.download(t), ref.dv), max_abs_diff(plain.dv, ref.dv), abs_eps(t));
  }
  (void)hipFree(lse);
  if (slopes) (void)hipFree(slopes);
}

/// The cases of tests/cuda/test_native_forward.cpp (and the portable suite's modifiers), for both
/// element types; the backward runs on every case with head_dim <= 128.
std::vector<Case> cases() {
  std::vector<Case> all;
  for (DType t : {DType::f16, DType::bf16}) {
    bool quick = false;  // set for the cases of the --quick subset
    const auto add = [&](std::string name, Dims n, RefOptions o, bool bhsd = false, double mag = 1.0,
                         Features f = {}) {
      all.push_back({quick, std::move(name), t, n, std::move(o), bhsd, mag, true, std::move(f)});
    };
    // packed sequences: Dims hold the count and the longest lengths
    const auto packed = [](Features f, std::int64_t h, std::int64_t hkv, std::int64_t d) {
      return Dims{std::int64_t(f.seq_q.size()), *std::max_element(f.seq_q.begin(), f.seq_q.end()),
                  *std::max_element(f.seq_k.begin(), f.seq_k.end()), h, hkv, d};
    };
    for (std::int64_t d : {32, 64, 96, 128, 256})
      for (auto [h, hkv] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}, {4, 1}})
        for (bool causal : {false, true}) {
          RefOptions o;
          o.causal = causal;
          quick = (d == 64 && h == hkv && !causal) || (d == 128 && hkv == 1 && causal) || (d == 256 && hkv == 2);
          add("d" + std::to_string(d) + " h" + std::to_string(h) + "/" + std::to_string(hkv) + " causal " +
                  std::to_string(causal),
              {2, 150, 150, h, hkv, d}, o);
        }
    for (std::int64_t len : {1, 17, 129, 1000})
      for (bool causal : {false, true}) {
        RefOptions o;
        o.causal = causal;
        quick = len == 17 && causal;
        add("seqlen " + std::to_string(len) + " causal " + std::to_string(causal), {1, len, len, 2, 1, 64}, o);
      }
    for (auto [sq, sk] : {std::pair<std::int64_t, std::int64_t>{50, 130}, {130, 50}, {1, 257}, {257, 1}, {65, 64},
                          {200, 3}, {333, 1000}})
      for (bool causal : {false, true}) {
        RefOptions o;
        o.causal = causal;
        quick = (sq == 50 || sq == 130) && causal;
        add("sq " + std::to_string(sq) + " sk " + std::to_string(sk) + " causal " + std::to_string(causal),
            {2, sq, sk, 2, 1, 128}, o);
      }
    for (std::int64_t wl : {0, 20, 130})
      for (std::int64_t wr : {-1, 0, 7}) {
        RefOptions o;
        o.scale = 0.3;
        o.window_left = wl;
        o.window_right = wr;
        quick = wl == 20 && wr == 7;
        add("window " + std::to_string(wl) + "," + std::to_string(wr), {1, 300, 280, 2, 1, 64}, o);
      }
    quick = true;
    add("fully masked rows (causal, sq > sk)", {1, 300, 100, 2, 1, 64}, RefOptions{0, true});
    for (bool causal : {false, true}) {
      RefOptions o;
      o.causal = causal;
      quick = causal;
      add("large scores causal " + std::to_string(causal), {1, 190, 190, 2, 2, 128}, o, false, 12.0);
      add("strided bhsd causal " + std::to_string(causal), {2, 170, 145, 4, 2, 96}, o, true);
      RefOptions m;
      m.softcap = 5.0;
      m.alibi = {0.25f, 0.0625f};
      m.causal = causal;
      add("softcap + alibi causal " + std::to_string(causal), {1, 80, 100, 2, 2, 64}, m, false, 3.0);
    }
    // the shared feature policy: packed sequences, block masks, dropout
    for (bool causal : {false, true}) {
      RefOptions o;
      o.causal = causal;
      const std::string cs = " causal " + std::to_string(causal);
      // odd lengths, an empty sequence, one without keys (O = 0, LSE = -inf), keys no query sees
      // (dK = dV = 0), sq > sk (fully masked rows under causal)
      Features vl;
      vl.seq_q = {37, 0, 130, 1, 20, 77};
      vl.seq_k = {37, 5, 200, 64, 0, 50};
      quick = causal;
      add("varlen 6 seqs (empty, no keys)" + cs, packed(vl, 2, 1, 64), o, false, 1.0, vl);
      quick = false;
      add("varlen 6 seqs d128 bhsd" + cs, packed(vl, 4, 2, 128), o, true, 1.0, vl);
      add("varlen 6 seqs d256" + cs, packed(vl, 2, 2, 256), o, false, 1.0, vl);
      // 64x64 blocks, random skipped / full / partial (per batch and head), sequence ends inside blocks
      Features bm;
      bm.block = 64;
      quick = true;  // both: without causal the partial tiles need the block bits alone
      add("block mask 64" + cs, {2, 200, 230, 2, 1, 64}, o, false, 1.0, bm);
      quick = false;
      add("block mask 64 d256" + cs, {1, 200, 230, 2, 1, 256}, o, false, 1.0, bm);
      bm.block = 128;
      add("block mask 128" + cs, {1, 300, 260, 2, 2, 32}, o, false, 1.0, bm);
      Features dr;
      dr.dropout_p = 0.2f;
      quick = causal;
      add("dropout 0.2" + cs, {2, 150, 170, 2, 1, 64}, o, false, 1.0, dr);
      quick = false;
      add("dropout 0.2 d128 h4/1" + cs, {1, 190, 130, 4, 1, 128}, o, false, 1.0, dr);
      add("dropout 0.2 d256" + cs, {1, 100, 90, 2, 1, 256}, o, false, 1.0, dr);
      // everything at once, with a batch base (dropout and mask rows at sequence index + 3) and GQA
      Features all3 = vl;
      all3.block = 64;
      all3.dropout_p = 0.2f;
      all3.batch_base = 3;
      RefOptions m = o;
      m.softcap = 5.0;
      m.alibi = {0.0625f, 0.03125f, 0.125f, 0.015625f};
      quick = causal;
      add("varlen + block mask + dropout + softcap/alibi d96 h4/2" + cs, packed(all3, 4, 2, 96), m, false, 1.0, all3);
    }
  }
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  const hipError_t err = hipGetDeviceCount(&devices);
  if (err != hipSuccess || devices == 0) {
    std::printf("kfa-hip-runner: SKIPPED, no AMD GPU available (%s)\n",
                err != hipSuccess ? hipGetErrorString(err) : "0 devices");
    return 77;
  }
  bool quick = false;
  std::string only;
  std::uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") quick = true;
    else if (std::string(argv[i]) == "--only" && i + 1 < argc) only = argv[++i];
    else seed = std::stoull(argv[i]);
  }
  rng.seed(seed);
  std::printf("kfa-hip-runner: seed %llu\n", static_cast<unsigned long long>(seed));
  try {
    for (const Case& c : cases())
      if ((c.quick || !quick) && c.name.find(only) != std::string::npos) run_case(c);
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  std::printf("kfa-hip-runner: %d checks passed, %d failed (seed %llu)\n", passed, failures,
              static_cast<unsigned long long>(seed));
  return failures == 0 ? 0 : 1;
}
