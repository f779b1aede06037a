#pragma once
// The Hopper forward (FlashAttention-3 structure, sm_90a). One block per (batch, head, query tile)
// with 1 + C warpgroups:
//   producer  (warpgroup 0, one thread): TMA loads of the Q tile once, then of K and V tiles into a
//             ring of `stages` slots; a slot is refilled once every consumer released it.
//   consumers (warpgroups 1..C, 64 query rows each): S = Q K^T on wgmma from shared memory, the
//             online softmax in registers, O += P V on wgmma with P from registers. The S product of
//             tile j is issued before the P V product of tile j - 1, so the softmax of tile j overlaps
//             the tensor cores' work on j - 1 (FA3's intra-warpgroup pipelining); the C consumers
//             interleave on the SM's tensor cores as well.
//   epilogue: O is normalized, written into the consumer's part of the (now unused) Q tile, and
//             stored by TMA, which clips rows past the end of the sequence.
// Registers are rebalanced with setmaxnreg: the producer keeps 24, consumers take 240.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "../../../common/online_softmax.hpp"
#include "../../../common/tile_scheduler.hpp"
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
  static constexpr int kv_bytes = col_blocks * C::block_n * 128;  // one K or V tile
  static constexpr int bar_offset = q_bytes + 2 * C::stages * kv_bytes;
  static constexpr int smem_bytes = bar_offset + (1 + 3 * C::stages) * 8 + 1024;  // + alignment slack
  static_assert(C::block_n % 16 == 0 && C::block_n <= 256 && D % 16 == 0, "wgmma shapes");
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

  __device__ void run(const detail::ForwardArgs& a, std::uint32_t base, int wg, std::int64_t row0,
                      const common::KeyTiles& keys, int unmasked_begin, int unmasked_end, float scale_log2) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int n_tiles = static_cast<int>(keys.end - keys.begin);
    const std::uint32_t q_s = base, bars = base + F::bar_offset;
    auto k_slot = [&](int s) { return base + F::q_bytes + s * F::kv_bytes; };
    auto v_slot = [&](int s) { return base + F::q_bytes + (S + s) * F::kv_bytes; };
    auto k_full = [&](int s) { return bars + 8 * (1 + s); };
    auto v_full = [&](int s) { return bars + 8 * (1 + S + s); };
    auto kv_free = [&](int s) { return bars + 8 * (1 + 2 * S + s); };
    // This thread's two rows (g and g + 8 of its warp's 16) in the sequence.
    const std::int64_t my_row = row0 + wg * 64 + warp * 16 + g;

