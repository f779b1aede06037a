#pragma once
// The Hopper forward (FlashAttention-3 structure, sm_90a). Blocks of 1 + C warpgroups work on
// (batch, head, query tile) tiles in head-major, longest-first order; without causal or window masks
// the grid is persistent (one block per SM, tiles taken round-robin), otherwise one block per tile.
//   producer  (warpgroup 0, one thread): TMA loads of each consumer's Q rows (once its previous O
//             store has read the buffer), then of K and V tiles into a ring of `stages` slots that
//             runs on across tiles; a slot is refilled once every consumer released it.
//   consumers (warpgroups 1..C, 64 query rows each): S = Q K^T on wgmma from shared memory, the
//             online softmax in registers, O += P V on wgmma with P from registers. The S product of
//             tile j is issued before the P V product of tile j - 1, so the softmax of tile j overlaps
//             the tensor cores' work on j - 1 (FA3's intra-warpgroup pipelining), and the consumers
//             take turns issuing their GEMMs (ping-pong), so one's softmax overlaps the other's GEMMs.
//   epilogue: O is normalized, written into the consumer's part of the (now unused) Q tile, and
//             stored by TMA, which clips rows past the end of the sequence.
// Registers are rebalanced with setmaxnreg: the producer keeps 24, consumers take 240.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../../../common/online_softmax.hpp"
#include "../../../common/tile_scheduler.hpp"
#include "../device_attribute.hpp"
#include "../ptx.cuh"
#include "forward_sm90_config.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "kfa/error.hpp"
#include "sm90_ptx.cuh"
#include "tensor_map.hpp"
#include "wgmma_ops.cuh"

