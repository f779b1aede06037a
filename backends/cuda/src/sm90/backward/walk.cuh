#pragma once
// Why this file: which (query head, query tile) steps one block of the Hopper backward takes, defined
// once. Thread 0 makes the block's record (Sm90BwdBlock: its sequence, the range its walk spans and
// the walk's first step) into shared memory before the roles start; the walker thread walks the
// steps (Sm90BwdWalk) and hands each to the consumers in its ring slot's step word, and the consumers
// hand it to the dQ writer with their staging boxes, so every role takes the same steps without
// walking itself. The answers are the feature policy's (kfa/detail/feature_policy.hpp): the query
// tiles that see a key of the block (visible_queries over the sequence's own lengths), tiles of a
// block mask skipped where block_tile_kind says so, partial ones flagged for the element bits.
// Positions are 32-bit (sequences shorter than 2^30; the dispatcher checks), which keeps the walk
// within the producer warpgroup's 24 registers.
#include <cstdint>

#include "kfa/detail/feature_policy.hpp"
#include "sm80/backward/params.cuh"
#include "sm90/backward/shape.cuh"

namespace kfa::cuda::hopper {

/// The block's record, in shared memory for the whole kernel.
struct Sm90BwdBlock {
  int q_begin, k_begin;    // the sequence's first rows in packed q / dO and k / v (0: a padded batch)
  int seqlen_q, seqlen_k;  // the sequence's lengths, which every mask rule uses
  int keys;                // keys of the block in the sequence (<= 0: past its end, nothing to do)
  int m_first, m_last;     // first rows of the first and the last query tile that see a key of the block
  int h_end;               // one past the last query head of the block's kv head
  int first_h, first_m0;   // the walk's first step (first_h == h_end: no step)
  int first_partial;
  // A block mask (Featured): the mask row of (first query head, query block 0), the rows one query
  // head further, and the mask blocks kb0..kb1 the block's keys cover (kfa::detail::block_mask_row).
  int mask_row0, mask_head_rows, kb0, kb1;
  __host__ __device__ bool any() const { return first_h < h_end; }
  /// The call's shape as the block's sequence sees it (masks align to its own lengths).
  __host__ __device__ kfa::detail::Shape shape(const kfa::detail::Shape& s) const {
    kfa::detail::Shape r = s;
    r.seqlen_q = seqlen_q;
    r.seqlen_k = seqlen_k;
    return r;
  }
};
static_assert(sizeof(Sm90BwdBlock) <= 64, "shape.cuh keeps 64 bytes for it");

/// The walk: (query head, query tile) pairs, tiles fastest, from the block's record; the featured
/// walk under a block mask visits only the tiles the mask does not skip. Its answer is
/// kfa::detail::block_tile_kind of the step's tile, in 32 bits: query rows [m0, m0 + BQ) lie in one
/// mask row (mask blocks have at least 64 = BQ rows, native_block_sizes), and the block's keys in the
/// mask blocks kb0..kb1 of its record.
template <int BK, int BQ, bool Featured>
struct Sm90BwdWalk {
  int h = 0, m0 = 0;
  bool partial = false;

  __device__ bool valid(const Sm90BwdBlock& blk) const { return h < blk.h_end; }
  __device__ Sm90BwdStep step(bool last) const { return {h, m0, partial, last}; }

  /// Moves to the first visited step at or after the current one (h == h_end when none).
  __device__ void settle(const Sm90BwdBlock& blk, const bwd::KernelParams& p) {
    partial = false;
    if constexpr (Featured) {
      const kfa::detail::BlockSparseSpec& m = p.score.blocks;
      if (!m.enabled()) return;
      const int q_shift = 31 - __clz(m.block_q), group = static_cast<int>(p.shape.heads / p.shape.heads_kv);
#pragma unroll 1
      for (; h < blk.h_end; next_tile(blk)) {
        const int qb = m0 >> q_shift;
        if (qb >= m.n_qblocks) continue;  // rows past the mask's: skipped
        const int row = blk.mask_row0 + (h % group) * blk.mask_head_rows + qb;
        const std::int32_t* st = m.block_state + std::int64_t(row) * m.n_kblocks;
        const std::int32_t v0 = st[blk.kb0], v1 = st[blk.kb1];  // kb1 - kb0 <= 1 (BK <= 2 x block_k)
        if (v0 == kfa::detail::block_skipped && v1 == kfa::detail::block_skipped) continue;
        partial = v0 != kfa::detail::block_full || v1 != kfa::detail::block_full;
        return;
      }
    }
  }
  __device__ void advance(const Sm90BwdBlock& blk, const bwd::KernelParams& p) {
    next_tile(blk);
    settle(blk, p);
  }

