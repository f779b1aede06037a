#pragma once
// Why this file: the consumer warpgroups' main loop of the Hopper forward, the part that computes.
// For one query tile of 64 rows per consumer it walks the visited key tiles of the ring: S = Q K^T on
// wgmma from shared memory, the score modifiers and masks (Featured: through the feature policy), the
// online softmax in registers, dropout on the packed P, and O += P V on wgmma with P from registers.
// The S product of tile j is issued before the P V product of tile j - 1 (FA3's intra-warpgroup
// pipelining), and the consumers take turns issuing their GEMMs (Sm90PingPong). The accumulators it
// leaves (O, row max, row sum) are the epilogue's input.
#include <cmath>
#include <cstdint>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "arch/wgmma_ops.cuh"
#include "common/online_softmax.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "policy/fragment_policy.cuh"
#include "sm90/block_sparse.cuh"
#include "sm90/forward_shape.cuh"
#include "sm90/tile_scheduler.cuh"

namespace kfa::cuda::hopper {

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

/// The consumer warpgroup's view of one query tile: accumulators and softmax state. Featured adds the
/// score modifiers, the block walk, dropout and packed sequences (kfa::cuda::policy on each fragment row).
template <int D, class T, bool Featured>
struct Sm90Mainloop {
  using F = Sm90Shape<D, Featured>;
  static constexpr int BN = F::block_n, S = F::stages;
  using Mma_s = Wgmma<BN, T>;
  using Mma_o = Wgmma<D, T>;
  using Tile = Sm90Tile<D, Featured>;
  using Ring = Sm90PipelineState<S>;
  using Smem = Sm90Smem<D, Featured>;
  using Bars = Sm90Barriers<D, Featured>;

  float acc_s[BN / 2];
  float acc_o[D / 2];
  std::uint32_t p[BN / 16][4];  // P of the previous tile as the A operand of P V
  float row_max[2], row_sum[2];

  /// The main loop over the visited key tiles of `tile` (warpgroup `wg` of the consumers); `ring` is
  /// the slot of this block's next K/V tile, advanced past this tile's.
  __device__ __forceinline__ void run(const detail::ForwardArgs& a, const Smem& smem,
                                      const Bars& bar, int wg, const Tile& tile, Ring& ring,
                                      float scale_log2) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    // This thread's two rows (g and g + 8 of its warp's 16) in the sequence.
    const int my_row = tile.row0 + wg * 64 + warp * 16 + g;

#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc_o[i] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = -INFINITY;
      row_sum[h] = 0.0f;
    }

