// kfa-hip-runner: the GPU suite of the native HIP kernels without Kokkos (a HIP Kokkos needs ROCm
// >= 6.2; this runs with any ROCm that runs the kernels). Random problems go through
// kfa::hip::forward / kfa::hip::backward on the device and are judged against fp64 with the
// tolerance rule: kfa's max-abs error <= 2 x (error of a plain attention that keeps scores,
// probabilities and gradients in the input precision) + a tiny epsilon. Outputs are poisoned with NaN
// first. Exit status: 0 all passed, 1 a failure, 77 no AMD GPU (CTest: skipped).
//   kfa-hip-runner [--quick] [seed]     --quick: a subset that covers every feature once per type
#include <hip/hip_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_reference.hpp"
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

struct Case {
  bool quick;  // part of the --quick subset
  std::string name;
  DType dtype;
  Dims n;
  RefOptions opt;
  bool bhsd = false;
  double magnitude = 1.0;
  bool backward = true;
};

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
  HostQKV in;
  in.n = n;
  in.q = random_values(n.batch * n.seqlen_q * n.heads * n.head_dim, c.magnitude, t);
  in.k = random_values(n.batch * n.seqlen_k * n.heads_kv * n.head_dim, c.magnitude, t);
  in.v = random_values(n.batch * n.seqlen_k * n.heads_kv * n.head_dim, 1.0, t);
  DevTensor q(n.batch, n.seqlen_q, n.heads, n.head_dim, c.bhsd), k(n.batch, n.seqlen_k, n.heads_kv, n.head_dim, c.bhsd),
      v(n.batch, n.seqlen_k, n.heads_kv, n.head_dim, c.bhsd), o(n.batch, n.seqlen_q, n.heads, n.head_dim, c.bhsd);
  q.upload(in.q, t);
  k.upload(in.k, t);
  v.upload(in.v, t);
  float* lse = nullptr;
  float* slopes = nullptr;
  const std::size_t lse_count = n.batch * n.heads * n.seqlen_q;
  check(hipMalloc(&lse, lse_count * sizeof(float)), "hipMalloc");
  if (!c.opt.alibi.empty()) {
    check(hipMalloc(&slopes, c.opt.alibi.size() * sizeof(float)), "hipMalloc");
    check(hipMemcpy(slopes, c.opt.alibi.data(), c.opt.alibi.size() * sizeof(float), hipMemcpyHostToDevice), "slopes");
  }

  kfa::detail::ForwardArgs fa;
  fa.dtype = t;
  fa.shape = {n.batch, n.seqlen_q, n.seqlen_k, n.heads, n.heads_kv, n.head_dim};
  fa.q = q.desc();
  fa.k = k.desc();
  fa.v = v.desc();
  fa.o = o.desc();
  fa.lse = {lse, n.heads * n.seqlen_q, n.seqlen_q, 1};
  kfa::detail::ScoreSpec& sc = fa.score;
  sc.scale = c.opt.scale != 0 ? c.opt.scale : 1.0 / std::sqrt(double(n.head_dim));
  sc.window_left = c.opt.window_left;
  sc.window_right = c.opt.causal ? (c.opt.window_right < 0 ? 0 : std::min<std::int64_t>(c.opt.window_right, 0))
                                 : c.opt.window_right;
  sc.softcap = static_cast<float>(c.opt.softcap);
  sc.alibi_slopes = slopes;
  if (!kfa::hip::supports_forward(fa)) throw std::runtime_error(c.name + ": forward case not supported");

  o.poison();
  check(hipMemset(lse, 0xff, lse_count * sizeof(float)), "poison");
  kfa::hip::forward(fa, nullptr);
  check(hipDeviceSynchronize(), "forward");
  const std::vector<double> got_o = o.download(t);
  std::vector<float> got_lse_f(lse_count);
  check(hipMemcpy(got_lse_f.data(), lse, lse_count * sizeof(float), hipMemcpyDeviceToHost), "lse");
  const std::vector<double> got_lse(got_lse_f.begin(), got_lse_f.end());

  std::vector<double> ref_o, ref_lse, plain_o, plain_lse;
  reference_forward(in, c.opt, ref_o, ref_lse);
  attention_forward(in, c.opt, [t](double x) { return round_to(x, t); }, plain_o, plain_lse);
  double lse_scale = 1.0;
  for (double x : ref_lse)
    if (std::isfinite(x)) lse_scale = std::max(lse_scale, std::abs(x));
  judge(c, "O", max_abs_diff(got_o, ref_o), max_abs_diff(plain_o, ref_o), abs_eps(t));
  judge(c, "LSE", max_abs_diff(got_lse, ref_lse), max_abs_diff(plain_lse, ref_lse), abs_eps(t) * lse_scale);

  if (c.backward && n.head_dim <= 128) {
    DevTensor dout(n.batch, n.seqlen_q, n.heads, n.head_dim, c.bhsd), dq(n.batch, n.seqlen_q, n.heads, n.head_dim, c.bhsd),
        dk(n.batch, n.seqlen_k, n.heads_kv, n.head_dim, c.bhsd), dv(n.batch, n.seqlen_k, n.heads_kv, n.head_dim, c.bhsd);
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
    ba.dout = dout.desc();
    ba.dq = dq.desc();
    ba.dk = dk.desc();
    ba.dv = dv.desc();
    ba.score = fa.score;
    if (!kfa::hip::supports_backward(ba)) throw std::runtime_error(c.name + ": backward case not supported");
    dq.poison();
    dk.poison();
    dv.poison();
    kfa::hip::backward(ba, nullptr);
    check(hipDeviceSynchronize(), "backward");
    const Grads ref = attention_backward(in, c.opt, ref_o, dout_h, no_rounding);
    const Grads plain = attention_backward(in, c.opt, plain_o, dout_h, [t](double x) { return round_to(x, t); });
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
    const auto add = [&](std::string name, Dims n, RefOptions o, bool bhsd = false, double mag = 1.0) {
      all.push_back({quick, std::move(name), t, n, std::move(o), bhsd, mag, true});
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
  std::uint64_t seed = std::random_device{}();
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") quick = true;
    else seed = std::stoull(argv[i]);
  }
  rng.seed(seed);
  std::printf("kfa-hip-runner: seed %llu\n", static_cast<unsigned long long>(seed));
  try {
    for (const Case& c : cases())
      if (c.quick || !quick) run_case(c);
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  std::printf("kfa-hip-runner: %d checks passed, %d failed (seed %llu)\n", passed, failures,
              static_cast<unsigned long long>(seed));
  return failures == 0 ? 0 : 1;
}
