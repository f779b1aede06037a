#pragma once
// Checking the native CUDA backward (kfa::cuda::backward, raw device buffers, no Kokkos) against an
// fp64 backward with the tolerance rule: kfa's max-abs error <= 2 x the error of a plain
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

// ---------------------------------------------------------------- the references, on the GPU
// Both references run on the device (one thread per query row, then one per key row), since on the
// host the long cases' O(n^2 d) loops took minutes; each thread's loops are the host definitions',
// in the same order, so the plain backward's roundings are the ones a host loop would make.
namespace ref {

struct Dims {
  std::int64_t b, sq, sk, h, hkv, d, group, wl, wr;
};

inline Dims dims_of(const Case& c) { return {c.b, c.sq, c.sk, c.h, c.hkv, c.d, c.h / c.hkv, c.wl, eff_wr(c)}; }

__host__ __device__ inline bool vis(const Dims& c, std::int64_t i, std::int64_t j) {
  const std::int64_t diag = i + c.sk - c.sq;
  if (c.wl >= 0 && j < diag - c.wl) return false;
  if (c.wr >= 0 && j > diag + c.wr) return false;
  return true;
}
__device__ inline std::int64_t at(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t S, std::int64_t H,
                                  std::int64_t D) {
  return ((b * S + s) * H + h) * D;
}
/// x . y of two fp64 rows, the products and the sum in A (double, or float for the plain backward).
template <class A = double>
__device__ inline A dot(const double* x, const double* y, std::int64_t n) {
  A acc = 0;
  for (std::int64_t e = 0; e < n; ++e) acc += A(x[e]) * A(y[e]);
  return acc;
}

/// fp64, thread (b, h, i): O, LSE, D = sum_j P dP and dQ of row i.
__global__ void rows64(Dims c, const double* q, const double* k, const double* v, const double* dout, double* o,
                       double* lse, double* dsum, double* dq, bool grads) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (r >= c.b * c.h * c.sq) return;
  const std::int64_t i = r % c.sq, h = (r / c.sq) % c.h, b = r / (c.sq * c.h), hk = h / c.group, D = c.d;
  const double scale = 1.0 / sqrt(double(D));
  const double *qi = q + at(b, i, h, c.sq, c.h, D), *doi = dout + at(b, i, h, c.sq, c.h, D);
  double *oi = o + at(b, i, h, c.sq, c.h, D), *dqi = dq + at(b, i, h, c.sq, c.h, D);
  for (std::int64_t e = 0; e < D; ++e) oi[e] = dqi[e] = 0.0;
  double mx = -INFINITY;
  for (std::int64_t j = 0; j < c.sk; ++j)
    if (vis(c, i, j)) mx = fmax(mx, dot(qi, k + at(b, j, hk, c.sk, c.hkv, D), D) * scale);
  lse[r] = -INFINITY;
  dsum[r] = 0.0;
  if (mx == -INFINITY) return;  // fully masked row: O and the gradients 0
  double sum = 0;
  for (std::int64_t j = 0; j < c.sk; ++j)
    if (vis(c, i, j)) sum += exp(dot(qi, k + at(b, j, hk, c.sk, c.hkv, D), D) * scale - mx);
  const double l = mx + log(sum);
  lse[r] = l;
  double dd = 0;
  for (std::int64_t j = 0; j < c.sk; ++j) {
    if (!vis(c, i, j)) continue;
    const double p = exp(dot(qi, k + at(b, j, hk, c.sk, c.hkv, D), D) * scale - l);
    const double* vj = v + at(b, j, hk, c.sk, c.hkv, D);
    for (std::int64_t e = 0; e < D; ++e) oi[e] += p * vj[e];
    if (grads) dd += p * dot(doi, vj, D);
  }
  dsum[r] = dd;
  if (!grads) return;
  for (std::int64_t j = 0; j < c.sk; ++j) {
    if (!vis(c, i, j)) continue;
    const double* kj = k + at(b, j, hk, c.sk, c.hkv, D);
    const double p = exp(dot(qi, kj, D) * scale - l);
    const double ds = p * (dot(doi, v + at(b, j, hk, c.sk, c.hkv, D), D) - dd) * scale;
    for (std::int64_t e = 0; e < D; ++e) dqi[e] += ds * kj[e];
  }
}

