#pragma once
// Why this file: the loading roles of the Hopper backward, which only move data (24 registers each,
// setmaxnreg; the dQ writer warp of the same warpgroup is in mainloop.cuh). Three roles, so that none
// holds more state than 24 registers take:
//   Sm90BwdWalker    one thread: walks the block's steps (walk.cuh) and, once a ring slot is free
//                    again (all consumer warps released it), writes the slot's step word;
//   Sm90BwdProducer  one thread: the TMA loads of the block's K and V tiles (once) and of Q and dO of
//                    each slot's step;
//   Sm90BwdStats     one warp: the step's row statistics (lse in log2 units and D, two rows per
//                    lane) into the slot, so that the consumers read them from shared memory, not
//                    from global memory on their path.
// The producer and the statistics warp start on the slot's word_full barrier and publish on its
// q_full barrier, which the consumers wait for.
#include <cuda.h>

#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "sm90/backward/shape.cuh"
#include "sm90/backward/walk.cuh"
#include "sm90/forward_shape.cuh"  // Sm90PipelineState

namespace kfa::cuda::hopper {

/// The steps as the producer and the statistics warp take them: f(slot, step) per ring slot, in the
/// ring's order, once the walker has written the slot's step word (the slot is then free).
template <int D, bool Featured, class Fn>
__device__ __forceinline__ void for_each_slot_step(const Sm90BwdSmem<D, Featured>& smem, const Sm90BwdBarriers<D, Featured>& bar, Fn&& f) {
  Sm90PipelineState<Sm90BwdShape<D, Featured>::stages> ring;
#pragma unroll 1
  for (bool last = false; !last; ring.advance()) {
    mbar_wait(bar.word_full(ring.index), ring.phase);
    const Sm90BwdStep step = Sm90BwdStep::get(smem.slot_step(ring.index));
    last = step.last;
    f(ring.index, step);
  }
}

/// The walk, one thread: per step, once the ring slot is free again, the slot's step word.
template <int D, bool Featured>
struct Sm90BwdWalker {
  using F = Sm90BwdShape<D, Featured>;
  __device__ __forceinline__ static void run(const bwd::KernelParams& p, const Sm90BwdSmem<D, Featured>& smem,
                                             const Sm90BwdBarriers<D, Featured>& bar, const Sm90BwdBlock& blk) {
    if (!blk.any()) return;
    Sm90PipelineState<F::stages> ring;
    Sm90BwdWalk<F::block_k, F::block_q, Featured> w;
    w.h = blk.first_h;
    w.m0 = blk.first_m0;
    w.partial = blk.first_partial != 0;
#pragma unroll 1
    for (bool last = false; !last; ring.advance()) {
      Sm90BwdWalk<F::block_k, F::block_q, Featured> next = w;
      next.advance(blk, p);
      last = !next.valid(blk);
      mbar_wait(bar.q_free(ring.index), ring.free_phase());
      w.step(last).put(smem.slot_step(ring.index));
      mbar_arrive(bar.word_full(ring.index));
      w = next;
    }
  }
};

/// The TMA loads, one thread: K and V once, then per step Q and dO of the slot's step word.
template <int D, bool Featured>
struct Sm90BwdProducer {
  using F = Sm90BwdShape<D, Featured>;
  static constexpr int CB = F::col_blocks, BK = F::block_k, BQ = F::block_q;

  __device__ __forceinline__ static void run(const CUtensorMap* q_map, const CUtensorMap* k_map,
                                             const CUtensorMap* v_map, const CUtensorMap* do_map,
                                             const bwd::KernelParams& p, int b, int hk, int n0,
                                             const Sm90BwdSmem<D, Featured>& smem, const Sm90BwdBarriers<D, Featured>& bar,
                                             const Sm90BwdBlock& blk) {
    if (!blk.any()) return;  // no query sees these keys: the consumers write zero gradients
    // Tensors without a batch stride (packed sequences) are mapped as one batch (make_tensor_map).
    const int qb = Featured && p.q.stride_b == 0 ? 0 : b, kb = Featured && p.k.stride_b == 0 ? 0 : b;
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(do_map);
    const int key_row = blk.k_begin + n0;  // packed: past the sequence's end the next one's keys (masked)
    mbar_expect_tx(bar.kv_full(), 2 * F::kv_bytes);
    for (int c = 0; c < CB; ++c) tma_load_4d(smem.k() + c * BK * 128, k_map, bar.kv_full(), c * 64, key_row, hk, kb);
    for (int c = 0; c < CB; ++c) tma_load_4d(smem.v() + c * BK * 128, v_map, bar.kv_full(), c * 64, key_row, hk, kb);
    for_each_slot_step(smem, bar, [&](int s, const Sm90BwdStep& step) {
      const int row = blk.q_begin + step.m0;
      mbar_expect_tx(bar.q_full(s), 2 * F::q_bytes);
      for (int c = 0; c < CB; ++c) tma_load_4d(smem.q(s) + c * BQ * 128, q_map, bar.q_full(s), c * 64, row, step.h, qb);
      for (int c = 0; c < CB; ++c)
        tma_load_4d(smem.dout(s) + c * BQ * 128, do_map, bar.q_full(s), c * 64, row, step.h, qb);
    });
  }
};

template <int D, bool Featured>
struct Sm90BwdStats {
  using F = Sm90BwdShape<D, Featured>;
  static constexpr int BQ = F::block_q;

  __device__ __forceinline__ static void run(const bwd::KernelParams& p, int b, const Sm90BwdSmem<D, Featured>& smem,
                                             const Sm90BwdBarriers<D, Featured>& bar, const Sm90BwdBlock& blk, int lane) {
    if (!blk.any()) return;
    for_each_slot_step(smem, bar, [&](int s, const Sm90BwdStep& step) {
      // rows m0 + lane + 32 j of (b, h): both rows of a 64-row step in flight; the four of a 128-row
      // step one after the other (more would spill the warpgroup's 24 registers)
      const float* lse_bh = static_cast<const float*>(p.lse.data) + b * p.lse.stride_b + step.h * p.lse.stride_h +
                            std::int64_t(blk.q_begin) * p.lse.stride_s;
      const bwd::RowMap rm = bwd::row_map<Featured>(p, b, step.h, blk.q_begin);
#pragma unroll(BQ == 64 ? 2 : 1)
      for (int r = lane; r < BQ; r += 32) {
        const bwd::RowStats st = bwd::row_stats(p, lse_bh, rm, step.m0 + r, blk.seqlen_q);
        smem.lse(s)[r] = st.lse_log2;
        smem.dsum(s)[r] = st.dsum;
      }
      mbar_arrive(bar.q_full(s));  // this lane's statistics are in
    });
  }
};

}  // namespace kfa::cuda::hopper
