#pragma once
// The Hopper forward (FlashAttention-3 structure, sm_90a): the kernel shell and its launcher. Blocks
// of 1 + C warpgroups work on (batch, head, query tile) tiles in head-major, longest-first order;
// without causal or window masks the grid is persistent (one block per SM, tiles taken round-robin),
// otherwise one block per tile. This file only gives each warpgroup its role and registers and
// composes the parts, each in its own file under sm90/:
//   forward_shape.cuh   tile and shared-memory geometry, mbarriers, the ring position (pipeline state)
//   tile_scheduler.cuh  the tile a block works on (packed-sequence bounds) and the order it takes them
//   block_sparse.cuh    the block-mask walk, its words from producer to consumers, the block bits
//   producer.cuh        warpgroup 0, one thread: TMA loads of Q and of the K/V ring (walk words)
//   mainloop.cuh        warpgroups 1..C: S = Q K^T, masks, online softmax, dropout, O += P V, ping-pong
//   epilogue.cuh        normalization, LSE, the TMA store or the predicated store of packed sequences
// Registers are rebalanced with setmaxnreg: the producer keeps 24, consumers take 240.
// Two variants per (head_dim, type), chosen at run time (sm90_featured): the dense kernel (causal /
// window masks only) and the Featured one, which adds through the feature policy softcap and ALiBi
// (policy::modify_and_mask_row), block-sparse masks (the producer walks the visited key tiles and
// tells the consumers each slot's tile in a shared-memory word), dropout after the softmax sums
// (O scaled by keep_scale in the epilogue) and packed varlen sequences.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "arch/tensor_map.hpp"
#include "common/online_softmax.hpp"
#include "common/tile_scheduler.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/error.hpp"
#include "sm90/epilogue.cuh"
#include "sm90/forward_shape.cuh"
#include "sm90/forward_sm90_config.hpp"
#include "sm90/mainloop.cuh"
#include "sm90/producer.cuh"
#include "sm90/tile_scheduler.cuh"

namespace kfa::cuda::hopper {

template <int D, class T, bool Featured>
__global__ void __launch_bounds__(Sm90Shape<D, Featured>::threads, 1)
    forward_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap o_map,
                        const detail::ForwardArgs a, const std::int64_t n_qtiles, const float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma and setmaxnreg exist on sm_90a only
  using F = Sm90Shape<D, Featured>;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const Sm90Smem<D, Featured> smem{(raw + 1023) & ~1023u};  // 128-byte swizzle atoms are 1024-byte aligned
  const Sm90Barriers<D, Featured> bar = smem.barriers();
  const Sm90TileScheduler<D, Featured> sched(a, n_qtiles);
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) bar.init();
  __syncthreads();

  if (wg == 0) {  // producer
    regs_release<F::producer_regs>();
    if (threadIdx.x != 0) return;
    Sm90Producer<D, Featured>::run(&q_map, &k_map, &v_map, a, sched, smem, bar);
    return;
  }

  regs_claim<F::consumer_regs>();
  const int cwg = wg - 1;  // consumer warpgroup
  Sm90PingPong<F::consumers>{cwg}.start();
  Sm90PipelineState<F::stages> ring;  // the K/V slot of the block's next visited key tile
  Sm90PipelineState<1> q_buf;         // this consumer's Q buffer
  for (auto id = sched.first(); sched.valid(id); id = sched.next(id)) {
    const Sm90Tile<D, Featured> tile = sched.tile(id, a);
    if (tile.past_end()) continue;
    Sm90Mainloop<D, T, Featured> mainloop;
    mbar_wait(bar.q_full(cwg), q_buf.phase);
    mainloop.run(a, smem, bar, cwg, tile, ring, scale_log2);
    Sm90Epilogue<D, T, Featured>::store(&o_map, a, smem, bar, cwg, tile, mainloop.acc_o, mainloop.row_max,
                                        mainloop.row_sum);
    q_buf.advance();
  }
#endif
}