/// fp64, thread (b, hk, j): dK and dV of key j, summed over the query heads of kv head hk.
__global__ void keys64(Dims c, const double* q, const double* k, const double* v, const double* dout,
                       const double* lse, const double* dsum, double* dk, double* dv) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (r >= c.b * c.hkv * c.sk) return;
  const std::int64_t j = r % c.sk, hk = (r / c.sk) % c.hkv, b = r / (c.sk * c.hkv), D = c.d;
  const double scale = 1.0 / sqrt(double(D));
  const double *kj = k + at(b, j, hk, c.sk, c.hkv, D), *vj = v + at(b, j, hk, c.sk, c.hkv, D);
  double *dkj = dk + at(b, j, hk, c.sk, c.hkv, D), *dvj = dv + at(b, j, hk, c.sk, c.hkv, D);
  for (std::int64_t e = 0; e < D; ++e) dkj[e] = dvj[e] = 0.0;
  for (std::int64_t hh = 0; hh < c.group; ++hh)
    for (std::int64_t i = 0; i < c.sq; ++i) {
      const std::int64_t h = hk * c.group + hh, row = (b * c.h + h) * c.sq + i;
      if (!vis(c, i, j) || lse[row] == -INFINITY) continue;
      const double *qi = q + at(b, i, h, c.sq, c.h, D), *doi = dout + at(b, i, h, c.sq, c.h, D);
      const double p = exp(dot(qi, kj, D) * scale - lse[row]);
      const double ds = p * (dot(doi, vj, D) - dsum[row]) * scale;
      for (std::int64_t e = 0; e < D; ++e) {
        dkj[e] += ds * qi[e];
        dvj[e] += p * doi[e];
      }
    }
}

template <class T>
__device__ inline float rnd(float x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(__float2bfloat16(x));
  else return __half2float(__float2half(x));
}

/// The plain backward's score of (i, j): the fp32 product rounded to T, -inf where masked.
template <class T>
__device__ inline float plain_score(const Dims& c, const double* qi, const double* kj, std::int64_t i, std::int64_t j,
                                    float scale) {
  return vis(c, i, j) ? rnd<T>(dot<float>(qi, kj, c.d) * scale) : -INFINITY;
}

/// Input precision, thread (b, h, i): the row's max, sum and D (fp32, P and dP rounded to T), and dQ.
template <class T>
__global__ void rows_plain(Dims c, const double* q, const double* k, const double* v, const double* dout, float* stats,
                           float* dqf, double* dq) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (r >= c.b * c.h * c.sq) return;
  const std::int64_t i = r % c.sq, h = (r / c.sq) % c.h, b = r / (c.sq * c.h), hk = h / c.group, D = c.d;
  const float scale = 1.0f / sqrtf(float(D));
  const double *qi = q + at(b, i, h, c.sq, c.h, D), *doi = dout + at(b, i, h, c.sq, c.h, D);
  float* acc = dqf + at(b, i, h, c.sq, c.h, D);
  for (std::int64_t e = 0; e < D; ++e) acc[e] = 0.0f;
  float mx = -INFINITY;
  auto score = [&](std::int64_t j) { return plain_score<T>(c, qi, k + at(b, j, hk, c.sk, c.hkv, D), i, j, scale); };
  for (std::int64_t j = 0; j < c.sk; ++j) mx = fmaxf(mx, score(j));
  float sum = 0, dd = 0;
  if (mx != -INFINITY) {
    for (std::int64_t j = 0; j < c.sk; ++j) sum += expf(score(j) - mx);
    for (std::int64_t j = 0; j < c.sk; ++j) {
      const float p = rnd<T>(expf(score(j) - mx) / sum);
      dd += p * rnd<T>(dot<float>(doi, v + at(b, j, hk, c.sk, c.hkv, D), D));
    }
    for (std::int64_t j = 0; j < c.sk; ++j) {
      const double* kj = k + at(b, j, hk, c.sk, c.hkv, D);
      const float p = rnd<T>(expf(score(j) - mx) / sum);
      const float ds = rnd<T>(p * (rnd<T>(dot<float>(doi, v + at(b, j, hk, c.sk, c.hkv, D), D)) - dd));
      for (std::int64_t e = 0; e < D; ++e) acc[e] += ds * float(kj[e]);
    }
  }
  stats[3 * r] = mx, stats[3 * r + 1] = sum, stats[3 * r + 2] = dd;
  for (std::int64_t e = 0; e < D; ++e)
    dq[at(b, i, h, c.sq, c.h, D) + e] = mx == -INFINITY ? 0.0 : rnd<T>(acc[e] * scale);
}

