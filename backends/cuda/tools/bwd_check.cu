// Standalone check and timing of the native CUDA backward, without Kokkos:
//   bwd_check            correctness sweep: kfa::cuda::backward vs an fp64 host backward, judged by the
//                        tolerance rule (error <= 2 x error of a plain unfused backward in the input
//                        precision + eps), NaN-poisoned outputs, deterministic mode bitwise stable.
//   bwd_check --quick    a few small cases (for compute-sanitizer)
//   bwd_check --profile D CAUSAL SEQLEN DET   one configuration, once after warm-up (for ncu)
//   bwd_check --bench    FlashAttention-2 paper setup (bf16, batch*seqlen = 16k, hidden 2048),
//                        median of cudaEvent-timed runs, TFLOP/s with bwd FLOPs = 2.5 x 4*B*H*N*N*d
//                        (halved when causal).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kfa_cuda/backward.hpp"

using kfa::detail::BackwardArgs;
using kfa::detail::DType;
using kfa::detail::Shape;
using kfa::detail::Tensor3;
using kfa::detail::Tensor4;

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

namespace {

// ---------------------------------------------------------------- element conversions (host)
template <class T>
T from_float(float x);
template <>
__nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__half from_float<__half>(float x) { return __float2half(x); }
template <class T>
float to_float(T x);
template <>
float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
float to_float<__half>(__half x) { return __half2float(x); }
template <class T>
float round_to(float x) { return to_float<T>(from_float<T>(x)); }

// ---------------------------------------------------------------- problem description
struct Case {
  std::int64_t b, sq, sk, h, hkv, d;
  bool causal;
  std::int64_t wl = -1, wr = -1;  // window (causal sets wr to min(wr, 0))
  bool bhsd = false;              // store tensors as [b, h, s, d] (strided view)
  double magnitude = 1.0;
  bool deterministic = false;
};

std::int64_t eff_wr(const Case& c) { return c.causal ? (c.wr < 0 ? 0 : std::min<std::int64_t>(c.wr, 0)) : c.wr; }

bool visible(const Case& c, std::int64_t i, std::int64_t j) {
  const std::int64_t diag = i + c.sk - c.sq;
  const std::int64_t wr = eff_wr(c);
  if (c.wl >= 0 && j < diag - c.wl) return false;
  if (wr >= 0 && j > diag + wr) return false;
  return true;
}

// Host tensors, contiguous [b][s][h][d] in double, holding values exactly representable in T.
struct Host {
  std::vector<double> q, k, v, dout, o, lse;  // lse [b][h][sq]
};

std::size_t idx(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t c, std::int64_t S, std::int64_t H,
                std::int64_t D) {
  return static_cast<std::size_t>(((b * S + s) * H + h) * D + c);
}

// fp64 forward (O, LSE) and backward (dQ, dK, dV), straight from the definitions.
void reference(const Case& c, const Host& in, std::vector<double>& o, std::vector<double>& lse, std::vector<double>& dq,
               std::vector<double>& dk, std::vector<double>& dv, bool want_grads) {
  const std::int64_t D = c.d, group = c.h / c.hkv;
  const double scale = 1.0 / std::sqrt(double(D));
  o.assign(c.b * c.sq * c.h * D, 0.0);
  lse.assign(c.b * c.h * c.sq, -std::numeric_limits<double>::infinity());
  if (want_grads) {
    dq.assign(c.b * c.sq * c.h * D, 0.0);
    dk.assign(c.b * c.sk * c.hkv * D, 0.0);
    dv.assign(c.b * c.sk * c.hkv * D, 0.0);
  }
  for (std::int64_t b = 0; b < c.b; ++b)
    for (std::int64_t hk = 0; hk < c.hkv; ++hk) {
      std::vector<double> dkl(c.sk * D, 0.0), dvl(c.sk * D, 0.0);
#pragma omp parallel
      {
        std::vector<double> p(c.sk), dp(c.sk), dkp(c.sk * D, 0.0), dvp(c.sk * D, 0.0);
#pragma omp for collapse(2) schedule(dynamic)
        for (std::int64_t hh = 0; hh < group; ++hh)
          for (std::int64_t i = 0; i < c.sq; ++i) {
            const std::int64_t h = hk * group + hh;
            double mx = -std::numeric_limits<double>::infinity();
            for (std::int64_t j = 0; j < c.sk; ++j) {
              if (!visible(c, i, j)) continue;
              double s = 0;
              for (std::int64_t e = 0; e < D; ++e) s += in.q[idx(b, i, h, e, c.sq, c.h, D)] * in.k[idx(b, j, hk, e, c.sk, c.hkv, D)];
              p[j] = s * scale;
              mx = std::max(mx, p[j]);
            }
            if (mx == -std::numeric_limits<double>::infinity()) continue;  // fully masked row
            double sum = 0;
            for (std::int64_t j = 0; j < c.sk; ++j) {
              p[j] = visible(c, i, j) ? std::exp(p[j] - mx) : 0.0;
              sum += p[j];
            }
            lse[(b * c.h + h) * c.sq + i] = mx + std::log(sum);
            for (std::int64_t j = 0; j < c.sk; ++j) p[j] /= sum;
            for (std::int64_t e = 0; e < D; ++e) {
              double acc = 0;
              for (std::int64_t j = 0; j < c.sk; ++j) acc += p[j] * in.v[idx(b, j, hk, e, c.sk, c.hkv, D)];
              o[idx(b, i, h, e, c.sq, c.h, D)] = acc;
            }
            if (!want_grads) continue;
            double dsum = 0;
            for (std::int64_t j = 0; j < c.sk; ++j) {
              double acc = 0;
              for (std::int64_t e = 0; e < D; ++e)
                acc += in.dout[idx(b, i, h, e, c.sq, c.h, D)] * in.v[idx(b, j, hk, e, c.sk, c.hkv, D)];
              dp[j] = acc;
              dsum += p[j] * acc;
            }
            for (std::int64_t j = 0; j < c.sk; ++j) {
              if (p[j] == 0.0) continue;
              const double ds = p[j] * (dp[j] - dsum) * scale;
              for (std::int64_t e = 0; e < D; ++e) {
                dq[idx(b, i, h, e, c.sq, c.h, D)] += ds * in.k[idx(b, j, hk, e, c.sk, c.hkv, D)];
                dkp[j * D + e] += ds * in.q[idx(b, i, h, e, c.sq, c.h, D)];
                dvp[j * D + e] += p[j] * in.dout[idx(b, i, h, e, c.sq, c.h, D)];
              }
            }
          }
#pragma omp critical
        for (std::int64_t x = 0; x < c.sk * D; ++x) {
          dkl[x] += dkp[x];
          dvl[x] += dvp[x];
        }
      }
      if (want_grads)
        for (std::int64_t j = 0; j < c.sk; ++j)
          for (std::int64_t e = 0; e < D; ++e) {
            dk[idx(b, j, hk, e, c.sk, c.hkv, D)] = dkl[j * D + e];
            dv[idx(b, j, hk, e, c.sk, c.hkv, D)] = dvl[j * D + e];
          }
    }
}

// The plain unfused backward in the input precision (what autograd through a materialized
// attention gives): fp32 products, S, P, dP, dS and the gradients rounded to T.
template <class T>
void plain_backward(const Case& c, const Host& in, std::vector<double>& dq, std::vector<double>& dk,
                    std::vector<double>& dv) {
  const std::int64_t D = c.d, group = c.h / c.hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  dq.assign(c.b * c.sq * c.h * D, 0.0);
  std::vector<float> dkf(c.b * c.sk * c.hkv * D, 0.0f), dvf(c.b * c.sk * c.hkv * D, 0.0f);
  for (std::int64_t b = 0; b < c.b; ++b)
    for (std::int64_t h = 0; h < c.h; ++h) {
      const std::int64_t hk = h / group;
      std::vector<float> P(c.sq * c.sk, 0.0f), dS(c.sq * c.sk, 0.0f);
#pragma omp parallel for schedule(dynamic)
      for (std::int64_t i = 0; i < c.sq; ++i) {
        std::vector<float> s(c.sk), dp(c.sk);
        float mx = -INFINITY;
        for (std::int64_t j = 0; j < c.sk; ++j) {
          float acc = 0;
          for (std::int64_t e = 0; e < D; ++e)
            acc += float(in.q[idx(b, i, h, e, c.sq, c.h, D)]) * float(in.k[idx(b, j, hk, e, c.sk, c.hkv, D)]);
          s[j] = visible(c, i, j) ? round_to<T>(acc * scale) : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        float sum = 0;
        for (std::int64_t j = 0; j < c.sk; ++j) sum += (s[j] = std::exp(s[j] - mx));
        float dsum = 0;
        for (std::int64_t j = 0; j < c.sk; ++j) {
          P[i * c.sk + j] = round_to<T>(s[j] / sum);
          float acc = 0;
          for (std::int64_t e = 0; e < D; ++e)
            acc += float(in.dout[idx(b, i, h, e, c.sq, c.h, D)]) * float(in.v[idx(b, j, hk, e, c.sk, c.hkv, D)]);
          dp[j] = round_to<T>(acc);
          dsum += P[i * c.sk + j] * dp[j];
        }
        for (std::int64_t j = 0; j < c.sk; ++j) dS[i * c.sk + j] = round_to<T>(P[i * c.sk + j] * (dp[j] - dsum));
        for (std::int64_t e = 0; e < D; ++e) {
          float acc = 0;
          for (std::int64_t j = 0; j < c.sk; ++j) acc += dS[i * c.sk + j] * float(in.k[idx(b, j, hk, e, c.sk, c.hkv, D)]);
          dq[idx(b, i, h, e, c.sq, c.h, D)] = round_to<T>(acc * scale);
        }
      }
#pragma omp parallel for
      for (std::int64_t j = 0; j < c.sk; ++j)
        for (std::int64_t e = 0; e < D; ++e) {
          float ak = 0, av = 0;
          for (std::int64_t i = 0; i < c.sq; ++i) {
            ak += dS[i * c.sk + j] * float(in.q[idx(b, i, h, e, c.sq, c.h, D)]);
            av += P[i * c.sk + j] * float(in.dout[idx(b, i, h, e, c.sq, c.h, D)]);
          }
          dkf[idx(b, j, hk, e, c.sk, c.hkv, D)] += round_to<T>(ak * scale);
          dvf[idx(b, j, hk, e, c.sk, c.hkv, D)] += round_to<T>(av);
        }
    }
  dk.resize(dkf.size());
  dv.resize(dvf.size());
  for (std::size_t x = 0; x < dkf.size(); ++x) {
    dk[x] = round_to<T>(dkf[x]);
    dv[x] = round_to<T>(dvf[x]);
  }
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

// ---------------------------------------------------------------- device tensors
template <class T>
struct DevTensor {
  T* ptr = nullptr;
  Tensor4 view;
  std::int64_t B, S, H, D;
  bool bhsd;
  DevTensor(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, bool bhsd_) : B(b), S(s), H(h), D(d), bhsd(bhsd_) {
    CHECK_CUDA(cudaMalloc(&ptr, sizeof(T) * B * S * H * D));
    view.data = ptr;
    if (bhsd) view.stride_b = H * S * D, view.stride_h = S * D, view.stride_s = D;
    else view.stride_b = S * H * D, view.stride_s = H * D, view.stride_h = D;
  }
  ~DevTensor() { cudaFree(ptr); }
  std::size_t off(std::int64_t b, std::int64_t s, std::int64_t h) const {
    return static_cast<std::size_t>(b * view.stride_b + s * view.stride_s + h * view.stride_h);
  }
  void upload(const std::vector<double>& x) {
    std::vector<T> hst(B * S * H * D);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t c = 0; c < D; ++c) hst[off(b, s, h) + c] = from_float<T>(float(x[idx(b, s, h, c, S, H, D)]));
    CHECK_CUDA(cudaMemcpy(ptr, hst.data(), sizeof(T) * hst.size(), cudaMemcpyHostToDevice));
  }
  std::vector<double> download() const {
    std::vector<T> hst(B * S * H * D);
    CHECK_CUDA(cudaMemcpy(hst.data(), ptr, sizeof(T) * hst.size(), cudaMemcpyDeviceToHost));
    std::vector<double> x(hst.size());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t c = 0; c < D; ++c) x[idx(b, s, h, c, S, H, D)] = to_float<T>(hst[off(b, s, h) + c]);
    return x;
  }
  std::vector<unsigned char> raw() const {
    std::vector<unsigned char> r(sizeof(T) * B * S * H * D);
    CHECK_CUDA(cudaMemcpy(r.data(), ptr, r.size(), cudaMemcpyDeviceToHost));
    return r;
  }
  void poison() { CHECK_CUDA(cudaMemset(ptr, 0xff, sizeof(T) * B * S * H * D)); }  // NaN in bf16 and half
};

template <class T>
constexpr DType dtype_of() {
  return std::is_same_v<T, __nv_bfloat16> ? DType::bf16 : DType::f16;
}
template <class T>
const char* tname() {
  return std::is_same_v<T, __nv_bfloat16> ? "bf16" : "fp16";
}
template <class T>
double eps_of() {
  return std::is_same_v<T, __nv_bfloat16> ? 1e-3 : 1e-4;
}

std::mt19937_64& rng() {
  static std::mt19937_64 g([] {
    std::random_device rd;
    const std::uint64_t s = (std::uint64_t(rd()) << 32) ^ rd();
    std::printf("seed %llu\n", static_cast<unsigned long long>(s));
    return s;
  }());
  return g;
}

template <class T>
std::vector<double> random_values(std::size_t n, double magnitude) {
  std::normal_distribution<double> dist(0.0, magnitude);
  std::vector<double> x(n);
  for (auto& v : x) v = round_to<T>(float(dist(rng())));
  return x;
}

// Runs one case; returns true when all three gradients pass (and, deterministic, repeat bitwise).
template <class T>
bool check_case(const Case& c) {
  Host in;
  in.q = random_values<T>(c.b * c.sq * c.h * c.d, c.magnitude);
  in.k = random_values<T>(c.b * c.sk * c.hkv * c.d, c.magnitude);
  in.v = random_values<T>(c.b * c.sk * c.hkv * c.d, 1.0);
  in.dout = random_values<T>(c.b * c.sq * c.h * c.d, 1.0);
  std::vector<double> o, lse, rdq, rdk, rdv, pdq, pdk, pdv;
  reference(c, in, o, lse, rdq, rdk, rdv, true);
  plain_backward<T>(c, in, pdq, pdk, pdv);
  for (auto& x : o) x = round_to<T>(float(x));  // the forward's output as the kernel sees it

  DevTensor<T> q(c.b, c.sq, c.h, c.d, c.bhsd), k(c.b, c.sk, c.hkv, c.d, c.bhsd), v(c.b, c.sk, c.hkv, c.d, c.bhsd),
      out(c.b, c.sq, c.h, c.d, c.bhsd), dout(c.b, c.sq, c.h, c.d, c.bhsd), dq(c.b, c.sq, c.h, c.d, c.bhsd),
      dk(c.b, c.sk, c.hkv, c.d, c.bhsd), dv(c.b, c.sk, c.hkv, c.d, c.bhsd);
  q.upload(in.q), k.upload(in.k), v.upload(in.v), out.upload(o), dout.upload(in.dout);
  // bhsd cases also store lse as [b, s, h] (strided) and pass a caller-owned workspace of exactly
  // backward_workspace_bytes(), so both contracts are exercised.
  float* lse_d = nullptr;
  std::vector<float> lse_f(lse.size());
  for (std::int64_t b = 0; b < c.b; ++b)
    for (std::int64_t h = 0; h < c.h; ++h)
      for (std::int64_t i = 0; i < c.sq; ++i)
        lse_f[c.bhsd ? (b * c.sq + i) * c.h + h : (b * c.h + h) * c.sq + i] = float(lse[(b * c.h + h) * c.sq + i]);
  CHECK_CUDA(cudaMalloc(&lse_d, sizeof(float) * lse_f.size()));
  CHECK_CUDA(cudaMemcpy(lse_d, lse_f.data(), sizeof(float) * lse_f.size(), cudaMemcpyHostToDevice));

  BackwardArgs a;
  a.dtype = dtype_of<T>();
  a.shape = Shape{c.b, c.sq, c.sk, c.h, c.hkv, c.d};
  a.q = q.view, a.k = k.view, a.v = v.view, a.o = out.view, a.dout = dout.view, a.dq = dq.view, a.dk = dk.view,
  a.dv = dv.view;
  a.lse = c.bhsd ? Tensor3{lse_d, c.h * c.sq, 1, c.h} : Tensor3{lse_d, c.h * c.sq, c.sq, 1};
  a.score.scale = 1.0 / std::sqrt(double(c.d));
  a.score.window_left = c.wl;
  a.score.window_right = eff_wr(c);
  a.deterministic = c.deterministic;
  void* ws = nullptr;
  if (c.bhsd) {
    CHECK_CUDA(cudaMalloc(&ws, kfa::cuda::backward_workspace_bytes(a.shape, a.deterministic)));
    a.workspace = ws;
  }
  if (!kfa::cuda::supports_backward(a)) {
    std::printf("FAIL unsupported case\n");
    return false;
  }
  dq.poison(), dk.poison(), dv.poison();
  kfa::cuda::backward(a, nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto gq = dq.download(), gk = dk.download(), gv = dv.download();
  bool ok = true;
  const char* names[3] = {"dq", "dk", "dv"};
  const std::vector<double>* got[3] = {&gq, &gk, &gv};
  const std::vector<double>* ref[3] = {&rdq, &rdk, &rdv};
  const std::vector<double>* pln[3] = {&pdq, &pdk, &pdv};
  char line[512];
  int n = std::snprintf(line, sizeof line, "%s b%lld sq%lld sk%lld h%lld/%lld d%lld causal%d win(%lld,%lld) %s mag%.0f %s:",
                        tname<T>(), (long long)c.b, (long long)c.sq, (long long)c.sk, (long long)c.h, (long long)c.hkv,
                        (long long)c.d, int(c.causal), (long long)c.wl, (long long)c.wr, c.bhsd ? "bhsd" : "bshd",
                        c.magnitude, c.deterministic ? "det" : "atomic");
  for (int x = 0; x < 3; ++x) {
    const double e = max_abs_diff(*got[x], *ref[x]), ep = max_abs_diff(*pln[x], *ref[x]);
    const bool pass = e <= 2 * ep + eps_of<T>();
    ok = ok && pass;
    n += std::snprintf(line + n, sizeof line - n, " %s %.2e (plain %.2e)%s", names[x], e, ep, pass ? "" : " FAIL");
  }
  if (c.deterministic) {
    const auto rq = dq.raw(), rk = dk.raw(), rv = dv.raw();
    bool same = true;
    for (int rep = 0; rep < 3; ++rep) {
      dq.poison(), dk.poison(), dv.poison();
      kfa::cuda::backward(a, nullptr);
      CHECK_CUDA(cudaDeviceSynchronize());
      same = same && dq.raw() == rq && dk.raw() == rk && dv.raw() == rv;
    }
    n += std::snprintf(line + n, sizeof line - n, " bitwise-repeat %s", same ? "yes" : "NO FAIL");
    ok = ok && same;
  }
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", line);
  CHECK_CUDA(cudaFree(lse_d));
  if (ws) CHECK_CUDA(cudaFree(ws));
  return ok;
}

int run_checks(bool quick) {
  // b, sq, sk, h, hkv, d, causal, wl, wr, bhsd, magnitude, deterministic
  const std::vector<Case> quick_cases = {
      {1, 130, 130, 2, 1, 64, true},
      {1, 70, 150, 2, 2, 128, false, -1, -1, true},
      {1, 130, 130, 2, 1, 64, true, -1, -1, false, 1.0, true},
      {1, 70, 150, 2, 2, 128, false, -1, -1, true, 1.0, true},
  };
  const std::vector<Case> full_cases = {
      {2, 257, 257, 4, 4, 64, false},
      {1, 300, 300, 4, 2, 128, true},
      {2, 129, 200, 2, 2, 128, false, -1, -1, true},
      {1, 1000, 1000, 3, 1, 64, true},
      {1, 200, 77, 2, 2, 128, true},                 // rows 0..122 see no key: zero gradients
      {1, 17, 4097, 2, 1, 64, false, 32, 8},         // sliding window, seqlen_q << seqlen_k
      {1, 1, 129, 2, 2, 128, false},
      {1, 4097, 17, 1, 1, 64, false},
      {1, 384, 384, 2, 2, 64, false, -1, -1, false, 3.0},  // large scores
      {1, 300, 300, 4, 2, 128, true, -1, -1, false, 1.0, true},
      {1, 1000, 1000, 3, 1, 64, true, -1, -1, true, 1.0, true},
      {1, 200, 77, 2, 2, 128, true, -1, -1, false, 1.0, true},
      {1, 17, 4097, 2, 1, 64, false, 32, 8, false, 1.0, true},
  };
  int failed = 0, total = 0;
  for (const Case& c : quick ? quick_cases : full_cases) {
    failed += !check_case<__nv_bfloat16>(c);
    total += 1;
    if (quick) continue;
    failed += !check_case<__half>(c);
    total += 1;
  }
  std::printf("checks: %d of %d passed\n", total - failed, total);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------- timing
__global__ void fill_random(__nv_bfloat16* x, std::size_t n, std::uint64_t seed, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x[i] = __float2bfloat16(scale * (float(z >> 40) / float(1 << 24) * 2.0f - 1.0f));
  }
}
__global__ void fill_const(float* x, std::size_t n, float v) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) x[i] = v;
}

