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
//             stored by TMA, which clips rows past the end of the sequence (packed sequences: copied
//             out by the threads, rows inside the sequence only).
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
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/online_softmax.hpp"
#include "common/tile_scheduler.hpp"
#include "arch/device_attribute.hpp"
#include "arch/ptx.cuh"
#include "policy/fragment_policy.cuh"
#include "sm90/forward_sm90_config.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "kfa/error.hpp"
#include "arch/sm90_ptx.cuh"
#include "arch/tensor_map.hpp"
#include "arch/wgmma_ops.cuh"

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
  // Featured: one word per ring slot (which key tile it holds, see Sm90Visit) and per consumer (whether
  // its tile visits any key tile), written by the producer before the arrival that publishes the slot.
  static constexpr int meta_offset = bar_offset + n_bars * 8;
  static constexpr int smem_bytes = meta_offset + 4 * (C::stages + C::consumers) + 1024;  // + alignment slack
  // setmaxnreg budgets (multiples of 8, 64K registers per SM): the producer keeps 24.
  static constexpr int producer_regs = 24;
  static constexpr int consumer_regs = C::consumers == 3 ? 160 : 240;
  static_assert(producer_regs * 128 + consumer_regs * 128 * C::consumers <= 65536, "register file");
  // A block may loop over several tiles; head_dim 256's accumulators leave no registers for that
  // loop's state (it spills), so its blocks take one tile each.
  static constexpr bool persistent = D <= 128;
  // The Featured kernel's consumers hold more state; with the persistent loop's head_dim 96 spilled.
  static constexpr bool featured_persistent = D == 64 || D == 128;
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
/// Featured: the tile's sequence (packed varlen: its first rows in the packed q/o and k/v and its own
/// lengths; padded: 0 and the call's lengths), and rows/keys are positions within it.
template <int D, bool Featured>
struct Sm90Tile {
  int batch, head, head_kv, row0;              // row0: within the sequence
  int key_begin, key_end;                      // key tiles [key_begin, key_end) the rows can see
  int unmasked_begin, unmasked_end;            // key tiles that need no window / sequence-end mask
  int q_begin, k_begin, seqlen_q, seqlen_k;    // the sequence (Featured; else 0 and the call's)
  __device__ Sm90Tile(std::int64_t id, std::int64_t n_qtiles, const detail::ForwardArgs& a) {
    constexpr int BM = Sm90Shape<D>::block_m, BN = Sm90Shape<D>::block_n;
    const common::TileCoord c = common::schedule_tile(id, n_qtiles, a.shape, a.score);
    batch = static_cast<int>(c.batch), head = static_cast<int>(c.head), head_kv = static_cast<int>(c.head_kv);
    detail::Shape s = a.shape;
    if constexpr (Featured) {
      const detail::SequenceBounds sb = detail::sequence_bounds(a.shape, a.varlen, c.batch);
      s = detail::sequence_shape(a.shape, sb);
      q_begin = static_cast<int>(sb.q_begin), k_begin = static_cast<int>(sb.k_begin);
    } else {
      q_begin = 0, k_begin = 0;
    }
    seqlen_q = static_cast<int>(s.seqlen_q), seqlen_k = static_cast<int>(s.seqlen_k);
    const std::int64_t r0 = c.q_tile * BM;
    const std::int64_t row_end = s.seqlen_q - r0 < BM ? s.seqlen_q : r0 + BM;
    const detail::KeyTrip trip = detail::key_trip(r0, row_end, BN, s, a.score);  // empty when r0 >= row_end
    row0 = static_cast<int>(r0);
    key_begin = static_cast<int>(trip.begin);
    key_end = static_cast<int>(trip.end);
    unmasked_begin = static_cast<int>(trip.unmasked_begin);
    unmasked_end = static_cast<int>(trip.unmasked_end);
  }
  /// A tile past its packed sequence's end: no block work at all (producer and consumers skip it).
  __device__ bool past_end() const { return Featured && row0 >= seqlen_q; }
  __device__ int row_end() const { return seqlen_q - row0 < Sm90Shape<D>::block_m ? seqlen_q : row0 + Sm90Shape<D>::block_m; }
  __device__ detail::Shape shape(const detail::Shape& call) const {
    detail::Shape s = call;
    s.seqlen_q = seqlen_q;
    s.seqlen_k = seqlen_k;
    return s;
  }
};

