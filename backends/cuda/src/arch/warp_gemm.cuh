#pragma once
// Warp-level GEMM pieces over swizzled tiles, each producing or consuming a 16-row strip:
//   gemm_abt:     acc[16 x 8*NB] += A[16 x 16*KS] * B^T   (A and B tiles both stored [row][k])
//   gemm_rab:     acc[16 x 8*NB] += A(registers)[16 x 16*KS] * B   (B stored [k][n], read transposed)
//   gemm_tab:     acc[16 x 8*NB] += A^T * B   (A stored [k][m], B stored [k][n], both read transposed)
// and the conversion of an fp32 accumulator strip into A fragments for the next product.
// Row offsets (a_row0, b_row0, k_row0) are multiples of 8 and column offsets multiples of 16.
#include <cstdint>

#include "arch/smem_tile.cuh"
#include "arch/warp_ops.cuh"

namespace kfa::cuda {

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) & 31; }

/// acc += A[a_row0 .. +16, 0 .. 16*KS) * B[b_row0 .. + 8*NB, 0 .. 16*KS)^T.
template <class T, int NB, int KS, int COLS>
__device__ __forceinline__ void gemm_abt(float (&acc)[NB][4], std::uint32_t a_tile, int a_row0, std::uint32_t b_tile,
                                         int b_row0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[4];
    ldmatrix_x4(a, swz_addr<COLS>(a_tile, a_row0 + (l & 15), ks * 2, (l >> 4) ^ (l & 7)));
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4(b, swz_addr<COLS>(b_tile, b_row0 + np * 16 + (l & 7) + ((l >> 4) << 3), ks * 2, ((l >> 3) & 1) ^ (l & 7)));
      ElemOps<T>::mma(acc[2 * np], a, b[0], b[1]);
      ElemOps<T>::mma(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

/// acc += A * B[k_row0 .. + 16*KS, n_col0 .. n_col0 + 8*NB), A given as KS register fragments.
template <class T, int NB, int KS, int COLS>
__device__ __forceinline__ void gemm_rab(float (&acc)[NB][4], const std::uint32_t (&a)[KS][4], std::uint32_t b_tile,
                                         int k_row0, int n_col0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(
          b, swz_addr<COLS>(b_tile, k_row0 + ks * 16 + (l & 7) + (((l >> 3) & 1) << 3), (n_col0 >> 3) + np * 2, (l >> 4) ^ (l & 7)));
      ElemOps<T>::mma(acc[2 * np], a[ks], b[0], b[1]);
      ElemOps<T>::mma(acc[2 * np + 1], a[ks], b[2], b[3]);
    }
  }
}