// One configuration of the benchmark, run `reps` times (for a profiler): d, causal, seqlen, deterministic.
int run_bench(int only_d = 0, int only_causal = -1, std::int64_t only_n = 0, int only_det = -1, int reps = 15) {
  struct Anchor {
    int d;
    bool causal;
    const char* fa2;
  };
  std::printf("%-4s %-6s %-6s %-3s %-4s %-9s %-9s %-9s %-9s  %s\n", "d", "causal", "seqlen", "B", "H", "ms", "TFLOP/s",
              "det ms", "det TF/s", "FA2 bwd anchor (8k-16k)");
  for (int d : {64, 128})
    for (bool causal : {false, true})
      for (std::int64_t N : {1024, 2048, 4096, 8192, 16384}) {
        if ((only_d && d != only_d) || (only_causal >= 0 && int(causal) != only_causal) || (only_n && N != only_n)) continue;
        const std::int64_t B = 16384 / N, H = 2048 / d;
        const std::size_t n = std::size_t(B) * N * H * d;
        __nv_bfloat16 *q, *k, *v, *o, *go, *dq, *dk, *dv;
        float* lse;
        for (auto** p : {&q, &k, &v, &o, &go, &dq, &dk, &dv}) CHECK_CUDA(cudaMalloc(p, n * sizeof(__nv_bfloat16)));
        CHECK_CUDA(cudaMalloc(&lse, sizeof(float) * B * H * N));
        int seed = 1;
        for (auto* p : {q, k, v, o, go}) fill_random<<<1024, 256>>>(p, n, 1000003ull * seed++, 1.0f);
        fill_const<<<1024, 256>>>(lse, B * H * N, std::log(float(N)));
        CHECK_CUDA(cudaGetLastError());
        BackwardArgs a;
        a.dtype = DType::bf16;
        a.shape = Shape{B, N, N, H, H, d};
        const Tensor4 t{nullptr, N * H * d, H * d, d};
        a.q = t, a.k = t, a.v = t, a.o = t, a.dout = t, a.dq = t, a.dk = t, a.dv = t;
        a.q.data = q, a.k.data = k, a.v.data = v, a.o.data = o, a.dout.data = go, a.dq.data = dq, a.dk.data = dk,
        a.dv.data = dv;
        a.lse = Tensor3{lse, H * N, N, 1};
        a.score.scale = 1.0 / std::sqrt(double(d));
        a.score.window_right = causal ? 0 : -1;
        double ms[2] = {0, 0};
        for (int det = 0; det < 2; ++det) {
          if (only_det >= 0 && det != only_det) continue;
          a.deterministic = det == 1;
          void* ws;
          CHECK_CUDA(cudaMalloc(&ws, kfa::cuda::backward_workspace_bytes(a.shape, a.deterministic)));
          a.workspace = ws;
          cudaEvent_t e0, e1;
          cudaEventCreate(&e0), cudaEventCreate(&e1);
          for (int w = 0; w < 3; ++w) kfa::cuda::backward(a, nullptr);
          std::vector<float> times;
          for (int r = 0; r < reps; ++r) {
            cudaEventRecord(e0);
            kfa::cuda::backward(a, nullptr);
            cudaEventRecord(e1);
            CHECK_CUDA(cudaEventSynchronize(e1));
            float t_ms;
            cudaEventElapsedTime(&t_ms, e0, e1);
            times.push_back(t_ms);
          }
          std::sort(times.begin(), times.end());
          ms[det] = times[times.size() / 2];
          cudaEventDestroy(e0), cudaEventDestroy(e1);
          CHECK_CUDA(cudaFree(ws));
        }
        const double flops = 2.5 * 4.0 * B * H * double(N) * N * d / (causal ? 2.0 : 1.0);
        const char* anchor = d == 64 ? (causal ? "n/a" : "284-290") : (causal ? "279-313" : "305-316");
        std::printf("%-4d %-6s %-6lld %-3lld %-4lld %-9.3f %-9.1f %-9.3f %-9.1f  %s\n", d, causal ? "yes" : "no",
                    (long long)N, (long long)B, (long long)H, ms[0], flops / ms[0] * 1e-9, ms[1], flops / ms[1] * 1e-9,
                    anchor);
        for (auto* p : {q, k, v, o, go, dq, dk, dv}) CHECK_CUDA(cudaFree(p));
        CHECK_CUDA(cudaFree(lse));
      }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return run_bench();
  if (argc > 5 && std::strcmp(argv[1], "--profile") == 0)  // --profile d causal seqlen det
    return run_bench(std::atoi(argv[2]), std::atoi(argv[3]), std::atoll(argv[4]), std::atoi(argv[5]), 1);
  return run_checks(argc > 1 && std::strcmp(argv[1], "--quick") == 0);
}