/// A visited key tile of a walk and what it needs: the window / sequence-end mask, the block bits; and
/// whether it is the walk's last. The Featured producer walks, and passes each tile to the consumers
/// in the word of its ring slot (encode / decode), so that both count the same ring slots.
struct Sm90Visit {
  int tile;
  bool mask, bits, last;
  __device__ std::uint32_t encode() const {
    return std::uint32_t(tile) | (mask ? 1u << 28 : 0u) | (bits ? 1u << 29 : 0u) | (last ? 1u << 30 : 0u);
  }
  __device__ static Sm90Visit decode(std::uint32_t w) {
    return {int(w & ((1u << 28) - 1)), (w >> 28) & 1u ? true : false, (w >> 29) & 1u ? true : false,
            (w >> 30) & 1u ? true : false};
  }
};

/// The block-sparse walk of one query tile, in 32-bit registers (the producer keeps 24): the tile's
/// rows lie in at most two mask rows (block_q >= 64 = half the tile's 128 rows; native_block_sizes),
/// whose dense states it reads. Gives the same answer as kfa::detail::key_tile_work (block_tile_kind
/// over the whole block's rows [row0, row_end)); without a block mask every trip tile is visited.
template <int D, bool Featured>
struct Sm90Walk {
  static constexpr int BN = Sm90Shape<D>::block_n;
  static constexpr int nothing = 1 << 27;  // "no further tile" (>= every key_end)
  const std::int32_t* states = nullptr;   // the first mask row's states; nullptr: no block mask
  int last_row = 0;                       // offset of the last mask row's states from `states`
  int n_kblocks = 0, k_shift = 0, seqlen_k = 0, unmasked_begin = 0, unmasked_end = 0;
  int scan_end = 0;  // key_end; 0 when the tile's rows lie past the mask's rows (nothing visited)

  __device__ Sm90Walk(const Sm90Tile<D, Featured>& tl, const detail::ForwardArgs& a) {
    seqlen_k = tl.seqlen_k, scan_end = tl.key_end, unmasked_begin = tl.unmasked_begin, unmasked_end = tl.unmasked_end;
    const detail::BlockSparseSpec& m = a.score.blocks;
    if (!Featured || !m.enabled()) return;
    const int q_shift = 31 - __clz(m.block_q);
    const int qb0 = tl.row0 >> q_shift;
    const int qb1 = min((tl.row_end() - 1) >> q_shift, m.n_qblocks - 1);
    if (qb0 > qb1) scan_end = 0;
    states = m.block_state + detail::block_mask_row(m, tl.batch + a.score.batch_base, tl.head, qb0) * m.n_kblocks;
    last_row = qb0 > qb1 ? 0 : (qb1 - qb0) * m.n_kblocks;
    n_kblocks = m.n_kblocks;
    k_shift = 31 - __clz(m.block_k);
  }

  /// The first visited key tile at or after kt (>= key_end when none).
  __device__ Sm90Visit visit(int kt) const {
    if (states == nullptr) return {kt, kt < unmasked_begin || kt >= unmasked_end, false, false};
#pragma unroll 1
    for (; kt < scan_end; ++kt) {
      const int col0 = kt * BN, col_end = min(col0 + BN, seqlen_k);
      const int kb1 = min((col_end - 1) >> k_shift, n_kblocks - 1);
      bool any = false, all_full = true;
#pragma unroll 1
      for (int kb = col0 >> k_shift; kb <= kb1; ++kb) {
        const std::int32_t x = states[kb], y = states[last_row + kb];
        any = any || x != detail::block_skipped || y != detail::block_skipped;
        all_full = all_full && x == detail::block_full && y == detail::block_full;
      }
      if (any) return {kt, kt < unmasked_begin || kt >= unmasked_end, !all_full, false};
    }
    return {nothing, false, false, false};
  }
};