/// acc += A^T[m_col0 .. +16, 0 .. 16*KS) * B[0 .. 16*KS, n_col0 .. + 8*NB), with A stored [k][m]
/// (ACOLS columns) and B stored [k][n] (BCOLS columns).
template <class T, int NB, int KS, int ACOLS, int BCOLS>
__device__ __forceinline__ void gemm_tab(float (&acc)[NB][4], std::uint32_t a_tile, int m_col0, std::uint32_t b_tile,
                                         int n_col0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[4];
    ldmatrix_x4_trans(a, swz_addr<ACOLS>(a_tile, ks * 16 + (l & 7) + ((l >> 4) << 3), m_col0 >> 3, ((l >> 3) & 1) ^ (l & 7)));
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(
          b, swz_addr<BCOLS>(b_tile, ks * 16 + (l & 7) + (((l >> 3) & 1) << 3), (n_col0 >> 3) + np * 2, (l >> 4) ^ (l & 7)));
      ElemOps<T>::mma(acc[2 * np], a, b[0], b[1]);
      ElemOps<T>::mma(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// ---- MT m-tiles (16 rows each) per warp, so one B fragment feeds MT mma (less shared-memory traffic)

/// acc[MT] += A[a_row0 + 16 mt .., 0 .. 16*KS) * B[b_row0 .. + 8*NB, 0 .. 16*KS)^T (A, B stored [row][k]).
template <class T, int MT, int NB, int KS, int ACOLS, int BCOLS>
__device__ __forceinline__ void gemm_abt_mt(float (&acc)[MT][NB][4], std::uint32_t a_tile, int a_row0,
                                            std::uint32_t b_tile, int b_row0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldmatrix_x4(a[mt], swz_addr<ACOLS>(a_tile, a_row0 + mt * 16 + (l & 15), ks * 2, (l >> 4) ^ (l & 7)));
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4(b, swz_addr<BCOLS>(b_tile, b_row0 + np * 16 + (l & 7) + ((l >> 4) << 3), ks * 2, ((l >> 3) & 1) ^ (l & 7)));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ElemOps<T>::mma(acc[mt][2 * np], a[mt], b[0], b[1]);
        ElemOps<T>::mma(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

/// acc[MT] += A[a_row0 + 16 mt .., 0 .. 16*KS) * B[0 .. 16*KS, n_col0 .. + 8*NB) (A stored [m][k], B [k][n]).
template <class T, int MT, int NB, int KS, int ACOLS, int BCOLS>
__device__ __forceinline__ void gemm_ab_mt(float (&acc)[MT][NB][4], std::uint32_t a_tile, int a_row0,
                                           std::uint32_t b_tile, int n_col0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldmatrix_x4(a[mt], swz_addr<ACOLS>(a_tile, a_row0 + mt * 16 + (l & 15), ks * 2, (l >> 4) ^ (l & 7)));
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(
          b, swz_addr<BCOLS>(b_tile, ks * 16 + (l & 7) + (((l >> 3) & 1) << 3), (n_col0 >> 3) + np * 2, (l >> 4) ^ (l & 7)));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ElemOps<T>::mma(acc[mt][2 * np], a[mt], b[0], b[1]);
        ElemOps<T>::mma(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

/// acc[MT] += A^T[m_col0 + 16 mt .., 0 .. 16*KS) * B[0 .. 16*KS, n_col0 .. + 8*NB) (A stored [k][m], B [k][n]).
template <class T, int MT, int NB, int KS, int ACOLS, int BCOLS>
__device__ __forceinline__ void gemm_tab_mt(float (&acc)[MT][NB][4], std::uint32_t a_tile, int m_col0,
                                            std::uint32_t b_tile, int n_col0) {
  static_assert(NB % 2 == 0, "B fragments are loaded two n-blocks at a time");
  const int l = lane_id();
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    std::uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldmatrix_x4_trans(a[mt], swz_addr<ACOLS>(a_tile, ks * 16 + (l & 7) + ((l >> 4) << 3), (m_col0 >> 3) + mt * 2,
                                               ((l >> 3) & 1) ^ (l & 7)));
#pragma unroll
    for (int np = 0; np < NB / 2; ++np) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(
          b, swz_addr<BCOLS>(b_tile, ks * 16 + (l & 7) + (((l >> 3) & 1) << 3), (n_col0 >> 3) + np * 2, (l >> 4) ^ (l & 7)));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        ElemOps<T>::mma(acc[mt][2 * np], a[mt], b[0], b[1]);
        ElemOps<T>::mma(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

template <int MT, int NB>
__device__ __forceinline__ void zero(float (&acc)[MT][NB][4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[m][j][e] = 0.0f;
}

/// Rounds an fp32 accumulator strip [16 x 8*NB] to T and lays it out as NB/2 A fragments (k = columns).
template <class T, int NB>
__device__ __forceinline__ void acc_to_a(std::uint32_t (&a)[NB / 2][4], const float (&acc)[NB][4]) {
#pragma unroll
  for (int kk = 0; kk < NB / 2; ++kk) {
    a[kk][0] = ElemOps<T>::pack(acc[2 * kk][0], acc[2 * kk][1]);
    a[kk][1] = ElemOps<T>::pack(acc[2 * kk][2], acc[2 * kk][3]);
    a[kk][2] = ElemOps<T>::pack(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[kk][3] = ElemOps<T>::pack(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
  }
}

/// A 64-bit row/key offset clamped into [-1, 2^30] so it fits int comparisons (sequences < 2^30).
__device__ __forceinline__ std::int64_t clamp_offset(std::int64_t x) {
  return x < -1 ? -1 : (x > (1 << 30) ? (1 << 30) : x);
}

template <int NB>
__device__ __forceinline__ void zero(float (&acc)[NB][4]) {
#pragma unroll
  for (int j = 0; j < NB; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.0f;
}

}  // namespace kfa::cuda
