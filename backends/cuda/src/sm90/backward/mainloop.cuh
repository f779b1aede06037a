#pragma once
// Why this file: the consumer warpgroups of the Hopper backward, the part that computes. Consumer w
// owns keys [64 w, +64) of the block's BK and keeps their dK and dV in registers across every step.
// Per step (one query tile of BQ rows of one query head, Q, dO, the row statistics and the step word
// in ring slot s):
//   1. S^T = K Q^T and dP^T = V dO^T on wgmma from shared memory (keys x queries); meanwhile the
//      Featured kernel makes the step's block bits and dropout keep flags (features.cuh);
//   2. P^T = exp2(x * scale_log2 - lse) of the score x (Featured: softcap and ALiBi applied), masked
//      (causal / window / key bound / block bits) where the tile needs it;
//   3. dV += P^T Z dO (wgmma, from registers; Z the dropout's scaled keep flags), issued while
//      dS^T = P^T dx/d dot (Z dP^T - D) is computed;
//   4. dK += dS^T Q (wgmma, dS^T from registers), while dS^T is also stored to shared memory;
//   5. dQ = dS K (wgmma, dS read transposed from shared memory; split between the consumers as
//      Sm90BwdShape::dq_split_cols says), staged in shared memory for the dQ writer (Sm90BwdDqWriter),
//      which adds it to the fp32 accumulator by TMA reductions.
// The epilogue stores dK (times the softmax scale) and dV; keys past seqlen_k are not written. The
// Featured instance (packed sequences, block masks, softcap, ALiBi, dropout) is this code with the
// feature branches compiled in; the dense instance compiles none of them.
#include <cstdint>
#include <type_traits>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "arch/warp_ops.cuh"
#include "arch/wgmma_ops.cuh"
#include "kfa/detail/tile_rules.hpp"
#include "sm80/backward/features.cuh"  // FeatureMod
#include "sm80/backward/params.cuh"
#include "sm90/backward/features.cuh"
#include "sm90/backward/shape.cuh"
#include "sm90/backward/walk.cuh"
#include "sm90/forward_shape.cuh"  // Sm90PipelineState

namespace kfa::cuda::hopper {

template <int D, class T, bool Featured>
struct Sm90BwdMainloop {
  using F = Sm90BwdShape<D, Featured>;
  static constexpr int BK = F::block_k, BQ = F::block_q, KS = D / 16;
  using MmaS = Wgmma<BQ, T>;           // S^T, dP^T: 64 keys x BQ queries
  using MmaD = Wgmma<D, T>;            // dV, dK: 64 keys x D
  using MmaQ = Wgmma<F::dq_cols, T>;   // dQ: dq_rows (64) queries x dq_cols
  // The block bits and dropout flags of a step are one 32-bit word per thread: 64-row steps only.
  static_assert(!Featured || BQ == 64, "Featured steps are 64 rows");

  float dk[D / 2], dv[D / 2];

  __device__ __forceinline__ void run(const bwd::KernelParams& p, int b, int n0, int cw, const Sm90BwdSmem<D, Featured>& smem,
                                      const Sm90BwdBarriers<D, Featured>& bar, const Sm90BwdBlock& blk) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.0f;
    if (!blk.any()) return;
    const int key0 = n0 + cw * 64;       // this consumer's first key
    const int key_w = key0 + warp * 16;  // this warp's
    const int consumer_bar = F::bar_consumer + cw;
    mbar_wait(bar.kv_full(), 0);

