#pragma once
// Host fast path of the transposed tile load (K -> K^T in scratch): 8 x 8 float blocks are
// transposed in registers instead of element by element, whose strided stores dominate the
// load otherwise. Pure data movement: the values are the same as the generic loop's.
#include <cstdint>

#if !defined(__CUDA_ARCH__) && !defined(__HIP_DEVICE_COMPILE__) && defined(__AVX__)
#include <immintrin.h>
#define KFA_HOST_TRANSPOSE 1
#endif

namespace kfa::portable::host {

#ifdef KFA_HOST_TRANSPOSE
/// dst[c * ld + r] = row[r][c] for an 8 x 8 block (row[r] = start of source row r).
inline void transpose8x8(const float* const* row, int c0, float* dst, int ld) {
  __m256 r0 = _mm256_loadu_ps(row[0] + c0), r1 = _mm256_loadu_ps(row[1] + c0);
  __m256 r2 = _mm256_loadu_ps(row[2] + c0), r3 = _mm256_loadu_ps(row[3] + c0);
  __m256 r4 = _mm256_loadu_ps(row[4] + c0), r5 = _mm256_loadu_ps(row[5] + c0);
  __m256 r6 = _mm256_loadu_ps(row[6] + c0), r7 = _mm256_loadu_ps(row[7] + c0);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst + 0 * ld, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ld, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/// Rows [r0, r0 + 8) of a transposed tile load: dst[c * ld + r] = src_row(r)[c] for c < d, zero
/// for d <= c < dp. All 8 rows exist (the caller handles a partial last block generically).
inline void transpose_rows8(const float* const* row, int r0, int d, int dp, float* dst, int ld) {
  int c = 0;
  for (; c + 8 <= d; c += 8) transpose8x8(row, c, dst + c * ld + r0, ld);
  for (; c < d; ++c)
    for (int r = 0; r < 8; ++r) dst[c * ld + r0 + r] = row[r][c];
  for (; c < dp; ++c)
    for (int r = 0; r < 8; ++r) dst[c * ld + r0 + r] = 0.0f;
}
#endif  // KFA_HOST_TRANSPOSE

}  // namespace kfa::portable::host
