#pragma once
// Why this file: the consumer warpgroups of the Hopper backward, the part that computes. Consumer w
// owns keys [64 w, +64) of the block's BK and keeps their dK and dV in registers across every step.
// Per step (one query tile of BQ rows of one query head, Q and dO in ring slot s):
//   1. S^T = K Q^T and dP^T = V dO^T on wgmma from shared memory (keys x queries);
//   2. P^T = exp2(S^T * scale_log2 - lse), masked (causal / window / key bound) where the tile needs it;
//   3. dV += P^T dO (wgmma, P^T from registers), issued while dS^T = P^T (dP^T - D) is computed;
//   4. dK += dS^T Q (wgmma, dS^T from registers), while dS^T is also stored to shared memory;
//   5. dQ = dS K (wgmma, dS read transposed from shared memory; split between the consumers as
//      Sm90BwdShape::dq_split_cols says), staged in shared memory for the dQ writer (Sm90BwdDqWriter),
//      which adds it to the fp32 accumulator by TMA reductions.
// The epilogue stores dK (times the softmax scale) and dV; keys past seqlen_k are not written.
#include <cstdint>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "arch/warp_ops.cuh"
#include "arch/wgmma_ops.cuh"
#include "kfa/detail/tile_rules.hpp"
#include "sm80/backward/params.cuh"
#include "sm90/backward/shape.cuh"
#include "sm90/forward_shape.cuh"  // Sm90PipelineState

namespace kfa::cuda::hopper {

template <int D, class T>
struct Sm90BwdMainloop {
  using F = Sm90BwdShape<D>;
  static constexpr int BK = F::block_k, BQ = F::block_q, KS = D / 16;
  using MmaS = Wgmma<BQ, T>;           // S^T, dP^T: 64 keys x BQ queries
  using MmaD = Wgmma<D, T>;            // dV, dK: 64 keys x D
  using MmaQ = Wgmma<F::dq_cols, T>;   // dQ: BQ queries x dq_cols

  float dk[D / 2], dv[D / 2];

  __device__ __forceinline__ void run(const bwd::KernelParams& p, int b, int hk, int n0, int cw,
                                      const Sm90BwdSmem<D>& smem, const Sm90BwdBarriers<D>& bar) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.0f;
    QueryWalk walk(p.shape, p.score, hk, n0, BK, BQ);
    if (walk.steps == 0) return;
    const auto& shape = p.shape;
    const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;
    const int key0 = n0 + cw * 64;                 // this consumer's first key
    const int kmax = bwd::clamp_diag(shape.seqlen_k - key0 - warp * 16 - g);  // local rows >= kmax: past seqlen_k
    const int consumer_bar = F::bar_consumer + cw;
    if (tid < BQ) stash(smem, 0, bwd::row_stats(p, b, walk.h, walk.m0 + tid), cw, tid);
    named_barrier_sync(consumer_bar, 128);
    mbar_wait(bar.kv_full(), 0);

