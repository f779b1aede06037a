#pragma once
// The one swizzled shared-memory tile of the mma.sync kernels (forward and backward) and its
// global -> shared loader. A [rows x D] tile of 16-bit elements is swizzled so that ldmatrix (8 rows
// of one 16-byte chunk) and cp.async hit 8 different bank groups: chunk c of row r is stored at chunk
// c ^ (r % 8). Rows are padded to a multiple of 64 elements (128 bytes), so every row starts at bank 0
// and the XOR stays inside the row (head_dim 96 uses rows of 128 elements). The backward's address
// helpers (tile_addr, swz_addr, tile_elem_addr) and row loader are the same layout spelled by column
// count, for tiles whose rows are already multiples of 64 elements.
#include <cstdint>

#include "arch/ptx.cuh"

namespace kfa::cuda {

template <int D>
struct SwizzledTile {
  static constexpr int chunks = D / 8;                  // 16-byte chunks of data per row
  static constexpr int stride = (D + 63) / 64 * 64;     // elements per stored row

  /// Byte offset of chunk `c` of row `r`.
  __device__ __forceinline__ static std::uint32_t chunk_offset(int r, int c) {
    return static_cast<std::uint32_t>((r * stride + ((c ^ (r & 7)) * 8)) * 2);
  }
  /// Byte offset of element (r, col) for col even (a 4-byte pair never crosses a chunk).
  __device__ __forceinline__ static std::uint32_t elem_offset(int r, int col) {
    return chunk_offset(r, col >> 3) + (col & 7) * 2;
  }
  static constexpr int bytes(int rows) { return rows * stride * 2; }
  static constexpr int row_bytes = stride * 2;