/// True when the call needs the Featured kernel: score modifiers, dropout, a block mask, packed
/// sequences, or a tensor shared by the batches (batch stride 0).
inline bool sm90_featured(const detail::ForwardArgs& a) {
  const bool shared = a.shape.batch > 1 &&
                      (a.q.stride_b == 0 || a.k.stride_b == 0 || a.v.stride_b == 0 || a.o.stride_b == 0);
  return a.score.softcap != 0.0f || a.score.alibi_slopes != nullptr || a.score.dropout_p > 0.0f ||
         a.score.blocks.enabled() || a.varlen.enabled() || shared;
}

template <int D, class T, bool Featured>
void launch_forward_sm90_variant(const detail::ForwardArgs& a, cudaStream_t stream) {
  using F = Sm90Shape<D, Featured>;
  const detail::Shape& s = a.shape;
  const std::int64_t n_qtiles = common::tile_count(s.seqlen_q, F::block_m);  // varlen: of the longest sequence
  const std::int64_t work = s.batch * s.heads * n_qtiles;
  if (work == 0) return;
  if (!detail::native_block_sizes(a.score.blocks))  // the walk (Sm90Walk) and sm90_block_bits_row need them
    throw Error("CUDA Hopper forward: block masks need block sizes of 64, 128 or 256");
  const std::int64_t blocks = Sm90TileScheduler<D, Featured>::grid(a, work);  // persistent or one per tile
  // Packed sequences: the maps cover the packed rows as one batch (make_tensor_map: batch stride 0).
  std::int64_t rows_q = s.seqlen_q, rows_k = s.seqlen_k;
  if (a.varlen.enabled()) {
    // The public API passes the packed extents; only a bare launcher call without them reads the prefix sums.
    rows_q = a.varlen.total_q > 0 ? a.varlen.total_q : packed_rows(a.varlen.cu_seqlens_q, s.batch, stream);
    rows_k = a.varlen.total_k > 0 ? a.varlen.total_k : packed_rows(a.varlen.cu_seqlens_k, s.batch, stream);
    if (rows_q == 0) return;
  }
  const CUtensorMap q_map = make_tensor_map(a.q, a.dtype, s.batch, rows_q, s.heads, D, 64);
  // No keys at all (every packed sequence empty): nothing is loaded; q stands in for the maps' address.
  const detail::Tensor4& k = rows_k > 0 ? a.k : a.q;
  const detail::Tensor4& v = rows_k > 0 ? a.v : a.q;
  rows_k = std::max<std::int64_t>(rows_k, 1);
  const CUtensorMap k_map = make_tensor_map(k, a.dtype, s.batch, rows_k, s.heads_kv, D, F::block_n);
  const CUtensorMap v_map = make_tensor_map(v, a.dtype, s.batch, rows_k, s.heads_kv, D, F::block_n);
  const CUtensorMap o_map = make_tensor_map(a.o, a.dtype, s.batch, rows_q, s.heads, D, 64);
  auto kernel = forward_sm90_kernel<D, T, Featured>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<static_cast<unsigned>(blocks), F::threads, F::smem_bytes, stream>>>(
        q_map, k_map, v_map, o_map, a, n_qtiles, common::scale_log2(a.score.scale));
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw LaunchError(std::string("CUDA Hopper forward kernel launch failed: ") + cudaGetErrorString(err));
}

/// The dense kernel for plain calls (causal / window masks only), the Featured one otherwise; both
/// are instantiated in the one translation unit of (D, T).
template <int D, class T>
void launch_forward_sm90(const detail::ForwardArgs& a, cudaStream_t stream) {
  if (sm90_featured(a))
    launch_forward_sm90_variant<D, T, true>(a, stream);
  else
    launch_forward_sm90_variant<D, T, false>(a, stream);
}

}  // namespace kfa::cuda::hopper

#define KFA_SM90_INSTANTIATE_FORWARD(DIM, TYPE) \
  template void kfa::cuda::hopper::launch_forward_sm90<DIM, TYPE>(const kfa::detail::ForwardArgs&, cudaStream_t);
