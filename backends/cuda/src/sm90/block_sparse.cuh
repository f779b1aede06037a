#pragma once
// Why this file: the Featured Hopper forward's block-sparse masks live in three places that must agree
// on one format, kept together here: the walk over a query tile's visited key tiles (Sm90Walk, run by
// the producer, which loads those tiles only), the word that tells the consumers which key tile a ring
// slot holds and what it needs (Sm90Visit), and the per-element block bits of a partial key tile on
// one fragment row (sm90_block_bits_row, applied by the mainloop's softmax).
#include <cmath>
#include <cstdint>

#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "sm90/forward_shape.cuh"
#include "sm90/tile_scheduler.cuh"

namespace kfa::cuda::hopper {

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
  static constexpr int BN = Sm90Shape<D, Featured>::block_n;
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

}  // namespace kfa::cuda::hopper