    bool any = tile.key_begin < tile.key_end;
    if constexpr (Featured) {
      std::uint32_t w;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w) : "r"(smem.tile_word(wg)) : "memory");
      any = w != 0;
    }
    if (!any) return;
    const int n_tiles = tile.key_end - tile.key_begin;  // the dense walk's count
    // j counts the visited tiles (the ring's slots); `cur` is the slot of the j-th (whose S is issued),
    // `prev` the slot of the (j - 1)-th (whose P V is issued).
    Ring cur = ring;
    float alpha[2];
    const Sm90PingPong<F::consumers> turn{wg};
    turn.wait();
    issue_scores(smem, bar, wg, cur);
    turn.pass();
    Sm90Visit v = visit(smem, tile, cur, 0);
    wgmma_wait<0>();
    softmax(a, tile, v, my_row, t, scale_log2, alpha);
    convert_p();
    drop(a, tile, v, my_row, t);
    for (int j = 1; Featured ? !v.last : j < n_tiles; ++j) {
      const Ring prev = cur;
      cur.advance();
      turn.wait();
      issue_scores(smem, bar, wg, cur);
      issue_pv(smem, bar, prev);
      turn.pass();
      v = visit(smem, tile, cur, j);
      wgmma_wait<1>();  // S of tile j is ready; P V of tile j - 1 may still run
      softmax(a, tile, v, my_row, t, scale_log2, alpha);
      wgmma_wait<0>();
      release(bar, prev, lane);
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        acc_o[4 * i + 0] *= alpha[0];
        acc_o[4 * i + 1] *= alpha[0];
        acc_o[4 * i + 2] *= alpha[1];
        acc_o[4 * i + 3] *= alpha[1];
      }
      convert_p();
      drop(a, tile, v, my_row, t);
    }
    turn.wait();
    issue_pv(smem, bar, cur);
    turn.pass();
    wgmma_wait<0>();
    release(bar, cur, lane);
    cur.advance();
    ring = cur;
  }

 private:
  /// S = Q K^T of the key tile in slot `st`, issued (not waited for).
  __device__ __forceinline__ void issue_scores(const Smem& smem, const Bars& bar, int wg,
                                               const Ring& st) {
    mbar_wait(bar.k_full(st.index), st.phase);
    fence_registers(acc_s);
    wgmma_fence();
    // Each k16 step's descriptor is the base's plus its byte offset / 16; the Q base is made opaque
    // here so that the compiler rebuilds the steps' descriptors (one add each) rather than keeping
    // all of them live across the loop, which costs two registers per step.
    std::uint64_t qd = smem_desc(smem.q() + wg * 64 * 128, 0);
    asm volatile("" : "+l"(qd));
    const std::uint64_t kd = smem_desc(smem.k(st.index), 0);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t kofs = (ks % 4) * 32;  // k16 steps inside a 128-byte row
      Mma_s::template ss<0>(acc_s, qd + (((ks / 4) * F::block_m * 128 + kofs) >> 4),
                            kd + (((ks / 4) * BN * 128 + kofs) >> 4), ks > 0);
    }
    wgmma_commit();
    fence_registers(acc_s);
  }

  /// O += P V of the key tile in slot `st`, issued.
  __device__ __forceinline__ void issue_pv(const Smem& smem, const Bars& bar, const Ring& st) {
    mbar_wait(bar.v_full(st.index), st.phase);
    fence_registers(acc_o);
    wgmma_fence();
    const std::uint64_t vd = smem_desc(smem.v(st.index), BN * 128);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) Mma_o::template rs<1>(acc_o, p[kk], vd + ((kk * 2048) >> 4), 1);
    wgmma_commit();
    fence_registers(acc_o);
  }

  /// The slot is free again for the producer (one arrival per warp). Featured: the warp's lanes
  /// synchronize first, so that lane 0's arrival (release) orders every lane's read of the slot's walk
  /// word (visit) before the producer rewrites it (compute-sanitizer racecheck reported the producer's
  /// write against visit's read without it). The dense kernel reads the slot through wgmma only.
  __device__ __forceinline__ static void release(const Bars& bar, const Ring& st, int lane) {
    if constexpr (Featured) __syncwarp();
    if (lane == 0) mbar_arrive(bar.kv_free(st.index));
  }

  /// The j-th visited key tile, in slot `st`: the trip's tiles in order, or (Featured) the producer's
  /// word of the slot, read once the slot's K has landed.
  __device__ __forceinline__ static Sm90Visit visit(const Smem& smem, const Tile& tile, const Ring& st, int j) {
    if constexpr (Featured) {
      std::uint32_t w;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w) : "r"(smem.slot_word(st.index)) : "memory");
      return Sm90Visit::decode(w);
    } else {
      const int kt = tile.key_begin + j;
      return Sm90Visit{kt, kt < tile.unmasked_begin || kt >= tile.unmasked_end, false, kt + 1 >= tile.key_end};
    }
  }

  /// Modifies, masks and exponentiates S of key tile v.tile in place; gives the rescale factors of the
  /// thread's two rows.
  __device__ __forceinline__ void softmax(const detail::ForwardArgs& a, const Tile& tile, const Sm90Visit& v,
                                          int my_row, int t, float scale_log2, float (&alpha)[2]) {
    const int col0 = v.tile * BN;  // within the sequence
    if constexpr (Featured) {
      const detail::ScoreMod mod = detail::make_score_mod(a.score, tile.head);
      if (v.mask || v.bits || mod.any()) {
        const detail::Shape s = tile.shape(a.shape);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          policy::RowPolicy rp;  // the block bits: sm90_block_bits_row
          rp.mod = mod;
          rp.row = my_row + 8 * h;
          auto ref = [&](int i, int e) -> float& { return acc_s[4 * i + 2 * h + e]; };
          policy::modify_and_mask_row<BN / 8>(ref, rp, col0, v.mask, false, s, a.score, t);
          if (v.bits)
            sm90_block_bits_row<BN / 8>(ref, a.score.blocks, tile.batch + int(a.score.batch_base), tile.head,
                                        my_row + 8 * h, col0, t);
        }
      }
    } else if (v.mask) {
      // 32-bit (positions < 2^30, checked by supports_forward): the diagonal key of row r within the
      // tile's columns, d = r + seqlen_k - seqlen_q - col0, lies in (-2^31, 2^30); window edges past
      // 2^30 - 2 keys reach every key, so they are clamped there (no sum below overflows).
      constexpr std::int64_t lim = (1 << 30) - 2;
      const int sk = static_cast<int>(a.shape.seqlen_k) - col0;  // keys of the tile's columns on
      const std::int64_t wl64 = a.score.window_left, wr64 = a.score.window_right;
      const int wl = static_cast<int>(wl64 < 0 || wl64 > lim ? lim : wl64);
      const int wr = static_cast<int>(wr64 < 0 || wr64 > lim ? lim : wr64);
      const int d0 = my_row + static_cast<int>(a.shape.seqlen_k - a.shape.seqlen_q) - col0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int d = d0 + 8 * h;
        const int first = max(d, -(1 << 30)) - wl - 2 * t;  // visible: first <= 8 i + e < end
        const int end = min(d + wr + 1, sk) - 2 * t;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int c = 8 * i + e;
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
  }

  /// Featured, after P is packed (the LSE is the undropped softmax's): zeroes the dropped P of key tile
  /// v.tile (dropout acts on P V only). Word t of a 16-column group's Philox block holds the bytes of
  /// this lane's columns 2t, 2t + 1 (the pair p[kk][h]) and 2t + 8, 2t + 9 (p[kk][2 + h]):
  /// policy::keep_pair_masks gives their 16-bit lane masks, one AND per pair applies them.
  __device__ __forceinline__ void drop(const detail::ForwardArgs& a, const Tile& tile, const Sm90Visit& v, int my_row,
                                       int t) {
    if constexpr (Featured) {
      const detail::DropoutPolicy dropout = detail::make_dropout(a.score);
      if (dropout.on) {
        const std::uint32_t thr4 = dropout.threshold * 0x01010101u;
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int j0 = 0; j0 < BN / 16; j0 += 4) {
            std::uint32_t words[4];
            policy::dropout_row_words<4>(dropout, tile.batch, tile.head, my_row + 8 * h, v.tile * BN + 16 * j0, t,
                                         words);
#pragma unroll
            for (int s = 0; s < 4; ++s)
              if (j0 + s < BN / 16) {
                std::uint32_t lo, hi;
                policy::keep_pair_masks(words[s], thr4, lo, hi);
                p[j0 + s][h] &= lo;
                p[j0 + s][2 + h] &= hi;
              }
          }
      }
    }
  }

  /// P (as T) in the A-fragment layout: the accumulators of two n8 column groups form one k16 step.
  __device__ __forceinline__ void convert_p() {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      p[kk][0] = ptx::pack2<T>(acc_s[8 * kk + 0], acc_s[8 * kk + 1]);
      p[kk][1] = ptx::pack2<T>(acc_s[8 * kk + 2], acc_s[8 * kk + 3]);
      p[kk][2] = ptx::pack2<T>(acc_s[8 * kk + 4], acc_s[8 * kk + 5]);
      p[kk][3] = ptx::pack2<T>(acc_s[8 * kk + 6], acc_s[8 * kk + 7]);
    }
  }
};

}  // namespace kfa::cuda::hopper
