#pragma once
// Why this file: the producer warpgroup of the Hopper backward, which only moves data. One thread
// issues the TMA loads of the block's K and V tiles (once) and of Q and dO of every step into the
// ring of `stages` slots, each slot reused once all consumer warps have released it. It keeps 24
// registers (setmaxnreg), with the dQ writer warp of the same warpgroup (mainloop.cuh).
#include <cuda.h>

#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "sm90/backward/shape.cuh"
#include "sm90/forward_shape.cuh"  // Sm90PipelineState

namespace kfa::cuda::hopper {

template <int D>
struct Sm90BwdProducer {
  using F = Sm90BwdShape<D>;
  static constexpr int CB = F::col_blocks, BK = F::block_k, BQ = F::block_q;

  __device__ __forceinline__ static void run(const CUtensorMap* q_map, const CUtensorMap* k_map,
                                             const CUtensorMap* v_map, const CUtensorMap* do_map,
                                             const bwd::KernelParams& p, int b, int hk, int n0,
                                             const Sm90BwdSmem<D>& smem, const Sm90BwdBarriers<D>& bar) {
    const QueryWalk walk(p.shape, p.score, hk, n0, BK, BQ);
    if (walk.steps == 0) return;  // no query sees these keys: the consumers write zero gradients
    prefetch_tensor_map(q_map);
    prefetch_tensor_map(do_map);
    mbar_expect_tx(bar.kv_full(), 2 * F::kv_bytes);
    for (int c = 0; c < CB; ++c) tma_load_4d(smem.k() + c * BK * 128, k_map, bar.kv_full(), c * 64, n0, hk, b);
    for (int c = 0; c < CB; ++c) tma_load_4d(smem.v() + c * BK * 128, v_map, bar.kv_full(), c * 64, n0, hk, b);
    Sm90PipelineState<F::stages> ring;
    walk.for_each_step(p.shape.heads / p.shape.heads_kv, BQ, [&](int h, int m0, bool) {
      const int s = ring.index;
      mbar_wait(bar.q_free(s), ring.free_phase());
      mbar_expect_tx(bar.q_full(s), 2 * F::q_bytes);
      for (int c = 0; c < CB; ++c) tma_load_4d(smem.q(s) + c * BQ * 128, q_map, bar.q_full(s), c * 64, m0, h, b);
      for (int c = 0; c < CB; ++c)
        tma_load_4d(smem.dout(s) + c * BQ * 128, do_map, bar.q_full(s), c * 64, m0, h, b);
      ring.advance();
    });
  }
};

}  // namespace kfa::cuda::hopper