namespace kfa::cuda::hopper {

template <int D>
struct Sm90Shape : Sm90Config<D> {
  using C = Sm90Config<D>;
  static constexpr int block_m = 64 * C::consumers;
  static constexpr int threads = 128 * (C::consumers + 1);
  static constexpr int col_blocks = (D + 63) / 64;           // 64-element (128-byte) column blocks
  static constexpr int q_bytes = col_blocks * block_m * 128;
  static constexpr int q_part_bytes = col_blocks * 64 * 128;  // one consumer's 64 rows
  static constexpr int kv_bytes = col_blocks * C::block_n * 128;  // one K or V tile
  static constexpr int bar_offset = q_bytes + 2 * C::stages * kv_bytes;
  static constexpr int n_bars = 2 * C::consumers + 3 * C::stages;
  static constexpr int smem_bytes = bar_offset + n_bars * 8 + 1024;  // + alignment slack
  // setmaxnreg budgets (multiples of 8, 64K registers per SM): the producer keeps 24.
  static constexpr int producer_regs = 24;
  static constexpr int consumer_regs = C::consumers == 3 ? 160 : 240;
  static_assert(producer_regs * 128 + consumer_regs * 128 * C::consumers <= 65536, "register file");
  // A block may loop over several tiles; head_dim 256's accumulators leave no registers for that
  // loop's state (it spills), so its blocks take one tile each.
  static constexpr bool persistent = D <= 128;
  static_assert(C::block_n % 16 == 0 && C::block_n <= 256 && D % 16 == 0, "wgmma shapes");
};

/// The block's mbarriers: per consumer, Q landed / Q buffer free again (its O store has read it);
/// per ring slot, K landed / V landed / slot free (every consumer warp is done with it).
template <int D>
struct Sm90Barriers {
  using F = Sm90Shape<D>;
  static constexpr int C = F::consumers, S = F::stages;
  std::uint32_t base;
  __device__ std::uint32_t q_full(int w) const { return base + 8 * w; }
  __device__ std::uint32_t q_free(int w) const { return base + 8 * (C + w); }
  __device__ std::uint32_t k_full(int s) const { return base + 8 * (2 * C + s); }
  __device__ std::uint32_t v_full(int s) const { return base + 8 * (2 * C + S + s); }
  __device__ std::uint32_t kv_free(int s) const { return base + 8 * (2 * C + 2 * S + s); }
  __device__ void init() const {
    for (int w = 0; w < C; ++w) {
      mbar_init(q_full(w), 1);
      mbar_init(q_free(w), 1);
    }
    for (int s = 0; s < S; ++s) {
      mbar_init(k_full(s), 1);
      mbar_init(v_full(s), 1);
      mbar_init(kv_free(s), 4 * C);  // one arrival per consumer warp
    }
    fence_barrier_init();
  }
};

/// One (batch, head, query tile) of the persistent loop and the key tiles its rows see, in 32-bit
/// fields (positions are < 2^30, checked by supports_forward) to keep the consumers' registers free.
template <int D>
struct Sm90Tile {
  int batch, head, head_kv, row0;
  int key_begin, n_tiles;                     // key tiles [key_begin, key_begin + n_tiles)
  int unmasked_begin, unmasked_end;           // loop indices of the tiles that need no element mask
  __device__ Sm90Tile(std::int64_t id, std::int64_t n_qtiles, const detail::ForwardArgs& a) {
    constexpr int BM = Sm90Shape<D>::block_m, BN = Sm90Shape<D>::block_n;
    const common::TileCoord c = common::schedule_tile(id, n_qtiles, a.shape, a.score);
    batch = static_cast<int>(c.batch), head = static_cast<int>(c.head), head_kv = static_cast<int>(c.head_kv);
    const std::int64_t r0 = c.q_tile * BM;
    const std::int64_t row_end = a.shape.seqlen_q - r0 < BM ? a.shape.seqlen_q : r0 + BM;
    const common::KeyTiles keys = common::key_tiles(r0, row_end, BN, a.shape, a.score);
    const common::KeyTiles unmasked = common::unmasked_key_tiles(r0, row_end, BN, a.shape, a.score);
    row0 = static_cast<int>(r0);
    key_begin = static_cast<int>(keys.begin);
    n_tiles = static_cast<int>(keys.end - keys.begin);
    unmasked_begin = static_cast<int>(unmasked.begin - keys.begin);
    unmasked_end = static_cast<int>(unmasked.end - keys.begin);
  }
};

/// Ping-pong between the consumer warpgroups (FlashAttention-3): each issues its GEMMs only in its
/// turn and then passes the turn on, so one warpgroup's softmax runs while the other's GEMMs keep the
/// tensor cores busy. Warpgroup w waits on named barrier 8 + w, which the previous warpgroup arrives at;
/// the last one arrives once at the start to give warpgroup 0 the first turn (its one arrival that
/// nobody waits for carries over to the next tile, whose tiles count the same turns in every
/// warpgroup). Barriers 1..consumers are the epilogue's.
template <int Consumers>
struct Sm90PingPong {
  static constexpr bool on = kSm90PingPong && Consumers > 1;
  static constexpr int first_id = 8, threads = 256;
  int wg;
  __device__ void start() const {
    if (on && wg == Consumers - 1) named_barrier_arrive(first_id, threads);
  }
  __device__ void wait() const {
    if (on) named_barrier_sync(first_id + wg, threads);
  }
  __device__ void pass() const {
    if (on) named_barrier_arrive(first_id + (wg + 1) % Consumers, threads);
  }
};

/// The consumer warpgroup's view of one query tile: accumulators and softmax state.
template <int D, class T>
struct Sm90Consumer {
  using F = Sm90Shape<D>;
  static constexpr int BN = F::block_n, S = F::stages;
  using Mma_s = Wgmma<BN, T>;
  using Mma_o = Wgmma<D, T>;

  float acc_s[BN / 2];
  float acc_o[D / 2];
  std::uint32_t p[BN / 16][4];  // P of the previous tile as the A operand of P V
  float row_max[2], row_sum[2];

  /// The main loop over the key tiles of `tile`; `kv` counts the K/V tiles this block consumed before
  /// (ring slot kv % S, phase (kv / S) & 1), and is advanced past this tile's.
  __device__ void run(const detail::ForwardArgs& a, std::uint32_t base, const Sm90Barriers<D>& bar, int wg,
                      const Sm90Tile<D>& tile, int& kv, float scale_log2) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int row0 = tile.row0, n_tiles = tile.n_tiles;
    const int unmasked_begin = tile.unmasked_begin, unmasked_end = tile.unmasked_end;
    const int kv0 = kv;
    kv += n_tiles;
    const std::uint32_t q_s = base;
    auto k_slot = [&](int s) { return base + F::q_bytes + s * F::kv_bytes; };
    auto v_slot = [&](int s) { return base + F::q_bytes + (S + s) * F::kv_bytes; };
    // This thread's two rows (g and g + 8 of its warp's 16) in the sequence.
    const int my_row = row0 + wg * 64 + warp * 16 + g;

#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc_o[i] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = -INFINITY;
      row_sum[h] = 0.0f;
    }

