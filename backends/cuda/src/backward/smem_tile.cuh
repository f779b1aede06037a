#pragma once
// Swizzled shared-memory tiles of 16-bit elements and their global -> shared loaders.
// A tile row of COLS elements is COLS/8 chunks of 16 bytes; chunk c of row r lives at chunk
// c ^ (r % 8). Eight consecutive rows of one logical chunk then fall into eight different bank
// groups, so the ldmatrix reads (8 rows per phase) and cp.async writes are conflict-free.
#include <cstdint>

#include "warp_ops.cuh"

namespace kfa::cuda::bwd {

template <int COLS>
__device__ __forceinline__ std::uint32_t tile_addr(std::uint32_t base, int row, int chunk) {
  static_assert(COLS % 64 == 0, "swizzle needs at least 8 chunks per row");
  return base + static_cast<std::uint32_t>(row * COLS * 2 + ((chunk ^ (row & 7)) << 4));
}

/// The same address for the ldmatrix patterns, written so the compiler can fold the unrolled
/// loops' constants into immediates: `row` has its lane part in the low 3 bits (its base is a
/// multiple of 8), `chunk_even` is even, and `lane_xor` = (lane's chunk bit) ^ (row % 8).
template <int COLS>
__device__ __forceinline__ std::uint32_t swz_addr(std::uint32_t base, int row, int chunk_even, int lane_xor) {
  return base + static_cast<std::uint32_t>(row * COLS * 2 + ((chunk_even & ~7) << 4) + (((chunk_even & 7) ^ lane_xor) << 4));
}

/// Byte address of element (row, col) of a swizzled tile (col even: 4-byte aligned).
template <int COLS>
__device__ __forceinline__ std::uint32_t tile_elem_addr(std::uint32_t base, int row, int col) {
  return tile_addr<COLS>(base, row, col >> 3) + static_cast<std::uint32_t>((col & 7) * 2);
}

/// Asynchronously copies rows [row0, row0 + ROWS) of one (batch, head) slice of a [b, s, h, D]
/// tensor into a swizzled tile; rows at or beyond `rows_valid` are zero-filled.
/// `slice` points at (b, s = 0, h); `stride_s` is in elements and a multiple of 8.
template <class T, int ROWS, int D, int NTHREADS>
__device__ __forceinline__ void load_rows_async(std::uint32_t tile, const T* slice, std::int64_t stride_s,
                                                std::int64_t row0, std::int64_t rows_valid) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % NTHREADS == 0, "tile chunks must divide evenly among threads");
#pragma unroll
  for (int i = 0; i < kChunks / NTHREADS; ++i) {
    const int idx = i * NTHREADS + static_cast<int>(threadIdx.x);
    const int r = idx / kChunksPerRow, c = idx % kChunksPerRow;
    const std::int64_t row = row0 + r;
    const bool ok = row < rows_valid;
    const T* src = ok ? slice + row * stride_s + c * 8 : slice;
    cp_async16(tile_addr<D>(tile, r, c), src, ok ? 16 : 0);
  }
}

/// Copies N contiguous floats (N % 4 == 0, src 16-byte aligned) into shared memory.
template <int N, int NTHREADS>
__device__ __forceinline__ void load_floats_async(std::uint32_t dst, const float* src) {
  for (int i = static_cast<int>(threadIdx.x); i < N / 4; i += NTHREADS) cp_async16(dst + i * 16, src + i * 4, 16);
}

}  // namespace kfa::cuda::bwd