    Sm90PipelineState<F::stages> ring;
#pragma unroll 1
    for (int it = 0;; ++it, ring.advance()) {
      const int s = ring.index, buf = it & 1;
      float acc_s[BQ / 2], acc_dp[BQ / 2];
      mbar_wait(bar.q_full(ring.index), ring.phase);
      const Sm90BwdStep step = Sm90BwdStep::get(smem.slot_step(s));
      // The dQ writer's copy of the word, written now (two buffers: the writer has read the one of
      // two steps back), so that only step.last stays live to the end of the step.
      if (tid == 0) step.put(smem.dq_step(cw, buf));
      // The sequence's lengths (a padded batch: the call's), read where used: not held in registers.
      const kfa::detail::Shape shape = blk.shape(p.shape);
      const int shift = shape.seqlen_k - shape.seqlen_q;
      const bool full = !step.partial && kfa::detail::tile_fully_visible(step.m0, step.m0 + BQ, key0, key0 + 64,
                                                                         shape, p.score);
      StepMask mk;
      mk.check = !full;
      mk.diag = bwd::clamp_diag(std::int64_t(key_w) + g - step.m0 - shift);  // key - query - shift at (g, 0)
      // Keys g + 8 hh at or past seqlen_k: their elements' bits cleared (with the block bits, if any).
      const int kmax = shape.seqlen_k - key_w - g;
      const std::uint32_t key_bits = (kmax > 0 ? 0x33333333u : 0u) | (kmax > 8 ? 0xCCCCCCCCu : 0u);
      wgmma_fence();
      issue_kq(acc_s, smem.k(), smem.q(s), cw);
      issue_kq(acc_dp, smem.v(), smem.dout(s), cw);
      auto fw_addr = [&] { return smem.feature_words(cw, static_cast<int>(threadIdx.x % 128)); };
      if constexpr (Featured) {
        // The features' per-element words (features.cuh), made while the S^T product runs and kept in
        // shared memory until they are applied.
        const int batch = b + static_cast<int>(p.score.batch_base);
        std::uint32_t allow = ~0u, keep = ~0u;
        if (step.partial) allow = sm90_bwd_block_bits(p.score.blocks, batch, step.h, step.m0, key_w, g, t);
        if (p.dropout.on) keep = sm90_bwd_dropout_keep(p.dropout, batch, step.h, step.m0, key_w, lane);
        asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(fw_addr()), "r"(allow), "r"(keep) : "memory");
      }
      wgmma_wait<1>();  // S^T
      fence_registers(acc_s);