    // S = Q K^T of key tile j, issued (not waited for).
    auto issue_scores = [&](int j) {
      const int s = (kv0 + j) % S;
      mbar_wait(bar.k_full(s), ((kv0 + j) / S) & 1);
      fence_registers(acc_s);
      wgmma_fence();
      // Each k16 step's descriptor is the base's plus its byte offset / 16; the Q base is made opaque
      // here so that the compiler rebuilds the steps' descriptors (one add each) rather than keeping
      // all of them live across the loop, which costs two registers per step.
      std::uint64_t qd = smem_desc(q_s + wg * 64 * 128, 0);
      asm volatile("" : "+l"(qd));
      const std::uint64_t kd = smem_desc(k_slot(s), 0);
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const std::uint32_t kofs = (ks % 4) * 32;  // k16 steps inside a 128-byte row
        Mma_s::template ss<0>(acc_s, qd + (((ks / 4) * F::block_m * 128 + kofs) >> 4),
                              kd + (((ks / 4) * BN * 128 + kofs) >> 4), ks > 0);
      }
      wgmma_commit();
      fence_registers(acc_s);
    };
    // O += P V of key tile j, issued.
    auto issue_pv = [&](int j) {
      const int s = (kv0 + j) % S;
      mbar_wait(bar.v_full(s), ((kv0 + j) / S) & 1);
      fence_registers(acc_o);
      wgmma_fence();
      const std::uint64_t vd = smem_desc(v_slot(s), BN * 128);
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) Mma_o::template rs<1>(acc_o, p[kk], vd + ((kk * 2048) >> 4), 1);
      wgmma_commit();
      fence_registers(acc_o);
    };
    // Masks and exponentiates S of tile j in place; returns the rescale factors of the two rows.
    auto softmax = [&](int j, float (&alpha)[2]) {
      if (j < unmasked_begin || j >= unmasked_end) {
        const std::int64_t col0 = std::int64_t(tile.key_begin + j) * BN;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const detail::VisibleRange r = detail::visible_keys(my_row + 8 * h, a.shape, a.score);
          // Narrowed to the tile's columns, so that the per-element tests below are 32-bit.
          const int first = static_cast<int>(r.begin - col0 < 0 ? 0 : r.begin - col0 > BN ? BN : r.begin - col0);
          const int end = static_cast<int>(r.end - col0 < 0 ? 0 : r.end - col0 > BN ? BN : r.end - col0);
#pragma unroll
          for (int i = 0; i < BN / 8; ++i)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int c = 8 * i + 2 * t + e;
              if (c < first || c >= end) acc_s[4 * i + 2 * h + e] = -INFINITY;
            }
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = row_max[h];
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) mx = fmaxf(mx, fmaxf(acc_s[4 * i + 2 * h], acc_s[4 * i + 2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        alpha[h] = common::rescale_factor(row_max[h], mx, scale_log2);
        row_max[h] = mx;
        const float offset = common::offset_max(mx) * scale_log2;
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = acc_s[4 * i + 2 * h + e];
            x = ptx::exp2_approx(fmaf(x, scale_log2, -offset));
            sum += x;
          }
        row_sum[h] = row_sum[h] * alpha[h] + sum;  // this lane's partial sum; reduced at the end
      }
    };
    // P (as T) in the A-fragment layout: the accumulators of two n8 column groups form one k16 step.
    auto convert_p = [&] {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        p[kk][0] = ptx::pack2<T>(acc_s[8 * kk + 0], acc_s[8 * kk + 1]);
        p[kk][1] = ptx::pack2<T>(acc_s[8 * kk + 2], acc_s[8 * kk + 3]);
        p[kk][2] = ptx::pack2<T>(acc_s[8 * kk + 4], acc_s[8 * kk + 5]);
        p[kk][3] = ptx::pack2<T>(acc_s[8 * kk + 6], acc_s[8 * kk + 7]);
      }
    };
    auto release = [&](int j) {
      if (lane == 0) mbar_arrive(bar.kv_free((kv0 + j) % S));
    };

    if (n_tiles > 0) {
      float alpha[2];
      const Sm90PingPong<F::consumers> turn{wg};
      turn.wait();
      issue_scores(0);
      turn.pass();
      wgmma_wait<0>();
      softmax(0, alpha);
      convert_p();
      for (int j = 1; j < n_tiles; ++j) {
        turn.wait();
        issue_scores(j);
        issue_pv(j - 1);
        turn.pass();
        wgmma_wait<1>();  // S of tile j is ready; P V of tile j - 1 may still run
        softmax(j, alpha);
        wgmma_wait<0>();
        release(j - 1);
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
          acc_o[4 * i + 0] *= alpha[0];
          acc_o[4 * i + 1] *= alpha[0];
          acc_o[4 * i + 2] *= alpha[1];
          acc_o[4 * i + 3] *= alpha[1];
        }
        convert_p();
      }
      turn.wait();
      issue_pv(n_tiles - 1);
      turn.pass();
      wgmma_wait<0>();
      release(n_tiles - 1);
    }
  }

  /// Normalizes O into this warpgroup's rows of the Q tile (128-byte swizzle, as TMA reads it) and
  /// writes the LSE of its rows.
  __device__ void stage_output(const detail::ForwardArgs& a, std::uint32_t q_s, int wg, std::int64_t row0,
                               std::int64_t batch, std::int64_t head) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    float* lse = static_cast<float*>(a.lse.data) + batch * a.lse.stride_b + head * a.lse.stride_h;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = common::inverse_sum(l);
      const int r = warp * 16 + g + 8 * h;  // row within the warpgroup's 64
      const std::uint32_t row_addr = q_s + (wg * 64 + r) * 128;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        const int c = 8 * i + 2 * t;
        const std::uint32_t addr = row_addr + (c / 64) * F::block_m * 128 + ((((c % 64) / 8) ^ (r % 8)) * 16) + (c % 8) * 2;
        const std::uint32_t v = ptx::pack2<T>(acc_o[4 * i + 2 * h] * inv, acc_o[4 * i + 2 * h + 1] * inv);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
      }
      const std::int64_t row = row0 + wg * 64 + r;
      if (t == 0 && row < a.shape.seqlen_q) lse[row * a.lse.stride_s] = common::row_lse(row_max[h], l, a.score.scale);
    }
  }
};