    Sm90PipelineState<F::stages> ring;
    for (std::int64_t it = 0; it < walk.steps; ++it, ring.advance()) {
      const int s = ring.index, buf = static_cast<int>(it & 1);
      const std::int64_t m0 = walk.m0;
      // The next step's row statistics: loaded now, stored before this step's barrier.
      bwd::RowStats next{0.0f, 0.0f};
      const bool more = it + 1 < walk.steps;
      if (more && tid < BQ) next = bwd::row_stats(p, b, walk.next_h(), walk.next_m0(BQ) + tid);

      float acc_s[BQ / 2], acc_dp[BQ / 2];
      issue_scores(acc_s, acc_dp, smem, bar, ring, cw);
      wgmma_wait<1>();  // S^T
      fence_registers(acc_s);

      // P^T: element (key 16 warp + g + 8 hh, query 8 i + 2 t + e). Query rows past seqlen_q have lse
      // +inf (row_stats) and come out 0; the element masks apply where the tile is not fully visible.
      const float* lse = smem.lse(cw, buf);
      const float* dsum = smem.dsum(cw, buf);
      const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, key0, key0 + 64, shape, p.score);
      const int diag = bwd::clamp_diag(key0 + warp * 16 + g - m0 - shift);  // key - query - shift at (g, 0)
#pragma unroll
      for (int i = 0; i < BQ / 8; ++i) {
        const float2 l = *reinterpret_cast<const float2*>(lse + 8 * i + 2 * t);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = acc_s[4 * i + 2 * hh + e];
            float pv = ptx::exp2_approx(fmaf(x, p.scale_log2, -(e ? l.y : l.x)));
            if (!full) {
              const int diff = diag + 8 * hh - (8 * i + 2 * t + e);
              if (diff < p.win_lo || diff > p.win_hi || 8 * hh >= kmax) pv = 0.0f;
            }
            x = pv;
          }
      }
      std::uint32_t frag_p[BQ / 16][4], frag_ds[BQ / 16][4];
      pack(frag_p, acc_s);
      wgmma_fence();
      issue_rs(dv, frag_p, smem.dout(s));  // dV += P^T dO
      wgmma_wait<1>();  // dP^T (dV may run on)
      fence_registers(acc_dp);
#pragma unroll
      for (int i = 0; i < BQ / 8; ++i) {
        const float2 dd = *reinterpret_cast<const float2*>(dsum + 8 * i + 2 * t);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          acc_dp[4 * i + 2 * hh] = acc_s[4 * i + 2 * hh] * (acc_dp[4 * i + 2 * hh] - dd.x);
          acc_dp[4 * i + 2 * hh + 1] = acc_s[4 * i + 2 * hh + 1] * (acc_dp[4 * i + 2 * hh + 1] - dd.y);
        }
      }
      pack(frag_ds, acc_dp);
      wgmma_fence();
      issue_rs(dk, frag_ds, smem.q(s));  // dK += dS^T Q
      store_ds(smem.ds(buf) + cw * 64 * 128, frag_ds, warp, lane);
      if (more && tid < BQ) stash(smem, buf ^ 1, next, cw, tid);
      fence_async_shared();  // dS^T's generic-proxy stores before the dQ product reads it
      if constexpr (F::dq_split_cols) named_barrier_sync(F::bar_all, 128 * F::consumers);
      else named_barrier_sync(consumer_bar, 128);

      float acc_q[F::dq_cols / 2];
      issue_dq(acc_q, smem, buf, cw);
      wgmma_wait<0>();  // dV, dK and dQ
      fence_registers(acc_q);
      if (lane == 0) mbar_arrive(bar.q_free(s));  // the slot's Q and dO are no longer read
      // The staging boxes are free once the writer's reductions of the previous step have read them.
      if (it > 0) named_barrier_sync(F::bar_dq_empty + cw, F::dq_sync_threads);
      stage_dq(smem.dq(cw), acc_q, warp, g, t);
      fence_async_shared();
      named_barrier_arrive(F::bar_dq_full + cw, F::dq_sync_threads);
      walk.advance(BQ);
    }
    fence_registers(dk);  // the epilogue reads them after the last product completed
    fence_registers(dv);
  }

  /// dK (times the softmax scale) and dV of this consumer's keys to global memory.
  __device__ __forceinline__ void store(const bwd::KernelParams& p, int b, int hk, int n0, int cw) const {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const std::int64_t key = n0 + cw * 64 + warp * 16 + g + 8 * hh;
      if (key >= p.shape.seqlen_k) continue;
      T* gk = static_cast<T*>(p.dk.data) + b * p.dk.stride_b + key * p.dk.stride_s + hk * p.dk.stride_h + 2 * t;
      T* gv = static_cast<T*>(p.dv.data) + b * p.dv.stride_b + key * p.dv.stride_s + hk * p.dv.stride_h + 2 * t;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *reinterpret_cast<std::uint32_t*>(gk + 8 * i) =
            ptx::pack2<T>(dk[4 * i + 2 * hh] * p.scale, dk[4 * i + 2 * hh + 1] * p.scale);
        *reinterpret_cast<std::uint32_t*>(gv + 8 * i) = ptx::pack2<T>(dv[4 * i + 2 * hh], dv[4 * i + 2 * hh + 1]);
      }
    }
  }

 private:
  /// S^T = K Q^T and dP^T = V dO^T of the step in ring slot `st`, once its Q and dO have landed.
  __device__ __forceinline__ static void issue_scores(float (&acc_s)[BQ / 2], float (&acc_dp)[BQ / 2],
                                                      const Sm90BwdSmem<D>& smem, const Sm90BwdBarriers<D>& bar,
                                                      const Sm90PipelineState<F::stages>& st, int cw) {
    mbar_wait(bar.q_full(st.index), st.phase);
    wgmma_fence();
    issue_kq(acc_s, smem.k(), smem.q(st.index), cw);
    issue_kq(acc_dp, smem.v(), smem.dout(st.index), cw);
  }

  /// acc (64 keys x BQ queries) = A[keys of consumer cw] B^T for the K-major tiles a (BK rows) and b
  /// (BQ rows); issued and committed, not waited for.
  __device__ __forceinline__ static void issue_kq(float (&acc)[BQ / 2], std::uint32_t a, std::uint32_t b, int cw) {
    std::uint64_t ad = smem_desc(a + cw * 64 * 128, 0);
    asm volatile("" : "+l"(ad));  // rebuilt per step rather than kept live (see the forward's issue_scores)
    const std::uint64_t bd = smem_desc(b, 0);
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const std::uint32_t kofs = (ks % 4) * 32;
      MmaS::template ss<0>(acc, ad + (((ks / 4) * BK * 128 + kofs) >> 4), bd + (((ks / 4) * BQ * 128 + kofs) >> 4),
                           ks > 0);
    }
    wgmma_commit();
  }

  /// acc (64 keys x D) += frag (64 keys x BQ queries, registers) B for the BQ x D tile b (N-major).
  __device__ __forceinline__ static void issue_rs(float (&acc)[D / 2], const std::uint32_t (&frag)[BQ / 16][4],
                                                  std::uint32_t b) {
    fence_registers(acc);
    const std::uint64_t bd = smem_desc(b, BQ * 128);
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) MmaD::template rs<1>(acc, frag[kk], bd + ((kk * 2048) >> 4), 1);
    wgmma_commit();
    fence_registers(acc);
  }

  /// acc (BQ queries x dq_cols) = dS K: dS^T read M-major from the step's buffer, K N-major; either
  /// consumer cw's columns over all keys or all columns over cw's keys.
  __device__ __forceinline__ static void issue_dq(float (&acc)[F::dq_cols / 2], const Sm90BwdSmem<D>& smem, int buf,
                                                  int cw) {
    const std::uint32_t a = smem.ds(buf) + (F::dq_split_cols ? 0 : cw * 64 * 128);
    const std::uint32_t b = smem.k() + (F::dq_split_cols ? cw * BK * 128 : cw * 64 * 128);
    const std::uint64_t ad = smem_desc(a, BK * 128), bd = smem_desc(b, BK * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < F::dq_keys / 16; ++kk)
      MmaQ::template ss<1, 1>(acc, ad + ((kk * 2048) >> 4), bd + ((kk * 2048) >> 4), kk > 0);
    wgmma_commit();
  }

  /// The accumulator fragment as the A operand of the next product (two n8 groups per k16 step).
  __device__ __forceinline__ static void pack(std::uint32_t (&frag)[BQ / 16][4], const float (&acc)[BQ / 2]) {
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) frag[kk][r] = ptx::pack2<T>(acc[8 * kk + 2 * r], acc[8 * kk + 2 * r + 1]);
  }

  /// dS^T (as packed fragments) into the swizzled [BK keys][BQ queries] tile at this consumer's rows,
  /// one stmatrix (four 8 x 8 matrices) per k16 step: fragment r of step kk is key rows 8 (r & 1) + 0..7
  /// of the warp, queries 16 kk + 8 (r >> 1) + 0..7; lane l gives the address of row l % 8 of matrix l / 8.
  __device__ __forceinline__ static void store_ds(std::uint32_t tile, const std::uint32_t (&frag)[BQ / 16][4],
                                                  int warp, int lane) {
    const int m = lane / 8, row = warp * 16 + lane % 8 + 8 * (m & 1);
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk) {
      const int chunk = 2 * kk + (m >> 1);
      stmatrix_x4(tile + row * 128 + ((chunk ^ (row & 7)) << 4), frag[kk]);
    }
  }

  __device__ __forceinline__ static void stash(const Sm90BwdSmem<D>& smem, int buf, bwd::RowStats st, int cw, int row) {
    smem.lse(cw, buf)[row] = st.lse_log2;
    smem.dsum(cw, buf)[row] = st.dsum;
  }

  /// This consumer's dQ fragment (BQ rows x dq_cols) into its staging boxes: column c of the fragment
  /// is column c % 32 of box c / 32, whose 16-byte chunks are swizzled by the row (as TMA reads them).
  __device__ __forceinline__ static void stage_dq(std::uint32_t boxes, const float (&acc)[F::dq_cols / 2], int warp,
                                                  int g, int t) {
#pragma unroll
    for (int i = 0; i < F::dq_cols / 8; ++i)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = warp * 16 + g + 8 * hh, chunk = 2 * (i % 4) + t / 2;
        const std::uint32_t addr =
            boxes + (i / 4) * F::dq_box_bytes + row * 128 + ((chunk ^ (row & 7)) << 4) + 8 * (t & 1);
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(acc[4 * i + 2 * hh]),
                     "f"(acc[4 * i + 2 * hh + 1])
                     : "memory");
      }
  }
};

