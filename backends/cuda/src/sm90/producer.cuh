#pragma once
// Why this file: the producer warpgroup of the Hopper forward, which only moves data. One thread
// issues the TMA loads of each consumer's Q rows (once that consumer's previous O store has read the
// buffer) and of the K and V tiles of every visited key tile into the ring, which runs on across the
// block's tiles; the Featured producer also walks the block mask (Sm90Walk) and writes the walk words
// the consumers read. It keeps 24 registers (setmaxnreg), so its state is a few 32-bit values.
#include <cuda.h>

#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "kfa/detail/args.hpp"
#include "sm90/block_sparse.cuh"
#include "sm90/forward_shape.cuh"
#include "sm90/tile_scheduler.cuh"

namespace kfa::cuda::hopper {

template <int D, bool Featured>
struct Sm90Producer {
  using F = Sm90Shape<D, Featured>;
  using Tile = Sm90Tile<D, Featured>;
  using Scheduler = Sm90TileScheduler<D, Featured>;
  static constexpr int BN = F::block_n, S = F::stages, CB = F::col_blocks, BM = F::block_m;
  // Copies of the K/V issue loop: one per ring slot in the persistent dense kernel (its trip is the
  // tile's key count); one where the walk decides the trip (Featured) or a block has a single tile.
  static constexpr int kv_unroll = Featured || !Scheduler::persistent ? 1 : S;

  /// The producer's whole life, run by thread 0 of warpgroup 0: every tile of the block in the
  /// scheduler's order, in the ring order the consumers take (Sm90PipelineState).
  __device__ __forceinline__ static void run(const CUtensorMap* q_map, const CUtensorMap* k_map,
                                             const CUtensorMap* v_map, const detail::ForwardArgs& a,
                                             const Scheduler& sched, const Sm90Smem<D, Featured>& smem,
                                             const Sm90Barriers<D, Featured>& bar) {
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(k_map);
    prefetch_tensor_map(v_map);
    Sm90PipelineState<S> ring;  // the K/V slot of the next visited key tile
    Sm90PipelineState<1> q_buf;  // the consumers' Q buffers (one each, all on the same lap)
    for (auto id = sched.first(); sched.valid(id); id = sched.next(id)) {
      const Tile tile = sched.tile(id, a);
      if (tile.past_end()) continue;
      const int head = tile.head, head_kv = tile.head_kv;
      const int qb = Featured ? map_batch(a.q, tile.batch) : tile.batch;
      const int kb = Featured ? map_batch(a.k, tile.batch) : tile.batch;
      const int vb = Featured ? map_batch(a.v, tile.batch) : tile.batch;
      // Featured: the walk (visited tiles only; skipped ones are never loaded) and its words for the
      // consumers, each written before the arrival that publishes its Q buffer or ring slot.
      const Sm90Walk<D, Featured> walk(tile, a);
      Sm90Visit cur = walk.visit(tile.key_begin);
      auto put_word = [&](std::uint32_t addr, std::uint32_t value) {
        if constexpr (Featured) asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(value) : "memory");
      };
      // Q of consumer w once its previous O store has read the buffer; issued after the first K/V
      // tile so that this tile's K/V stream starts while the consumers finish the previous tile.
      auto load_q = [&](bool any) {
        for (int w = 0; w < F::consumers; ++w) {
          // (Without the persistent loop a block has one tile, whose Q buffers are fresh.)
          if (Scheduler::persistent) mbar_wait(bar.q_free(w), q_buf.free_phase());
          put_word(smem.tile_word(w), any ? 1u : 0u);
          mbar_expect_tx(bar.q_full(w), F::q_part_bytes);
          for (int c = 0; c < CB; ++c)
            tma_load_4d(smem.q() + c * BM * 128 + w * 64 * 128, q_map, bar.q_full(w), c * 64,
                        tile.q_begin + tile.row0 + w * 64, head, qb);
        }
      };
      if (cur.tile >= tile.key_end) load_q(false);
#pragma unroll(kv_unroll)
      for (int j = 0; cur.tile < tile.key_end; ++j, ring.advance()) {
        const Sm90Visit next = walk.visit(cur.tile + 1);
        const int s = ring.index;
        mbar_wait(bar.kv_free(s), ring.free_phase());
        cur.last = next.tile >= tile.key_end;
        put_word(smem.slot_word(s), cur.encode());
        const int row = tile.k_begin + cur.tile * BN;  // packed varlen: past the sequence's end the next one's keys
        const std::uint32_t k_s = smem.k(s), v_s = smem.v(s);
        mbar_expect_tx(bar.k_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(k_s + c * BN * 128, k_map, bar.k_full(s), c * 64, row, head_kv, kb);
        mbar_expect_tx(bar.v_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(v_s + c * BN * 128, v_map, bar.v_full(s), c * 64, row, head_kv, vb);
        if (j == 0) load_q(true);
        cur = next;
      }
      q_buf.advance();
    }
  }
};

}  // namespace kfa::cuda::hopper