/// Batch coordinate of a tensor map: 0 for a tensor without batch stride (packed varlen, or a tensor
/// shared by the batches), whose map make_tensor_map builds with one batch.
__device__ __forceinline__ int map_batch(const detail::Tensor4& t, int batch) { return t.stride_b != 0 ? batch : 0; }

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

/// The block bits of a partial key tile on one fragment row: keys col0 + 8 i + 2 t + e (i < NB, e < 2) of
/// sequence row `row` keep their score where the block mask computes them (kfa::detail::block_allows),
/// else become -inf. The lane's 2 NB answers are gathered into one word by a rolled loop first (the
/// row's bits of a mask block are whole 32-bit words, its two columns of an n8 block adjacent bits),
/// so the fragment itself is touched once, without registers held per element (the policy's per-element
/// block_allows spilled here). Native block sizes only (powers of two).
template <int NB, class Ref>
__device__ __forceinline__ void sm90_block_bits_row(Ref&& ref, const detail::BlockSparseSpec& m, int batch, int head,
                                                    int row, int col0, int t) {
  const int q_shift = 31 - __clz(m.block_q), k_shift = 31 - __clz(m.block_k);
  const int qb = row >> q_shift, rib = row & (m.block_q - 1);
  std::uint32_t keep = 0;
  if (qb < m.n_qblocks) {  // rows past the mask (past the sequence's end: discarded) keep nothing
    const std::int32_t* st = m.block_state + detail::block_mask_row(m, batch, head, qb) * m.n_kblocks;
#pragma unroll 1
    for (int i = 0; i < NB; ++i) {
      const int col = col0 + 8 * i + 2 * t, kb = col >> k_shift;
      std::uint32_t two = 0;
      if (kb < m.n_kblocks) {
        const std::int32_t v = st[kb];
        if (v == detail::block_full) {
          two = 3u;
        } else if (v >= 0) {
          const int e = (rib << k_shift) + (col - (kb << k_shift));
          two = (m.partial_bits[std::int64_t(v) * m.words_per_block + (e >> 5)] >> (e & 31)) & 3u;
        }
      }
      keep |= two << (2 * i);
    }
  }
#pragma unroll
  for (int i = 0; i < NB; ++i)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (!((keep >> (2 * i + e)) & 1u)) ref(i, e) = -INFINITY;
}

/// The consumer warpgroup's view of one query tile: accumulators and softmax state. Featured adds the
/// score modifiers, the block walk, dropout and packed sequences (kfa::cuda::policy on each fragment row).
template <int D, class T, bool Featured>
struct Sm90Consumer {
  using F = Sm90Shape<D>;
  static constexpr int BN = F::block_n, S = F::stages;
  using Mma_s = Wgmma<BN, T>;
  using Mma_o = Wgmma<D, T>;
  using Tile = Sm90Tile<D, Featured>;

  float acc_s[BN / 2];
  float acc_o[D / 2];
  std::uint32_t p[BN / 16][4];  // P of the previous tile as the A operand of P V
  float row_max[2], row_sum[2];

  /// The main loop over the visited key tiles of `tile`; `kv` counts the K/V tiles this block consumed
  /// before (ring slot kv % S, phase (kv / S) & 1), and is advanced past this tile's.
  __device__ void run(const detail::ForwardArgs& a, std::uint32_t base, const Sm90Barriers<D>& bar, int wg,
                      const Tile& tile, int& kv, float scale_log2) {
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int row0 = tile.row0;
    const int kv0 = kv;
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

    // S = Q K^T of the j-th visited key tile, issued (not waited for).
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
    // O += P V of the j-th visited key tile, issued.
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
    // Modifies, masks and exponentiates S of key tile v.tile in place (Featured: then drops P);
    // returns the rescale factors of the two rows.
    auto softmax = [&](const Sm90Visit& v, float (&alpha)[2]) {
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
    // Featured, after P is packed (the LSE is the undropped softmax's): zeroes the dropped P of key tile
    // v.tile (dropout acts on P V only). Word t of a 16-column group's Philox block holds the bytes of
    // this lane's columns 2t, 2t + 1 (the pair p[kk][h]) and 2t + 8, 2t + 9 (p[kk][2 + h]): one SIMD byte
    // compare and two byte permutes give the 16-bit lane masks, one AND per pair applies them.
    auto drop = [&](const Sm90Visit& v) {
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
                  const std::uint32_t keep = __vcmpgeu4(words[s], thr4);  // 0xff per kept column's byte
                  p[j0 + s][h] &= __byte_perm(keep, 0, 0x1100);
                  p[j0 + s][2 + h] &= __byte_perm(keep, 0, 0x3322);
                }
            }
        }
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

