#pragma once
// Why this file: what a consumer warpgroup of the Hopper forward does with its accumulators once a
// tile's key walk is done. O is normalized by the row sums (Featured: and scaled by dropout's
// keep_scale) into the consumer's part of the Q tile, which the walk no longer reads, in the 128-byte
// swizzle TMA reads; the LSE of the rows goes straight to global memory. Then the rows leave by TMA
// store, which clips rows past the end of the sequence, or (packed sequences, where a box past a
// sequence's end would write the next sequence's rows) by a copy of the rows inside the sequence;
// either way the Q buffer is handed back to the producer once it has been read.
#include <cuda.h>

#include <cstdint>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "common/online_softmax.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "sm90/forward_shape.cuh"
#include "sm90/tile_scheduler.cuh"

namespace kfa::cuda::hopper {

template <int D, class T, bool Featured>
struct Sm90Epilogue {
  using F = Sm90Shape<D, Featured>;
  using Tile = Sm90Tile<D, Featured>;
  static constexpr int CB = F::col_blocks, BM = F::block_m;

  /// Writes consumer warpgroup wg's rows of `tile` (O from acc_o, row_max and this lane's partial
  /// row_sum) and its LSE, then frees its Q buffer.
  __device__ __forceinline__ static void store(const CUtensorMap* o_map, const detail::ForwardArgs& a,
                                               const Sm90Smem<D, Featured>& smem,
                                               const Sm90Barriers<D, Featured>& bar, int wg,
                                               const Tile& tile, const float (&acc_o)[D / 2],
                                               const float (&row_max)[2], const float (&row_sum)[2]) {
    stage(a, smem.q(), wg, tile, acc_o, row_max, row_sum);
    if (Featured && a.varlen.enabled()) {
      named_barrier_sync(1 + wg, 128);  // every row staged
      store_rows_predicated(a, smem.q(), wg, tile);
      fence_async_shared();  // the reads before the next Q load (async proxy) overwrites the buffer
      named_barrier_sync(1 + wg, 128);  // every row read: the Q buffer may be refilled
      if (threadIdx.x % 128 == 0) mbar_arrive(bar.q_free(wg));
    } else {
      fence_async_shared();
      named_barrier_sync(1 + wg, 128);
      if (threadIdx.x % 128 == 0) {
        const int ob = Featured ? map_batch(a.o, tile.batch) : tile.batch;
        for (int c = 0; c < CB; ++c)
          tma_store_4d(o_map, smem.q() + c * BM * 128 + wg * 64 * 128, c * 64, tile.row0 + wg * 64, tile.head, ob);
        tma_store_commit();
        tma_store_wait_read();
        mbar_arrive(bar.q_free(wg));
      }
    }
  }

 private:
  /// Normalizes O into this warpgroup's rows of the Q tile at q_s (128-byte swizzle, as TMA reads it)
  /// and writes the LSE of its rows (rows within the tile's sequence only).
  __device__ __forceinline__ static void stage(const detail::ForwardArgs& a, std::uint32_t q_s, int wg,
                                               const Tile& tile, const float (&acc_o)[D / 2],
                                               const float (&row_max)[2], const float (&row_sum)[2]) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    float* lse = static_cast<float*>(a.lse.data) + std::int64_t(tile.batch) * a.lse.stride_b +
                 std::int64_t(tile.head) * a.lse.stride_h + std::int64_t(tile.q_begin) * a.lse.stride_s;
    float keep_scale = 1.0f;  // a kept probability is scaled by 1 / (1 - p)
    if constexpr (Featured) keep_scale = detail::make_dropout(a.score).keep_scale;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = Featured ? common::inverse_sum(l) * keep_scale : common::inverse_sum(l);
      const int r = warp * 16 + g + 8 * h;  // row within the warpgroup's 64
      const std::uint32_t row_addr = q_s + (wg * 64 + r) * 128;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        const int c = 8 * i + 2 * t;
        const std::uint32_t addr = row_addr + (c / 64) * BM * 128 + ((((c % 64) / 8) ^ (r % 8)) * 16) + (c % 8) * 2;
        const std::uint32_t v = ptx::pack2<T>(acc_o[4 * i + 2 * h] * inv, acc_o[4 * i + 2 * h + 1] * inv);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
      }
      const int row = tile.row0 + wg * 64 + r;
      if (t == 0 && row < tile.seqlen_q)
        lse[std::int64_t(row) * a.lse.stride_s] = common::row_lse(row_max[h], l, a.score.scale);
    }
  }

  /// The store of packed sequences (no TMA store: a box past a sequence's end would write the next
  /// sequence's rows): the warpgroup's 128 threads copy its staged rows that lie inside the sequence to
  /// global memory in 16-byte chunks, consecutive threads along a row.
  __device__ __forceinline__ static void store_rows_predicated(const detail::ForwardArgs& a, std::uint32_t base,
                                                               int wg, const Tile& tile) {
    constexpr int chunks = D / 8;  // 16-byte chunks per row
    const int tid = threadIdx.x % 128;
    const int row_first = tile.row0 + wg * 64;
    const int rows = tile.seqlen_q - row_first;  // of this warpgroup's 64 rows, those in the sequence
    char* o = static_cast<char*>(a.o.data) +
              2 * (std::int64_t(tile.batch) * a.o.stride_b + std::int64_t(tile.q_begin + row_first) * a.o.stride_s +
                   std::int64_t(tile.head) * a.o.stride_h);
#pragma unroll
    for (int k = 0; k < 64 * chunks / 128; ++k) {
      const int i = tid + 128 * k;
      const int r = i / chunks, c = i % chunks;
      if (r < rows) {
        const std::uint32_t addr = base + (c / 8) * BM * 128 + (wg * 64 + r) * 128 + (((c % 8) ^ (r % 8)) * 16);
        std::uint32_t x0, x1, x2, x3;
        asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3)
                     : "r"(addr)
                     : "memory");
        char* dst = o + 2 * (std::int64_t(r) * a.o.stride_s + c * 8);
        asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(dst), "r"(x0), "r"(x1), "r"(x2), "r"(x3)
                     : "memory");
      }
    }
  }
};

}  // namespace kfa::cuda::hopper