/// Warp 1 of the producer warpgroup: per step and consumer, waits until the consumer has staged its
/// dQ, adds the staging boxes to the fp32 accumulator (TMA reductions through its tensor map; rows
/// past seqlen_q are clipped) and, once they have been read, hands the boxes back. The consumers only
/// arrive at the "full" barrier, so they go on to the next step at once.
template <int D>
struct Sm90BwdDqWriter {
  using F = Sm90BwdShape<D>;
  __device__ __forceinline__ static void run(const CUtensorMap* dq_map, const bwd::KernelParams& p, int b, int hk,
                                             int n0, const Sm90BwdSmem<D>& smem, int lane) {
    const QueryWalk walk(p.shape, p.score, hk, n0, F::block_k, F::block_q);
    if (lane == 0 && walk.steps > 0) prefetch_tensor_map(dq_map);
    const int slice0 = static_cast<int>(b * p.shape.heads);
    walk.for_each_step(p.shape.heads / p.shape.heads_kv, F::block_q, [&](int h, int m0, bool last) {
#pragma unroll
      for (int cw = 0; cw < F::consumers; ++cw) {
        named_barrier_sync(F::bar_dq_full + cw, F::dq_sync_threads);
        if (lane == 0) {
          const int col0 = F::dq_split_cols ? cw * F::dq_cols : 0;
#pragma unroll
          for (int x = 0; x < F::dq_boxes; ++x)
            tma_reduce_add_3d(dq_map, smem.dq(cw) + x * F::dq_box_bytes, col0 + 32 * x, m0, slice0 + h);
          tma_store_commit();
        }
      }
      if (lane == 0) tma_store_wait_read();
      __syncwarp();
      if (!last)  // the consumers wait for the boxes only before a next step
#pragma unroll
        for (int cw = 0; cw < F::consumers; ++cw) named_barrier_arrive(F::bar_dq_empty + cw, F::dq_sync_threads);
    });
  }
};

}  // namespace kfa::cuda::hopper