    // j counts the visited tiles (the ring's slots); v is the j-th visited key tile: the trip's tiles in
    // order, or (Featured) the producer's word of the slot, read once the slot's K has landed.
    auto visit = [&](int j) {
      if constexpr (Featured) {
        std::uint32_t w;
        asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w) : "r"(base + F::meta_offset + 4 * ((kv0 + j) % S)) : "memory");
        return Sm90Visit::decode(w);
      } else {
        const int kt = tile.key_begin + j;
        return Sm90Visit{kt, kt < tile.unmasked_begin || kt >= tile.unmasked_end, false, kt + 1 >= tile.key_end};
      }
    };
    bool any = tile.key_begin < tile.key_end;
    if constexpr (Featured) {
      std::uint32_t w;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w) : "r"(base + F::meta_offset + 4 * (S + wg)) : "memory");
      any = w != 0;
    }
    const int n_tiles = tile.key_end - tile.key_begin;  // the dense walk's count
    int j = 0;
    if (any) {
      float alpha[2];
      const Sm90PingPong<F::consumers> turn{wg};
      turn.wait();
      issue_scores(0);
      turn.pass();
      Sm90Visit v = visit(0);
      wgmma_wait<0>();
      softmax(v, alpha);
      convert_p();
      drop(v);
      for (j = 1; Featured ? !v.last : j < n_tiles; ++j) {
        turn.wait();
        issue_scores(j);
        issue_pv(j - 1);
        turn.pass();
        v = visit(j);
        wgmma_wait<1>();  // S of tile j is ready; P V of tile j - 1 may still run
        softmax(v, alpha);
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
        drop(v);
      }
      turn.wait();
      issue_pv(j - 1);
      turn.pass();
      wgmma_wait<0>();
      release(j - 1);
    }
    kv = kv0 + j;
  }

  /// Normalizes O into this warpgroup's rows of the Q tile (128-byte swizzle, as TMA reads it) and
  /// writes the LSE of its rows (rows within the tile's sequence only).
  __device__ void stage_output(const detail::ForwardArgs& a, std::uint32_t q_s, int wg, const Tile& tile) {
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
        const std::uint32_t addr = row_addr + (c / 64) * F::block_m * 128 + ((((c % 64) / 8) ^ (r % 8)) * 16) + (c % 8) * 2;
        const std::uint32_t v = ptx::pack2<T>(acc_o[4 * i + 2 * h] * inv, acc_o[4 * i + 2 * h + 1] * inv);
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
      }
      const int row = tile.row0 + wg * 64 + r;
      if (t == 0 && row < tile.seqlen_q)
        lse[std::int64_t(row) * a.lse.stride_s] = common::row_lse(row_max[h], l, a.score.scale);
    }
  }
};