 private:
  __device__ void next_tile(const Sm90BwdBlock& blk) {
    if (m0 == blk.m_last) {
      ++h;
      m0 = blk.m_first;
    } else {
      m0 += BQ;
    }
  }
};

/// Deterministic mode: the place of the block of keys from n0 among the blocks whose walks visit query
/// rows [m0, m0 + BQ) of a head; the dQ writers add those rows in that order. Without a block mask the
/// visiting blocks are the contiguous run over the rows' visible keys (an interval, tile_rules.hpp),
/// which starts at the first row's first visible key (earlier rows of a block that see nothing only
/// exist where that key is 0), so the place is the distance from the run's first block.
template <int BK>
__device__ inline int dq_add_rank(const kfa::detail::Shape& seq, const kfa::detail::ScoreSpec& score, int m0, int n0) {
  return n0 / BK - static_cast<int>(kfa::detail::visible_keys(m0, seq, score).begin / BK);
}

/// The record of block (batch or sequence b, kv head hk, keys from n0), made by one thread.
template <int BK, int BQ, bool Featured>
__device__ inline Sm90BwdBlock make_bwd_block(const bwd::KernelParams& p, int b, int hk, int n0) {
  static_assert(BK <= 128, "the walk reads at most two mask blocks of 64 keys");
  Sm90BwdBlock r{};
  const kfa::detail::SequenceBounds sb = Featured ? kfa::detail::sequence_bounds(p.shape, p.varlen, b)
                                                  : kfa::detail::SequenceBounds{0, 0, p.shape.seqlen_q, p.shape.seqlen_k};
  r.q_begin = static_cast<int>(sb.q_begin);
  r.k_begin = static_cast<int>(sb.k_begin);
  r.seqlen_q = static_cast<int>(sb.seqlen_q);
  r.seqlen_k = static_cast<int>(sb.seqlen_k);
  r.keys = r.seqlen_k - n0 < BK ? r.seqlen_k - n0 : BK;
  const int group = static_cast<int>(p.shape.heads / p.shape.heads_kv);
  r.h_end = (hk + 1) * group;
  r.first_h = r.h_end;  // no step
  if (r.keys <= 0) return r;
  const kfa::detail::VisibleRange rows = kfa::detail::visible_queries(n0, n0 + r.keys, r.shape(p.shape), p.score);
  if (rows.begin >= rows.end) return r;
  r.m_first = static_cast<int>(rows.begin / BQ) * BQ;
  r.m_last = static_cast<int>((rows.end - 1) / BQ) * BQ;
  const kfa::detail::BlockSparseSpec& m = p.score.blocks;
  if (Featured && m.enabled()) {
    r.mask_row0 = static_cast<int>(kfa::detail::block_mask_row(m, b + p.score.batch_base, std::int64_t(hk) * group, 0));
    r.mask_head_rows = m.heads == 1 ? 0 : m.n_qblocks;
    r.kb0 = n0 / m.block_k;
    r.kb1 = (n0 + r.keys - 1) / m.block_k;
    if (r.kb0 >= m.n_kblocks) return r;  // keys past the mask's blocks: no step
    if (r.kb1 >= m.n_kblocks) r.kb1 = m.n_kblocks - 1;
  }
  Sm90BwdWalk<BK, BQ, Featured> w;
  w.h = hk * group;
  w.m0 = r.m_first;
  w.settle(r, p);
  r.first_h = w.h;
  r.first_m0 = w.m0;
  r.first_partial = w.partial ? 1 : 0;
  return r;
}

}  // namespace kfa::cuda::hopper