      // P^T from S^T in place (times dx/d dot under softcap: what dS^T needs), and P^T Z packed as
      // dV's A operand. Query rows past seqlen_q have lse +inf (row_stats) and come out 0. A step of
      // 128 rows goes in two halves of 64 queries (P^T, dV, dS^T, dK of one half, then the other's),
      // so that only one half's fp32 values and packed fragments are live at a time.
      const float* lse = smem.lse(s);
      const float* dsum = smem.dsum(s);
      std::uint32_t frag_p[BQ / 16][4], frag_ds[BQ / 16][4];
      std::uint32_t keep = ~0u;  // dropout keep flags (Featured)
      if constexpr (Featured) {
        asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(mk.allow), "=r"(keep) : "r"(fw_addr()) : "memory");
        mk.allow &= key_bits;
      } else {
        mk.allow = key_bits;
      }
      const bool drop = Featured && p.dropout.on;
#pragma unroll
      for (int hf = 0; hf < BQ / 64; ++hf) {
        if constexpr (Featured) {
          const bwd::FeatureMod fm = bwd::feature_mod(p.score, step.h);
          // |query + shift - key| at element (i, hh, e) is |alibi0 + 8 i + e - 8 hh|
          const float alibi0 = static_cast<float>(step.m0 + 2 * t + shift - key_w - g);
          // Three variants: softcap (tanh on the special-function unit, ALiBi and dropout as no-ops
          // when off), ALiBi and/or dropout, and none (block masks and packed sequences only: the dense
          // softmax). One variant per combination spilled registers.
          const float ks = p.dropout.on ? p.dropout.keep_scale : 1.0f;
          if (fm.softcap)
            probabilities<true, true>(acc_s, frag_p, hf, lse, p.scale_log2, mk, p.win_lo, p.win_hi, fm, alibi0, keep,
                                      ks, t);
          else if (fm.alibi || p.dropout.on)
            probabilities<false, true>(acc_s, frag_p, hf, lse, p.scale_log2, mk, p.win_lo, p.win_hi, fm, alibi0, keep,
                                       ks, t);
          else
            probabilities<false, false>(acc_s, frag_p, hf, lse, p.scale_log2, mk, p.win_lo, p.win_hi, fm, 0.0f, keep,
                                        1.0f, t);
        } else {
          probabilities<false, false>(acc_s, frag_p, hf, lse, p.scale_log2, mk, p.win_lo, p.win_hi, bwd::FeatureMod{},
                                      0.0f, keep, 1.0f, t);
        }
        wgmma_fence();
        issue_rs(dv, frag_p, hf, smem.dout(s));  // dV += P^T Z dO over the half's queries
        if (hf == 0) {
          wgmma_wait<1>();  // dP^T (the half's dV may run on)
          fence_registers(acc_dp);
          if (drop) asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(keep) : "r"(fw_addr() + 4) : "memory");
        }
        // dS^T = P^T dx/d dot (Z dP^T - D), Z the dropout's keep scale (1 without dropout).
#pragma unroll
        for (int ii = 0; ii < 8; ++ii) {
          const int i = 8 * hf + ii;
          const float2 dd = *reinterpret_cast<const float2*>(dsum + 8 * i + 2 * t);
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            float ds[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int x = 4 * i + 2 * hh + e;
              float dp = acc_dp[x];
              if (drop) dp = (keep >> (x % 32)) & 1u ? dp * p.dropout.keep_scale : 0.0f;
              ds[e] = acc_s[x] * (dp - (e ? dd.y : dd.x));
            }
            frag_ds[i / 2][2 * (i % 2) + hh] = ptx::pack2<T>(ds[0], ds[1]);
          }
        }
        wgmma_fence();
        issue_rs(dk, frag_ds, hf, smem.q(s));  // dK += dS^T Q over the half's queries
        store_ds(smem.ds(buf) + cw * 64 * 128, frag_ds, hf, warp, lane);
      }
      fence_async_shared();  // dS^T's generic-proxy stores before the dQ product reads it
      if constexpr (F::dq_reads_all_keys) named_barrier_sync(F::bar_all, 128 * F::consumers);
      else named_barrier_sync(consumer_bar, 128);

      float acc_q[F::dq_cols / 2];
      issue_dq(acc_q, smem, buf, cw);
      wgmma_wait<0>();  // dV, dK and dQ
      fence_registers(acc_q);
      if (lane == 0) mbar_arrive(bar.q_free(s));  // the slot's Q, dO, statistics and word are no longer read
      // The staging boxes are free once the writer's reductions of the previous step have read them.
      if (it > 0) named_barrier_sync(F::bar_dq_empty + cw, F::dq_sync_threads);
      stage_dq(smem.dq(cw), acc_q, warp, g, t);
      fence_async_shared();
      named_barrier_arrive(F::bar_dq_full + cw, F::dq_sync_threads);
      if (step.last) break;
    }
    fence_registers(dk);  // the epilogue reads them after the last product completed
    fence_registers(dv);
  }

  /// dK (times the softmax scale) and dV of this consumer's keys to global memory.
  __device__ __forceinline__ void store(const bwd::KernelParams& p, int b, int hk, int n0, int cw,
                                        const Sm90BwdBlock& blk) const {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int k = n0 + cw * 64 + warp * 16 + g + 8 * hh;
      if (k >= blk.seqlen_k) continue;
      const std::int64_t key = std::int64_t(blk.k_begin) + k;  // row in k / v (packed: past the sequence's start)
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
  /// The element mask of a step on this lane's fragment: window / causal bounds and the sequence's
  /// end (when the tile is not fully visible) and the block bits of a partial tile (features.cuh).
  struct StepMask {
    bool check;           // apply the tests at all
    int diag;             // key - query - shift at element (g, query 0)
    std::uint32_t allow;  // bit (4 i + 2 hh + e) % 32: the key is before seqlen_k (and the block bits allow it)
  };

  /// P^T = exp2(x * scale_log2 - lse) of the score x, masked elements 0, for the queries of half hf
  /// (64 of them: elements [32 hf, +32)); x modified as
  /// kfa::detail::modify_score says (softcap when kCap, then, when kMods, ALiBi: slope 0 when off;
  /// dx/d dot = 1 - tanh^2). acc becomes P^T dx/d dot, frag the packed P^T Z (kMods: Z the dropout
  /// keep flag times ks, flags all set and ks 1 without dropout; else Z = 1), pairs (e = 0, 1) as the
  /// A operand's layout.
  template <bool kCap, bool kMods>
  __device__ __forceinline__ static void probabilities(float (&acc)[BQ / 2], std::uint32_t (&frag)[BQ / 16][4], int hf,
                                                       const float* lse, float scale_log2, const StepMask& mk,
                                                       int win_lo, int win_hi, const bwd::FeatureMod& fm,
                                                       float alibi0, std::uint32_t keep, float ks, int t) {
    // Softcap: tanh first, in place, so that each element's tanh waits in its own register for dx/d dot
    // (in one fused loop the scheduler kept many of them live at once, past the register budget).
    if constexpr (kCap)
#pragma unroll
      for (int el = 32 * hf; el < 32 * hf + 32; ++el) acc[el] = policy::fast_tanh(acc[el] * fm.softcap_in);
#pragma unroll
    for (int ii = 0; ii < 8; ++ii) {
      const int i = 8 * hf + ii;
      const float2 l = *reinterpret_cast<const float2*>(lse + 8 * i + 2 * t);
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float z[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int el = 4 * i + 2 * hh + e;
          const float tc = acc[el];  // softcap: the tanh
          float x = kCap ? fm.softcap_out * tc : acc[el];
          if constexpr (kMods) x = fmaf(fm.alibi_k, fabsf(alibi0 + static_cast<float>(8 * i + e - 8 * hh)), x);
          float pv = ptx::exp2_approx(fmaf(x, scale_log2, -(e ? l.y : l.x)));
          if (mk.check) {
            const int diff = mk.diag + 8 * hh - (8 * i + 2 * t + e);
            if (diff < win_lo || diff > win_hi || !((mk.allow >> (el % 32)) & 1u)) pv = 0.0f;
          }
          z[e] = kMods ? ((keep >> (el % 32)) & 1u ? pv * ks : 0.0f) : pv;
          acc[el] = kCap ? pv * (1.0f - tc * tc) : pv;
        }
        frag[i / 2][2 * (i % 2) + hh] = ptx::pack2<T>(z[0], z[1]);
      }
    }
  }

  /// acc (64 keys x BQ queries) = A[keys of consumer cw] B^T for the K-major tiles a (BK rows) and b
  /// (BQ rows): S^T = K Q^T, dP^T = V dO^T; issued and committed, not waited for.
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

  /// acc (64 keys x D) += frag (64 keys x the 64 queries of half hf, registers) B for those rows of the
  /// BQ x D tile b (N-major).
  __device__ __forceinline__ static void issue_rs(float (&acc)[D / 2], const std::uint32_t (&frag)[BQ / 16][4], int hf,
                                                  std::uint32_t b) {
    fence_registers(acc);
    const std::uint64_t bd = smem_desc(b, BQ * 128);
#pragma unroll
    for (int kk = 4 * hf; kk < 4 * hf + 4; ++kk) MmaD::template rs<1>(acc, frag[kk], bd + ((kk * 2048) >> 4), 1);
    wgmma_commit();
    fence_registers(acc);
  }

  /// acc (dq_rows queries x dq_cols) = dS K: dS^T read M-major from the step's buffer, K N-major;
  /// consumer cw's rows (its column block of dS^T) or columns over all keys, or all columns over cw's keys.
  __device__ __forceinline__ static void issue_dq(float (&acc)[F::dq_cols / 2], const Sm90BwdSmem<D, Featured>& smem, int buf,
                                                  int cw) {
    const std::uint32_t a = smem.ds(buf) + (F::dq_split_rows ? cw * BK * 128 : F::dq_split_cols ? 0 : cw * 64 * 128);
    const std::uint32_t b = smem.k() + (F::dq_split_rows ? 0 : F::dq_split_cols ? cw * BK * 128 : cw * 64 * 128);
    const std::uint64_t ad = smem_desc(a, BK * 128), bd = smem_desc(b, BK * 128);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < F::dq_keys / 16; ++kk)
      MmaQ::template ss<1, 1>(acc, ad + ((kk * 2048) >> 4), bd + ((kk * 2048) >> 4), kk > 0);
    wgmma_commit();
  }

  /// dS^T of half hf (as packed fragments) into the swizzled [BK keys][BQ queries] tile (column blocks
  /// of 64 queries, BK rows each) at this consumer's rows, one stmatrix (four 8 x 8 matrices) per k16 step:
  /// fragment r of step kk is key rows 8 (r & 1) + 0..7 of the warp, queries 16 kk + 8 (r >> 1) + 0..7;
  /// lane l gives the address of row l % 8 of matrix l / 8.
  __device__ __forceinline__ static void store_ds(std::uint32_t tile, const std::uint32_t (&frag)[BQ / 16][4], int hf,
                                                  int warp, int lane) {
    const int m = lane / 8, row = warp * 16 + lane % 8 + 8 * (m & 1);
#pragma unroll
    for (int kk = 4 * hf; kk < 4 * hf + 4; ++kk) {
      const int chunk = 2 * (kk % 4) + (m >> 1);
      stmatrix_x4(tile + (kk / 4) * BK * 128 + row * 128 + ((chunk ^ (row & 7)) << 4), frag[kk]);
    }
  }


  /// This consumer's dQ fragment (dq_rows x dq_cols) into its staging boxes: column c of the fragment
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
/// dQ with the step's word, adds the staging boxes to the fp32 accumulator (TMA reductions through
/// its tensor map; rows past its extent are clipped, rows of a packed sequence's successor get zeros)
/// and, once they have been read, hands the boxes back. The consumers only arrive at the "full"
/// barrier, so they go on to the next step at once.
template <int D, bool Featured>
struct Sm90BwdDqWriter {
  using F = Sm90BwdShape<D, Featured>;
  __device__ __forceinline__ static void run(const CUtensorMap* dq_map, const bwd::KernelParams& p, int b, int n0,
                                             const Sm90BwdSmem<D, Featured>& smem, const Sm90BwdBlock& blk, int lane) {
    if (!blk.any()) return;
    if (lane == 0) prefetch_tensor_map(dq_map);
    // The accumulator's slices: (batch, head) pairs of a padded batch, heads of packed sequences.
    const int slice0 = Featured && p.varlen.enabled() ? 0 : static_cast<int>(b * p.shape.heads);
    // Deterministic mode: the blocks add the dQ rows of a step one after the other, in the order of their
    // keys (dq_add_rank), each waiting for the count of additions in to reach its place and raising it
    // once its own reductions are complete; the two consumers' additions of one step follow each other.
    const bool ordered = p.dq_order != nullptr;
#pragma unroll 1
    for (int buf = 0;; buf ^= 1) {
      bool last = false;
      int* count = nullptr;
#pragma unroll
      for (int cw = 0; cw < F::consumers; ++cw) {
        named_barrier_sync(F::bar_dq_full + cw, F::dq_sync_threads);
        const Sm90BwdStep step = Sm90BwdStep::get(smem.dq_step(cw, buf));
        last = step.last;
        if (lane == 0) {
          if (ordered && cw == 0) {
            count = p.dq_order + (std::int64_t(b) * p.shape.heads + step.h) * p.dq_order_blocks + step.m0 / 64;
            const int place = dq_add_rank<F::block_k>(blk.shape(p.shape), p.score, step.m0, n0);
            while (ld_acquire_gpu(count) != place) {
            }
            fence_async_global();  // the earlier blocks' additions, seen through the count, before ours
          }
          if (ordered && cw > 0 && !F::dq_reads_all_keys) tma_store_wait_all();  // same rows: one after the other
          const int col0 = F::dq_split_cols ? cw * F::dq_cols : 0;
#pragma unroll
          for (int x = 0; x < F::dq_boxes; ++x)
            tma_reduce_add_3d(dq_map, smem.dq(cw) + x * F::dq_box_bytes, col0 + 32 * x,
                              blk.q_begin + step.m0 + (F::dq_split_rows ? cw * F::dq_rows : 0), slice0 + step.h);
          tma_store_commit();
        }
        __syncwarp();  // lane 0 may have waited: the warp meets again before the next barrier
      }
      if (lane == 0) {
        if (ordered) {
          tma_store_wait_all();
          fence_async_global();
          red_release_gpu_add(count, 1);
        } else {
          tma_store_wait_read();
        }
      }
      __syncwarp();
      if (last) break;  // the consumers wait for the boxes only before a next step
#pragma unroll
      for (int cw = 0; cw < F::consumers; ++cw) named_barrier_arrive(F::bar_dq_empty + cw, F::dq_sync_threads);
    }
  }
};

}  // namespace kfa::cuda::hopper