/// The epilogue of packed sequences (no TMA store: a box past a sequence's end would write the next
/// sequence's rows): the warpgroup's 128 threads copy its staged rows that lie inside the sequence to
/// global memory in 16-byte chunks, consecutive threads along a row.
template <int D, bool Featured>
__device__ __forceinline__ void store_rows_predicated(const detail::ForwardArgs& a, std::uint32_t base, int wg,
                                                      const Sm90Tile<D, Featured>& tile) {
  using F = Sm90Shape<D>;
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
      const std::uint32_t addr = base + (c / 8) * F::block_m * 128 + (wg * 64 + r) * 128 + (((c % 8) ^ (r % 8)) * 16);
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

template <int D, class T, bool Featured>
__global__ void __launch_bounds__(Sm90Shape<D>::threads, 1)
    forward_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap o_map,
                        const detail::ForwardArgs a, const std::int64_t n_qtiles, const float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma and setmaxnreg exist on sm_90a only
  using F = Sm90Shape<D>;
  using Tile = Sm90Tile<D, Featured>;
  constexpr int BN = F::block_n, S = F::stages, CB = F::col_blocks, BM = F::block_m;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const std::uint32_t base = (raw + 1023) & ~1023u;  // 128-byte swizzle atoms are 1024-byte aligned
  const Sm90Barriers<D> bar{base + F::bar_offset};
  // Tile ids: 32-bit in the Featured kernel (fewer than 2^31 tiles, checked by supports_forward), whose
  // producer needs the registers for its walk.
  using Id = std::conditional_t<Featured, int, std::int64_t>;
  constexpr bool kPersistent = Featured ? F::featured_persistent : F::persistent;
  const Id n_work = static_cast<Id>(a.shape.batch * a.shape.heads * n_qtiles);
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) bar.init();
  __syncthreads();

  // Persistent: block b takes tiles b, b + grid, b + 2 grid, ... (head-major, longest first). A tile
  // past its packed sequence's end is skipped by everyone (it counts no Q buffer and no ring slot).
  if (wg == 0) {  // producer
    regs_release<F::producer_regs>();
    if (threadIdx.x != 0) return;
    prefetch_tensor_map(&q_map);
    prefetch_tensor_map(&k_map);
    prefetch_tensor_map(&v_map);
    int kv = 0, it = 0;
    for (Id id = blockIdx.x; id < n_work; id += gridDim.x) {
      const Tile tile(id, n_qtiles, a);
      if (tile.past_end()) continue;
      const int head = tile.head, head_kv = tile.head_kv;
      const int qb = Featured ? map_batch(a.q, tile.batch) : tile.batch;
      const int kb = Featured ? map_batch(a.k, tile.batch) : tile.batch;
      const int vb = Featured ? map_batch(a.v, tile.batch) : tile.batch;
      // Featured: the walk (visited tiles only; skipped ones are never loaded) and its words for the
      // consumers, each written before the arrival that publishes its Q buffer or ring slot.
      const Sm90Walk<D, Featured> walk(tile, a);
      Sm90Visit cur = walk.visit(tile.key_begin);
      auto put_meta = [&](int word, std::uint32_t value) {
        if constexpr (Featured)
          asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(base + F::meta_offset + 4 * word), "r"(value) : "memory");
      };
      // Q of consumer w once its previous O store has read the buffer; issued after the first K/V
      // tile so that this tile's K/V stream starts while the consumers finish the previous tile.
      auto load_q = [&](bool any) {
        for (int w = 0; w < F::consumers; ++w) {
          if (it > 0) mbar_wait(bar.q_free(w), (it - 1) & 1);
          put_meta(S + w, any ? 1u : 0u);
          mbar_expect_tx(bar.q_full(w), F::q_part_bytes);
          for (int c = 0; c < CB; ++c)
            tma_load_4d(base + c * BM * 128 + w * 64 * 128, &q_map, bar.q_full(w), c * 64,
                        tile.q_begin + tile.row0 + w * 64, head, qb);
        }
      };
      if (cur.tile >= tile.key_end) load_q(false);
      for (int j = 0; cur.tile < tile.key_end; ++j, ++kv) {
        const Sm90Visit next = walk.visit(cur.tile + 1);
        const int s = kv % S;
        if (kv >= S) mbar_wait(bar.kv_free(s), ((kv / S) - 1) & 1);
        cur.last = next.tile >= tile.key_end;
        put_meta(s, cur.encode());
        const int row = tile.k_begin + cur.tile * BN;  // packed varlen: past the sequence's end the next one's keys
        const std::uint32_t k_s = base + F::q_bytes + s * F::kv_bytes, v_s = base + F::q_bytes + (S + s) * F::kv_bytes;
        mbar_expect_tx(bar.k_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(k_s + c * BN * 128, &k_map, bar.k_full(s), c * 64, row, head_kv, kb);
        mbar_expect_tx(bar.v_full(s), F::kv_bytes);
        for (int c = 0; c < CB; ++c) tma_load_4d(v_s + c * BN * 128, &v_map, bar.v_full(s), c * 64, row, head_kv, vb);
        if (j == 0) load_q(true);
        cur = next;
      }
      ++it;
      if constexpr (!kPersistent) break;
    }
    return;
  }

  regs_claim<F::consumer_regs>();
  const int cwg = wg - 1;
  Sm90PingPong<F::consumers>{cwg}.start();
  int kv = 0, it = 0;
  for (Id id = blockIdx.x; id < n_work; id += gridDim.x) {
    const Tile tile(id, n_qtiles, a);
    if (tile.past_end()) continue;
    Sm90Consumer<D, T, Featured> consumer;
    mbar_wait(bar.q_full(cwg), it & 1);
    consumer.run(a, base, bar, cwg, tile, kv, scale_log2);
    consumer.stage_output(a, base, cwg, tile);
    if (Featured && a.varlen.enabled()) {
      named_barrier_sync(1 + cwg, 128);  // every row staged
      store_rows_predicated(a, base, cwg, tile);
      fence_async_shared();  // the reads before the next Q load (async proxy) overwrites the buffer
      named_barrier_sync(1 + cwg, 128);  // every row read: the Q buffer may be refilled
      if (threadIdx.x % 128 == 0) mbar_arrive(bar.q_free(cwg));
    } else {
      fence_async_shared();
      named_barrier_sync(1 + cwg, 128);
      if (threadIdx.x % 128 == 0) {
        const int ob = Featured ? map_batch(a.o, tile.batch) : tile.batch;
        for (int c = 0; c < CB; ++c)
          tma_store_4d(&o_map, base + c * BM * 128 + cwg * 64 * 128, c * 64, tile.row0 + cwg * 64, tile.head, ob);
        tma_store_commit();
        tma_store_wait_read();
        mbar_arrive(bar.q_free(cwg));
      }
    }
    ++it;
    if constexpr (!kPersistent) break;
  }
