#pragma once
// The AMD memory-copy layer: a workgroup stages row-major [rows][dim] tiles of a 16-bit tensor from
// global memory into LDS with 16-byte loads, either as is or transposed ([dim][rows]); rows past
// the sequence end are zero-filled so masked products never meet stale data (0 * NaN = NaN).
#include <hip/hip_runtime.h>

#include <cstdint>

#include "mfma_fragment.hpp"

namespace kfa::hip {

typedef unsigned u32x4 __attribute__((ext_vector_type(4)));
constexpr int copy_chunk = 8;  // 16-bit elements per 16-byte load

/// Row-major copy: lds[r][c] = src[r * row_stride + c], r < valid_rows, else 0. LD % 8 == 0.
template <int Rows, int Dim, int LD>
__device__ inline void copy_rows(u16* lds, const u16* src, std::int64_t row_stride, std::int64_t valid_rows) {
  static_assert(Dim % copy_chunk == 0 && LD % copy_chunk == 0, "16-byte chunks");
  constexpr int chunks_per_row = Dim / copy_chunk;
  for (int c = threadIdx.x; c < Rows * chunks_per_row; c += blockDim.x) {
    const int r = c / chunks_per_row, col = (c % chunks_per_row) * copy_chunk;
    u32x4 v = {0u, 0u, 0u, 0u};
    if (r < valid_rows) v = *reinterpret_cast<const u32x4*>(src + r * row_stride + col);
    *reinterpret_cast<u32x4*>(lds + r * LD + col) = v;
  }
}

/// Transposed copy: lds[c][r] = src[r * row_stride + c] (0 past valid_rows).
template <int Rows, int Dim, int LD>
__device__ inline void copy_rows_transposed(u16* lds, const u16* src, std::int64_t row_stride, std::int64_t valid_rows) {
  static_assert(Dim % copy_chunk == 0, "16-byte chunks");
  constexpr int chunks_per_row = Dim / copy_chunk;
  for (int c = threadIdx.x; c < Rows * chunks_per_row; c += blockDim.x) {
    const int r = c % Rows, col = (c / Rows) * copy_chunk;  // consecutive threads: consecutive rows
    u32x4 v = {0u, 0u, 0u, 0u};
    if (r < valid_rows) v = *reinterpret_cast<const u32x4*>(src + r * row_stride + col);
#pragma unroll
    for (int e = 0; e < copy_chunk; ++e)
      lds[(col + e) * LD + r] = static_cast<u16>(v[e / 2] >> (16 * (e % 2)));
  }
}

/// 4 consecutive 16-bit elements from global memory (8-byte aligned), or zeros when !valid.
__device__ inline u16x4 load4(const u16* p, bool valid) {
  u16x4 v = {0, 0, 0, 0};
  if (valid) v = *reinterpret_cast<const u16x4*>(p);
  return v;
}

__device__ inline void store4(u16* p, u16x4 v) { *reinterpret_cast<u16x4*>(p) = v; }

}  // namespace kfa::hip