  /// The XOR term of a lane that addresses row r0 + row and chunk c0 + chunk, for r0 a multiple of 8
  /// and c0 even, chunk in {0, 1}: chunk_offset(r0 + row, c0 + chunk) ==
  ///   (r0 + row) * row_bytes + ((c0 * 16) ^ lane_xor(row, chunk)).
  /// Loops over r0 and c0 then cost one LOP3 per address, or nothing when c0 is fixed.
  __device__ __forceinline__ static std::uint32_t lane_xor(int row, int chunk) {
    return static_cast<std::uint32_t>((chunk ^ (row & 7)) * 16);
  }
};

/// All threads of the block copy rows [row0, row0 + Rows) of a [seq, D] slice (row stride `ld`
/// elements) into the tile at shared address `dst`; rows at or past `valid_rows` are zero-filled.
template <int D, int Rows, int Threads, class T>
__device__ __forceinline__ void load_tile_async(std::uint32_t dst, const T* src, std::int64_t ld, int valid_rows) {
  using Tile = SwizzledTile<D>;
  constexpr int total = Rows * Tile::chunks;
  if constexpr (Threads % Tile::chunks == 0 && (Threads / Tile::chunks) % 8 == 0) {
    // Each thread copies one fixed chunk column of rows r, r + step, ...: the shared offsets differ
    // by constants and the global pointer is bumped, so nothing per row stays live in registers.
    constexpr int step = Threads / Tile::chunks;
    static_assert(Rows % step == 0, "whole passes of the block's threads");
    const int r = static_cast<int>(threadIdx.x) / Tile::chunks, c = static_cast<int>(threadIdx.x) % Tile::chunks;
    const std::uint32_t d0 = dst + Tile::chunk_offset(r, c);
    const T* p = src + r * ld + c * 8;
#pragma unroll
    for (int k = 0; k < Rows / step; ++k) {
      const bool ok = r + k * step < valid_rows;
      ptx::cp_async_16(d0 + k * step * Tile::row_bytes, ok ? p : src, ok);
      p += step * ld;
    }
  } else {
#pragma unroll
    for (int k = 0; k < (total + Threads - 1) / Threads; ++k) {
      const int i = static_cast<int>(threadIdx.x) + k * Threads;
      if (total % Threads != 0 && i >= total) break;
      const int r = i / Tile::chunks, c = i % Tile::chunks;
      const bool ok = r < valid_rows;
      const T* p = ok ? src + r * ld + c * 8 : src;
      ptx::cp_async_16(dst + Tile::chunk_offset(r, c), p, ok);
    }
  }
}

/// The same copy for rows that are not equally spaced (a paged KV cache, GQA-packed query heads):
/// row_ptr(r) gives the first element of row r (asked only for r < valid_rows); other rows are zero.
template <int D, int Rows, int Threads, class T, class RowPtr>
__device__ __forceinline__ void load_tile_rows_async(std::uint32_t dst, RowPtr&& row_ptr, int valid_rows,
                                                     const T* any_valid) {
  using Tile = SwizzledTile<D>;
  constexpr int total = Rows * Tile::chunks;
#pragma unroll
  for (int k = 0; k < (total + Threads - 1) / Threads; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * Threads;
    if (total % Threads != 0 && i >= total) break;
    const int r = i / Tile::chunks, c = i % Tile::chunks;
    const bool ok = r < valid_rows;
    const T* p = ok ? static_cast<const T*>(row_ptr(r)) + c * 8 : any_valid;
    ptx::cp_async_16(dst + Tile::chunk_offset(r, c), p, ok);
  }
}

/// The rows each thread copies in load_tile_runs_async: a run of consecutive rows (0 where the
/// block's threads do not split into whole chunk columns).
template <int D, int Rows, int Threads>
constexpr int tile_run_rows() {
  constexpr int chunks = SwizzledTile<D>::chunks;
  return Threads % chunks == 0 && (Rows * chunks) % Threads == 0 ? Rows * chunks / Threads : 0;
}

/// The same copy for tiles made of runs of equally spaced rows (a paged KV cache whose pages are a
/// multiple of the run but smaller than the tile): thread i copies chunk column i % chunks of rows
/// [q * run, q * run + run), q = i / chunks, from `run_ptr(q * run)` bumped by `ld` per row, so one
/// address (one page-table lookup) serves a run. `run_ptr` is called only for runs with a valid row.
template <int D, int Rows, int Threads, class T, class RunPtr>
__device__ __forceinline__ void load_tile_runs_async(std::uint32_t dst, RunPtr&& run_ptr, std::int64_t ld, int valid_rows,
                                                     const T* any_valid) {
  using Tile = SwizzledTile<D>;
  constexpr int run = tile_run_rows<D, Rows, Threads>();
  static_assert(run > 0, "whole chunk columns per thread");
  const int q = static_cast<int>(threadIdx.x) / Tile::chunks, c = static_cast<int>(threadIdx.x) % Tile::chunks;
  const int r0 = q * run;
  const T* p = r0 < valid_rows ? static_cast<const T*>(run_ptr(r0)) + c * 8 : any_valid;
#pragma unroll
  for (int k = 0; k < run; ++k) {
    const bool ok = r0 + k < valid_rows;
    ptx::cp_async_16(dst + Tile::chunk_offset(r0 + k, c), ok ? p : any_valid, ok);
    p += ld;
  }
}

// ---- the same tile spelled by its column count COLS (a multiple of 64: no row padding)

/// Byte address of chunk `chunk` of row `row` of the tile at `base`.
template <int COLS>
__device__ __forceinline__ std::uint32_t tile_addr(std::uint32_t base, int row, int chunk) {
  static_assert(COLS % 64 == 0, "swizzle needs at least 8 chunks per row");
  return base + SwizzledTile<COLS>::chunk_offset(row, chunk);
}

/// The same address for the ldmatrix patterns, written so the compiler can fold the unrolled loops'
/// constants into immediates: `row` has its lane part in the low 3 bits (its base is a multiple of
/// 8), `chunk_even` is even, and `lane_xor` (< 8) = (lane's chunk bit) ^ (row % 8).
template <int COLS>
__device__ __forceinline__ std::uint32_t swz_addr(std::uint32_t base, int row, int chunk_even, int lane_xor) {
  static_assert(COLS % 64 == 0, "swizzle needs at least 8 chunks per row");
  return base + static_cast<std::uint32_t>(row * SwizzledTile<COLS>::row_bytes + ((chunk_even ^ lane_xor) << 4));
}

/// Byte address of element (row, col) of the tile (col even: 4-byte aligned).
template <int COLS>
__device__ __forceinline__ std::uint32_t tile_elem_addr(std::uint32_t base, int row, int col) {
  static_assert(COLS % 64 == 0, "swizzle needs at least 8 chunks per row");
  return base + SwizzledTile<COLS>::elem_offset(row, col);
}

/// Rows [row0, row0 + ROWS) of a [seq, D] slice (`slice` at row 0, row stride `stride_s` elements)
/// into the tile; rows at or beyond `rows_valid` are zero-filled (load_tile_async's copy).
template <class T, int ROWS, int D, int NTHREADS>
__device__ __forceinline__ void load_rows_async(std::uint32_t tile, const T* slice, std::int64_t stride_s,
                                                std::int64_t row0, std::int64_t rows_valid) {
  const std::int64_t left = rows_valid - row0;
  const int valid = static_cast<int>(left < 0 ? 0 : left > ROWS ? ROWS : left);
  load_tile_async<D, ROWS, NTHREADS>(tile, valid > 0 ? slice + row0 * stride_s : slice, stride_s, valid);
}

/// Copies N contiguous floats (N % 4 == 0, src 16-byte aligned) into shared memory.
template <int N, int NTHREADS>
__device__ __forceinline__ void load_floats_async(std::uint32_t dst, const float* src) {
  for (int i = static_cast<int>(threadIdx.x); i < N / 4; i += NTHREADS) ptx::cp_async_16(dst + i * 16, src + i * 4, true);
}

}  // namespace kfa::cuda
