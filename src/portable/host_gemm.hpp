#pragma once
// The host (CPU) body of tile_gemm: an explicitly vectorized register-blocked kernel. Compilers
// left alone pick narrow vectors and spill the accumulators of a wide block; this keeps an
// RM x (NV vectors) block of C in registers and streams A (broadcast) and B (vector loads).
// Every element of C still accumulates a(i,k) * b(k,j) with one fused multiply-add per k, in
// increasing k order, exactly as portable::madd does: the results are bitwise those of the
// generic loop, only faster.
#include <cstdint>

#include "portable/math.hpp"
#include "portable/tile_config.hpp"

#if !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__) && defined(__FMA__) && \
    (defined(__AVX512F__) || defined(__AVX2__))
#include <immintrin.h>
#define KFA_HOST_SIMD 1
#endif

// Full unrolling keeps the accumulator block in registers; GCC and Clang spell it differently and
// other front ends (nvcc parsing host code) would warn about either.
#if defined(__clang__)
#define KFA_HOST_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && !defined(__NVCC__) && !defined(__CUDACC__)
#define KFA_HOST_UNROLL _Pragma("GCC unroll 16")
#else
#define KFA_HOST_UNROLL
#endif

namespace kfa::portable::host {

#ifdef KFA_HOST_SIMD
/// One hardware vector of Acc: the widest the build's target has.
template <class Acc>
struct Vec;
#if defined(__AVX512F__)
template <>
struct Vec<float> {
  using reg = __m512;
  static constexpr int width = 16;
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
};
template <>
struct Vec<double> {
  using reg = __m512d;
  static constexpr int width = 8;
  static reg load(const double* p) { return _mm512_loadu_pd(p); }
  static void store(double* p, reg x) { _mm512_storeu_pd(p, x); }
  static reg broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static reg zero() { return _mm512_setzero_pd(); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
};
#else
template <>
struct Vec<float> {
  using reg = __m256;
  static constexpr int width = 8;
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
};
template <>
struct Vec<double> {
  using reg = __m256d;
  static constexpr int width = 4;
  static reg load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, reg x) { _mm256_storeu_pd(p, x); }
  static reg broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static reg zero() { return _mm256_setzero_pd(); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
};
#endif

/// C[RM x NV*W] (+)= A[RM x k] * B[k x NV*W], all in registers.
template <int RM, int NV, bool Accumulate, class Acc>
inline void block(int kdim, const Acc* a, int lda, const Acc* b, int ldb, Acc* c, int ldc) {
  using V = Vec<Acc>;
  constexpr int W = V::width;
  typename V::reg acc[RM][NV];
  KFA_HOST_UNROLL
  for (int i = 0; i < RM; ++i)
    KFA_HOST_UNROLL
    for (int v = 0; v < NV; ++v) acc[i][v] = Accumulate ? V::load(c + i * ldc + v * W) : V::zero();
  for (int kk = 0; kk < kdim; ++kk) {
    typename V::reg bv[NV];
    KFA_HOST_UNROLL
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + kk * ldb + v * W);
    KFA_HOST_UNROLL
    for (int i = 0; i < RM; ++i) {
      const typename V::reg ai = V::broadcast(a + i * lda + kk);
      KFA_HOST_UNROLL
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
  }
  KFA_HOST_UNROLL
  for (int i = 0; i < RM; ++i)
    KFA_HOST_UNROLL
    for (int v = 0; v < NV; ++v) V::store(c + i * ldc + v * W, acc[i][v]);
}

/// Columns of C in chunks of NVMAX vectors, then the remaining vectors (n is a multiple of W).
template <int RM, int NVMAX, bool Accumulate, class Acc>
inline void row_block(int n, int kdim, const Acc* a, int lda, const Acc* b, int ldb, Acc* c, int ldc) {
  constexpr int W = Vec<Acc>::width;
  int c0 = 0;
  for (; c0 + NVMAX * W <= n; c0 += NVMAX * W) block<RM, NVMAX, Accumulate>(kdim, a, lda, b + c0, ldb, c + c0, ldc);
  if constexpr (NVMAX > 1) {
    const int rest = (n - c0) / W;
    if (rest > 0) {
      if constexpr (NVMAX > 2) {
        if (rest >= 2) {
          block<RM, 2, Accumulate>(kdim, a, lda, b + c0, ldb, c + c0, ldc);
          c0 += 2 * W;
          if (rest == 2) return;
        }
      }
      block<RM, 1, Accumulate>(kdim, a, lda, b + c0, ldb, c + c0, ldc);
    }
  }
}

/// Register-block shape per element type: 8 rows x 2 vectors of 16 floats (AVX-512) keeps 16
/// accumulators, 2 B vectors and a broadcast in the 32 registers, and issues 16 FMAs per 10 loads.
template <class Acc>
struct Shape {
  static constexpr int rm = KFA_HOST_BLOCK_ROWS;
  static constexpr int nv = KFA_HOST_BLOCK_VECS;
};

/// True when the host kernel can take this GEMM (n a multiple of the vector width, m of rm).
template <class Acc>
inline bool fits(int m, int n) {
  return m % Shape<Acc>::rm == 0 && n % Vec<Acc>::width == 0;
}

/// Rows [r_begin, r_end) of C (multiples of rm): the caller splits rows between threads.
template <bool Accumulate, class Acc>
inline void gemm_rows(int r_begin, int r_end, int n, int kdim, const Acc* a, int lda, const Acc* b, int ldb, Acc* c,
                      int ldc) {
  constexpr int RM = Shape<Acc>::rm;
  for (int r = r_begin; r < r_end; r += RM)
    row_block<RM, Shape<Acc>::nv, Accumulate>(n, kdim, a + r * lda, lda, b, ldb, c + r * ldc, ldc);
}
#endif  // KFA_HOST_SIMD

}  // namespace kfa::portable::host