#endif
}

/// Number of rows of a packed tensor, cu_seqlens[batch] (read back once: the tensor maps' extents must
/// end at the last sequence so that TMA zero-fills, rather than reads, past it).
inline std::int64_t packed_rows(const std::int32_t* cu, std::int64_t batch, cudaStream_t stream) {
  std::int32_t total = 0;
  cudaError_t err = cudaMemcpyAsync(&total, cu + batch, sizeof total, cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess)
    throw LaunchError(std::string("CUDA Hopper forward: reading cu_seqlens failed: ") + cudaGetErrorString(err));
  return total;
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
  using F = Sm90Shape<D>;
  const detail::Shape& s = a.shape;
  const std::int64_t n_qtiles = common::tile_count(s.seqlen_q, F::block_m);  // varlen: of the longest sequence
  const std::int64_t work = s.batch * s.heads * n_qtiles;
  if (work == 0) return;
  if (!detail::native_block_sizes(a.score.blocks))  // the walk (Sm90Walk) and sm90_block_bits_row need them
    throw Error("CUDA Hopper forward: block masks need block sizes of 64, 128 or 256");
  // Persistent (one block per SM, tiles taken round-robin) only when every tile costs the same: with
  // causal or windowed masks the blocks drift apart over many heads and lose the L2 reuse of K/V (d128
  // causal 16k ran at 0.73x of one block per tile on an H200), which the hardware's in-order block
  // dispatch keeps. Block masks and packed sequences make tiles unequal too.
  const bool uniform = a.score.window_left < 0 && a.score.window_right < 0 && !a.score.blocks.enabled() &&
                       !a.varlen.enabled();
  const std::int64_t sms = std::max(1, device_attribute<cudaDevAttrMultiProcessorCount>());
  const bool persistent = Featured ? F::featured_persistent : F::persistent;
  const std::int64_t blocks = persistent && uniform && work > sms ? sms : work;
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