/// Input precision, thread (b, hk, j): per query head, dK and dV of key j summed in fp32 and rounded to
/// T, then summed over the group's heads and rounded again.
template <class T>
__global__ void keys_plain(Dims c, const double* q, const double* k, const double* v, const double* dout,
                           const float* stats, float* scratch, double* dk, double* dv) {
  const std::int64_t r = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (r >= c.b * c.hkv * c.sk) return;
  const std::int64_t j = r % c.sk, hk = (r / c.sk) % c.hkv, b = r / (c.sk * c.hkv), D = c.d;
  const float scale = 1.0f / sqrtf(float(D));
  const double *kj = k + at(b, j, hk, c.sk, c.hkv, D), *vj = v + at(b, j, hk, c.sk, c.hkv, D);
  float *ak = scratch + 4 * r * D, *av = ak + D, *dkf = av + D, *dvf = dkf + D;
  for (std::int64_t e = 0; e < D; ++e) dkf[e] = dvf[e] = 0.0f;
  for (std::int64_t hh = 0; hh < c.group; ++hh) {
    const std::int64_t h = hk * c.group + hh;
    for (std::int64_t e = 0; e < D; ++e) ak[e] = av[e] = 0.0f;
    for (std::int64_t i = 0; i < c.sq; ++i) {
      const float* st = stats + 3 * ((b * c.h + h) * c.sq + i);
      if (st[0] == -INFINITY) continue;  // a row without keys: P and dS 0
      const double *qi = q + at(b, i, h, c.sq, c.h, D), *doi = dout + at(b, i, h, c.sq, c.h, D);
      const float p = rnd<T>(expf(plain_score<T>(c, qi, kj, i, j, scale) - st[0]) / st[1]);
      const float ds = rnd<T>(p * (rnd<T>(dot<float>(doi, vj, D)) - st[2]));
      for (std::int64_t e = 0; e < D; ++e) {
        ak[e] += ds * float(qi[e]);
        av[e] += p * float(doi[e]);
      }
    }
    for (std::int64_t e = 0; e < D; ++e) {
      dkf[e] += rnd<T>(ak[e] * scale);
      dvf[e] += rnd<T>(av[e]);
    }
  }
  for (std::int64_t e = 0; e < D; ++e) {
    dk[at(b, j, hk, c.sk, c.hkv, D) + e] = rnd<T>(dkf[e]);
    dv[at(b, j, hk, c.sk, c.hkv, D) + e] = rnd<T>(dvf[e]);
  }
}

/// A device buffer of n elements, freed on scope exit.
template <class X>
struct Buf {
  X* p = nullptr;
  std::size_t n;
  explicit Buf(std::size_t n_) : n(n_) { KFA_BWD_CHECK_CUDA(cudaMalloc(&p, sizeof(X) * (n ? n : 1))); }
  Buf(const std::vector<X>& h) : Buf(h.size()) {
    KFA_BWD_CHECK_CUDA(cudaMemcpy(p, h.data(), sizeof(X) * n, cudaMemcpyHostToDevice));
  }
  ~Buf() { cudaFree(p); }
  std::vector<X> get() const {
    std::vector<X> h(n);
    KFA_BWD_CHECK_CUDA(cudaMemcpy(h.data(), p, sizeof(X) * n, cudaMemcpyDeviceToHost));
    return h;
  }
};

inline unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>(n > 0 ? (n + 127) / 128 : 1); }  // >= 1 block

}  // namespace ref

/// fp64 forward (O, LSE) and backward (dQ, dK, dV), straight from the definitions (on the GPU).
inline void reference(const Case& c, const Host& in, std::vector<double>& o, std::vector<double>& lse,
                      std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv, bool want_grads) {
  const ref::Dims n = ref::dims_of(c);
  const ref::Buf<double> q(in.q), k(in.k), v(in.v), dout(in.dout);
  ref::Buf<double> od(in.q.size()), lsed(c.b * c.h * c.sq), dsum(c.b * c.h * c.sq), dqd(in.q.size()), dkd(in.k.size()),
      dvd(in.k.size());
  ref::rows64<<<ref::blocks_for(c.b * c.h * c.sq), 128>>>(n, q.p, k.p, v.p, dout.p, od.p, lsed.p, dsum.p, dqd.p,
                                                          want_grads);
  KFA_BWD_CHECK_CUDA(cudaGetLastError());
  if (want_grads) {
    ref::keys64<<<ref::blocks_for(c.b * c.hkv * c.sk), 128>>>(n, q.p, k.p, v.p, dout.p, lsed.p, dsum.p, dkd.p, dvd.p);
    KFA_BWD_CHECK_CUDA(cudaGetLastError());
    dq = dqd.get(), dk = dkd.get(), dv = dvd.get();
  }
  o = od.get(), lse = lsed.get();
}

/// The plain unfused backward in the input precision (what autograd through a materialized
/// attention gives): fp32 products, S, P, dP, dS and the gradients rounded to T (on the GPU).
template <class T>
void plain_backward(const Case& c, const Host& in, std::vector<double>& dq, std::vector<double>& dk,
                    std::vector<double>& dv) {
  const ref::Dims n = ref::dims_of(c);
  const ref::Buf<double> q(in.q), k(in.k), v(in.v), dout(in.dout);
  ref::Buf<float> stats(3 * c.b * c.h * c.sq), dqf(in.q.size()), scratch(4 * in.k.size());
  ref::Buf<double> dqd(in.q.size()), dkd(in.k.size()), dvd(in.k.size());
  ref::rows_plain<T><<<ref::blocks_for(c.b * c.h * c.sq), 128>>>(n, q.p, k.p, v.p, dout.p, stats.p, dqf.p, dqd.p);
  KFA_BWD_CHECK_CUDA(cudaGetLastError());
  ref::keys_plain<T><<<ref::blocks_for(c.b * c.hkv * c.sk), 128>>>(n, q.p, k.p, v.p, dout.p, stats.p, scratch.p,
                                                                   dkd.p, dvd.p);
  KFA_BWD_CHECK_CUDA(cudaGetLastError());
  dq = dqd.get(), dk = dkd.get(), dv = dvd.get();
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