#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc_o[i] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = -INFINITY;
      row_sum[h] = 0.0f;
    }

    // S = Q K^T of key tile j, issued (not waited for).
    auto issue_scores = [&](int j) {
      const int s = j % S;
      mbar_wait(k_full(s), (j / S) & 1);
      fence_registers(acc_s);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const std::uint32_t kofs = (ks % 4) * 32;  // k16 steps inside a 128-byte row
        const std::uint64_t da = smem_desc(q_s + (ks / 4) * F::block_m * 128 + wg * 64 * 128 + kofs, 0);
        const std::uint64_t db = smem_desc(k_slot(s) + (ks / 4) * BN * 128 + kofs, 0);
        Mma_s::template ss<0>(acc_s, da, db, ks > 0);
      }
      wgmma_commit();
      fence_registers(acc_s);
    };
    // O += P V of key tile j, issued.
    auto issue_pv = [&](int j) {
      const int s = j % S;
      mbar_wait(v_full(s), (j / S) & 1);
      fence_registers(acc_o);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        Mma_o::template rs<1>(acc_o, p[kk], smem_desc(v_slot(s) + kk * 2048, BN * 128), 1);
      wgmma_commit();
      fence_registers(acc_o);
    };
    // Masks and exponentiates S of tile j in place; returns the rescale factors of the two rows.
    auto softmax = [&](int j, float (&alpha)[2]) {
      if (j < unmasked_begin || j >= unmasked_end) {
        const std::int64_t col0 = (keys.begin + j) * BN;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const detail::VisibleRange r = detail::visible_keys(my_row + 8 * h, a.shape, a.score);
          const std::int64_t first = r.begin - col0, end = r.end - col0;
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
      if (lane == 0) mbar_arrive(kv_free(j % S));
    };

    mbar_wait(bars, 0);  // Q landed
    if (n_tiles > 0) {
      float alpha[2];
      issue_scores(0);
      wgmma_wait<0>();
      softmax(0, alpha);
      convert_p();
      for (int j = 1; j < n_tiles; ++j) {
        issue_scores(j);
        issue_pv(j - 1);
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
      issue_pv(n_tiles - 1);
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
  constexpr int BM = F::block_m, BN = F::block_n, S = F::stages, CB = F::col_blocks;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const std::uint32_t base = (raw + 1023) & ~1023u;  // 128-byte swizzle atoms are 1024-byte aligned
  const std::uint32_t bars = base + F::bar_offset;   // Q full, K full[S], V full[S], K/V free[S]

  const detail::Shape& shape = a.shape;
  const common::TileCoord tile = common::schedule_tile(blockIdx.x, n_qtiles, shape, a.score);
  const std::int64_t row0 = tile.q_tile * BM;
  const std::int64_t row_end = shape.seqlen_q - row0 < BM ? shape.seqlen_q : row0 + BM;
  const common::KeyTiles keys = common::key_tiles(row0, row_end, BN, shape, a.score);
  const int n_tiles = static_cast<int>(keys.end - keys.begin);
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    mbar_init(bars, 1);
    for (int s = 0; s < S; ++s) {
      mbar_init(bars + 8 * (1 + s), 1);
      mbar_init(bars + 8 * (1 + S + s), 1);
      mbar_init(bars + 8 * (1 + 2 * S + s), 4 * F::consumers);  // one arrival per consumer warp
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int batch = static_cast<int>(tile.batch), head = static_cast<int>(tile.head),
            head_kv = static_cast<int>(tile.head_kv);
  if (wg == 0) {  // producer
    regs_release<24>();
    if (threadIdx.x == 0) {
      prefetch_tensor_map(&q_map);
      prefetch_tensor_map(&k_map);
      prefetch_tensor_map(&v_map);
      mbar_expect_tx(bars, F::q_bytes);
      for (int c = 0; c < CB; ++c)
        for (int w = 0; w < F::consumers; ++w)
          tma_load_4d(base + c * BM * 128 + w * 64 * 128, &q_map, bars, c * 64, static_cast<int>(row0) + w * 64,
                      head, batch);
      for (int j = 0; j < n_tiles; ++j) {
        const int s = j % S;
        if (j >= S) mbar_wait(bars + 8 * (1 + 2 * S + s), ((j / S) - 1) & 1);
        const int col0 = static_cast<int>((keys.begin + j) * BN);
        const std::uint32_t k_s = base + F::q_bytes + s * F::kv_bytes, v_s = base + F::q_bytes + (S + s) * F::kv_bytes;
        mbar_expect_tx(bars + 8 * (1 + s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(k_s + c * BN * 128, &k_map, bars + 8 * (1 + s), c * 64, col0, head_kv, batch);
        mbar_expect_tx(bars + 8 * (1 + S + s), F::kv_bytes);
        for (int c = 0; c < CB; ++c)
          tma_load_4d(v_s + c * BN * 128, &v_map, bars + 8 * (1 + S + s), c * 64, col0, head_kv, batch);
      }
    }
    return;
  }

  regs_claim<240>();
  const int cwg = wg - 1;
  const common::KeyTiles unmasked = common::unmasked_key_tiles(row0, row_end, BN, shape, a.score);
  Sm90Consumer<D, T> consumer;
  consumer.run(a, base, cwg, row0, keys, static_cast<int>(unmasked.begin - keys.begin),
               static_cast<int>(unmasked.end - keys.begin), scale_log2);
  consumer.stage_output(a, base, cwg, row0, tile.batch, tile.head);
  fence_async_shared();
  named_barrier_sync(1 + cwg, 128);
  if (threadIdx.x % 128 == 0) {
    for (int c = 0; c < CB; ++c)
      tma_store_4d(&o_map, base + c * BM * 128 + cwg * 64 * 128, c * 64, static_cast<int>(row0) + cwg * 64, head, batch);
    tma_store_commit();
    tma_store_wait_read();
  }
#endif
}

template <int D, class T>
void launch_forward_sm90(const detail::ForwardArgs& a, cudaStream_t stream) {
  using F = Sm90Shape<D>;
  const detail::Shape& s = a.shape;
  const std::int64_t n_qtiles = common::tile_count(s.seqlen_q, F::block_m);
  const std::int64_t blocks = s.batch * s.heads * n_qtiles;
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