template <int D, class T>
__global__ void __launch_bounds__(Sm90Shape<D>::threads, 1)
    forward_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap o_map,
                        const detail::ForwardArgs a, const std::int64_t n_qtiles, const float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma and setmaxnreg exist on sm_90a only
  using F = Sm90Shape<D>;
  constexpr int BN = F::block_n, S = F::stages, CB = F::col_blocks, BM = F::block_m;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const std::uint32_t base = (raw + 1023) & ~1023u;  // 128-byte swizzle atoms are 1024-byte aligned
  const Sm90Barriers<D> bar{base + F::bar_offset};
  const std::int64_t n_work = a.shape.batch * a.shape.heads * n_qtiles;
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) bar.init();
  __syncthreads();

  // Persistent: block b takes tiles b, b + grid, b + 2 grid, ... (head-major, longest first).
  if (wg == 0) {  // producer
    regs_release<F::producer_regs>();
    if (threadIdx.x != 0) return;
    prefetch_tensor_map(&q_map);
    prefetch_tensor_map(&k_map);
    prefetch_tensor_map(&v_map);
    int kv = 0, it = 0;
    for (std::int64_t id = blockIdx.x; id < n_work; id += gridDim.x, ++it) {
      const Sm90Tile<D> tile(id, n_qtiles, a);
      const int batch = tile.batch, head = tile.head, head_kv = tile.head_kv, n_tiles = tile.n_tiles;
      // Q of consumer w once its previous O store has read the buffer; issued after the first K/V
      // tile so that this tile's K/V stream starts while the consumers finish the previous tile.
      auto load_q = [&] {
        for (int w = 0; w < F::consumers; ++w) {
          if (it > 0) mbar_wait(bar.q_free(w), (it - 1) & 1);
          mbar_expect_tx(bar.q_full(w), F::q_part_bytes);
          for (int c = 0; c < CB; ++c)
            tma_load_4d(base + c * BM * 128 + w * 64 * 128, &q_map, bar.q_full(w), c * 64,
                        tile.row0 + w * 64, head, batch);
        }
      };
      if (n_tiles == 0) load_q();
      for (int j = 0; j < n_tiles; ++j, ++kv) {
        const int s = kv % S;
        if (kv >= S) mbar_wait(bar.kv_free(s), ((kv / S) - 1) & 1);
        const int col0 = (tile.key_begin + j) * BN;
        const std::uint32_t k_s = base + F::q_bytes + s * F::kv_bytes, v_s = base + F::q_bytes + (S + s) * F::kv_bytes;
        mbar_expect_tx(bar.k_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(k_s + c * BN * 128, &k_map, bar.k_full(s), c * 64, col0, head_kv, batch);
        mbar_expect_tx(bar.v_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(v_s + c * BN * 128, &v_map, bar.v_full(s), c * 64, col0, head_kv, batch);
        if (j == 0) load_q();
      }
      if constexpr (!F::persistent) break;
    }
    return;
  }

  regs_claim<F::consumer_regs>();
  const int cwg = wg - 1;
  Sm90PingPong<F::consumers>{cwg}.start();
  int kv = 0, it = 0;
  for (std::int64_t id = blockIdx.x; id < n_work; id += gridDim.x, ++it) {
    const Sm90Tile<D> tile(id, n_qtiles, a);
    Sm90Consumer<D, T> consumer;
    mbar_wait(bar.q_full(cwg), it & 1);
    consumer.run(a, base, bar, cwg, tile, kv, scale_log2);
    consumer.stage_output(a, base, cwg, tile.row0, tile.batch, tile.head);
    fence_async_shared();
    named_barrier_sync(1 + cwg, 128);
    if (threadIdx.x % 128 == 0) {
      for (int c = 0; c < CB; ++c)
        tma_store_4d(&o_map, base + c * BM * 128 + cwg * 64 * 128, c * 64, tile.row0 + cwg * 64, tile.head,
                     tile.batch);
      tma_store_commit();
      tma_store_wait_read();
      mbar_arrive(bar.q_free(cwg));
    }
    if constexpr (!F::persistent) break;
  }
#endif
}

template <int D, class T>
void launch_forward_sm90(const detail::ForwardArgs& a, cudaStream_t stream) {
  using F = Sm90Shape<D>;
  const detail::Shape& s = a.shape;
  const std::int64_t n_qtiles = common::tile_count(s.seqlen_q, F::block_m);
  const std::int64_t work = s.batch * s.heads * n_qtiles;
  // Persistent (one block per SM, tiles taken round-robin) only when every tile costs the same: with
  // causal or windowed masks the blocks drift apart over many heads and lose the L2 reuse of K/V (d128
  // causal 16k ran at 0.73x of one block per tile on an H200), which the hardware's in-order block
  // dispatch keeps.
  const bool uniform = a.score.window_left < 0 && a.score.window_right < 0;
  const std::int64_t sms = std::max(1, device_attribute<cudaDevAttrMultiProcessorCount>());
  const std::int64_t blocks = F::persistent && uniform && work > sms ? sms : work;
  const CUtensorMap q_map = make_tensor_map(a.q, a.dtype, s.batch, s.seqlen_q, s.heads, D, 64);
  const CUtensorMap k_map = make_tensor_map(a.k, a.dtype, s.batch, s.seqlen_k, s.heads_kv, D, F::block_n);
  const CUtensorMap v_map = make_tensor_map(a.v, a.dtype, s.batch, s.seqlen_k, s.heads_kv, D, F::block_n);
  const CUtensorMap o_map = make_tensor_map(a.o, a.dtype, s.batch, s.seqlen_q, s.heads, D, 64);
  auto kernel = forward_sm90_kernel<D, T>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<static_cast<unsigned>(blocks), F::threads, F::smem_bytes, stream>>>(
        q_map, k_map, v_map, o_map, a, n_qtiles, common::scale_log2(a.score.scale));
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw Error(std::string("CUDA Hopper forward kernel launch failed: ") + cudaGetErrorString(err));
}

}  // namespace kfa::cuda::hopper

#define KFA_SM90_INSTANTIATE_FORWARD(DIM, TYPE) \
  template void kfa::cuda::hopper::launch_forward_sm90<DIM, TYPE>(const kfa::detail::ForwardArgs&, cudaStream_t);
