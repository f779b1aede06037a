#pragma once
// Checking the native CUDA backward (kfa::cuda::backward, raw device buffers, no Kokkos) against an
// fp64 host backward with the tolerance rule: kfa's max-abs error <= 2 x the error of a plain
// unfused backward in the input precision (fp32 products; S, P, dP, dS and the gradients rounded
// to T) + eps. Shared by the Catch2 GPU suite (test_backward_cuda.cpp) and the standalone runner
// backends/cuda/tools/bwd_check.cu.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kfa_cuda/backward.hpp"

#define KFA_BWD_CHECK_CUDA(x)                                                                                \
  do {                                                                                                       \
    const cudaError_t e_ = (x);                                                                              \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_));        \
  } while (0)

// The host references use OpenMP where the build has it.
#if defined(_OPENMP)
#define KFA_BWD_OMP(x) _Pragma(#x)
#else
#define KFA_BWD_OMP(x)
#endif

namespace kfa::test::cuda_bwd {

using kfa::detail::BackwardArgs;
using kfa::detail::DType;
using kfa::detail::Shape;
using kfa::detail::Tensor3;
using kfa::detail::Tensor4;

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

inline std::int64_t eff_wr(const Case& c) { return c.causal ? (c.wr < 0 ? 0 : std::min<std::int64_t>(c.wr, 0)) : c.wr; }

inline bool visible(const Case& c, std::int64_t i, std::int64_t j) {
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

inline std::size_t idx(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t c, std::int64_t S, std::int64_t H,
                std::int64_t D) {
  return static_cast<std::size_t>(((b * S + s) * H + h) * D + c);
}

// fp64 forward (O, LSE) and backward (dQ, dK, dV), straight from the definitions.
inline void reference(const Case& c, const Host& in, std::vector<double>& o, std::vector<double>& lse, std::vector<double>& dq,
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
KFA_BWD_OMP(omp parallel)
      {
        std::vector<double> p(c.sk), dp(c.sk), dkp(c.sk * D, 0.0), dvp(c.sk * D, 0.0);
KFA_BWD_OMP(omp for collapse(2) schedule(dynamic))
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
KFA_BWD_OMP(omp critical)
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
KFA_BWD_OMP(omp parallel for schedule(dynamic))
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
KFA_BWD_OMP(omp parallel for)
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

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
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
    KFA_BWD_CHECK_CUDA(cudaMalloc(&ptr, sizeof(T) * B * S * H * D));
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
    KFA_BWD_CHECK_CUDA(cudaMemcpy(ptr, hst.data(), sizeof(T) * hst.size(), cudaMemcpyHostToDevice));
  }
  std::vector<double> download() const {
    std::vector<T> hst(B * S * H * D);
    KFA_BWD_CHECK_CUDA(cudaMemcpy(hst.data(), ptr, sizeof(T) * hst.size(), cudaMemcpyDeviceToHost));
    std::vector<double> x(hst.size());
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t c = 0; c < D; ++c) x[idx(b, s, h, c, S, H, D)] = to_float<T>(hst[off(b, s, h) + c]);
    return x;
  }
  std::vector<unsigned char> raw() const {
    std::vector<unsigned char> r(sizeof(T) * B * S * H * D);
    KFA_BWD_CHECK_CUDA(cudaMemcpy(r.data(), ptr, r.size(), cudaMemcpyDeviceToHost));
    return r;
  }
  void poison() { KFA_BWD_CHECK_CUDA(cudaMemset(ptr, 0xff, sizeof(T) * B * S * H * D)); }  // NaN in bf16 and half
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


template <class T>
std::vector<double> random_values(std::mt19937_64& gen, std::size_t n, double magnitude) {
  std::normal_distribution<double> dist(0.0, magnitude);
  std::vector<double> x(n);
  for (auto& v : x) v = round_to<T>(float(dist(gen)));
  return x;
}

/// One checked case: whether every gradient passed the tolerance rule (and, deterministic, repeated
/// bitwise), and a line with the errors.
struct CaseResult {
  bool ok = false;
  std::string line;
};

/// Runs kfa::cuda::backward on fresh random inputs (outputs poisoned with NaN) and judges dq, dk, dv
/// against the fp64 backward with the tolerance rule.
template <class T>
CaseResult check_case(const Case& c, std::mt19937_64& gen) {
  Host in;
  in.q = random_values<T>(gen, c.b * c.sq * c.h * c.d, c.magnitude);
  in.k = random_values<T>(gen, c.b * c.sk * c.hkv * c.d, c.magnitude);
  in.v = random_values<T>(gen, c.b * c.sk * c.hkv * c.d, 1.0);
  in.dout = random_values<T>(gen, c.b * c.sq * c.h * c.d, 1.0);
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
  KFA_BWD_CHECK_CUDA(cudaMalloc(&lse_d, sizeof(float) * lse_f.size()));
  KFA_BWD_CHECK_CUDA(cudaMemcpy(lse_d, lse_f.data(), sizeof(float) * lse_f.size(), cudaMemcpyHostToDevice));

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
    KFA_BWD_CHECK_CUDA(cudaMalloc(&ws, kfa::cuda::backward_workspace_bytes(a.shape, a.deterministic)));
    a.workspace = ws;
  }
  if (!kfa::cuda::supports_backward(a)) {
    KFA_BWD_CHECK_CUDA(cudaFree(lse_d));
    if (ws) KFA_BWD_CHECK_CUDA(cudaFree(ws));
    return {false, "unsupported case"};
  }
  dq.poison(), dk.poison(), dv.poison();
  kfa::cuda::backward(a, nullptr);
  KFA_BWD_CHECK_CUDA(cudaDeviceSynchronize());
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
      KFA_BWD_CHECK_CUDA(cudaDeviceSynchronize());
      same = same && dq.raw() == rq && dk.raw() == rk && dv.raw() == rv;
    }
    n += std::snprintf(line + n, sizeof line - n, " bitwise-repeat %s", same ? "yes" : "NO FAIL");
    ok = ok && same;
  }
  KFA_BWD_CHECK_CUDA(cudaFree(lse_d));
  if (ws) KFA_BWD_CHECK_CUDA(cudaFree(ws));
  return {ok, line};
}

}  // namespace kfa::test::cuda_bwd
