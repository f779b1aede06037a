#pragma once
// The feature policy: what a call's options mean for one tile of work, defined once for every
// implementation (the portable Kokkos algorithm, the CUDA and HIP kernels; forward and backward).
// A kernel keeps its own tile sizes and passes them in; it asks the policy
//   sequence bounds   where sequence b starts in packed tensors and how long it is (Varlen, KvCache),
//                     and where its key j lives (a paged KV cache);
//   trip counts       which key tiles a query tile visits (window / causal bounds, block-sparse skips),
//                     and which query tiles a key tile visits (the backward);
//   element masks     which visited tiles need one (window edge, sequence end, partial mask block)
//                     and the per-element answer;
//   score modifiers   softcap and ALiBi (modify_score);
//   dropout           the Philox bytes of kfa/detail/philox.hpp.
// No Kokkos and no vendor code here: KFA_HD functions on the launcher contract (args.hpp).
#include <cmath>
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/macros.hpp"
#include "kfa/detail/philox.hpp"
#include "kfa/detail/tile_rules.hpp"

namespace kfa::detail {

// ---------------------------------------------------------------- sequence bounds (packed varlen)

/// Sequence b of a call: its first row in q/o/lse and in k/v (0 for a padded batch, whose rows the
/// batch stride moves to), and its lengths. Packed tensors have stride_b = 0, so the row of element
/// (b, r) is always  b * stride_b + (begin + r) * stride_s.
struct SequenceBounds {
  std::int64_t q_begin = 0, k_begin = 0;
  std::int64_t seqlen_q = 0, seqlen_k = 0;
};

KFA_HD SequenceBounds sequence_bounds(const Shape& s, const Varlen& v, std::int64_t b) {
  if (!v.enabled()) return {0, 0, s.seqlen_q, s.seqlen_k};
  const std::int64_t q0 = v.cu_seqlens_q[b], k0 = v.cu_seqlens_k[b];
  return {q0, k0, v.cu_seqlens_q[b + 1] - q0, v.cu_seqlens_k[b + 1] - k0};
}

/// The same for a call whose keys may be a KV cache: sequence b of a cache sees its own key count.
KFA_HD SequenceBounds sequence_bounds(const Shape& s, const Varlen& v, const KvCache& kv, std::int64_t b) {
  if (!kv.enabled()) return sequence_bounds(s, v, b);
  return {0, 0, s.seqlen_q, kv.seqlen_k(b)};
}

/// Where key j of sequence b lives: (batch b, row j) of a plain or contiguous-cache tensor, or
/// (page, row in the page) of a paged cache. Key positions are below 2^31 (the API checks the
/// capacity), so the page arithmetic is 32-bit.
struct KeyRow {
  std::int64_t block = 0, row = 0;  // index along k/v's first dimension, and along the second
};

KFA_HD KeyRow key_row(const KvCache& kv, std::int64_t b, std::int64_t j) {
  if (!kv.paged()) return {b, j};
  const std::uint32_t jj = static_cast<std::uint32_t>(j), ps = static_cast<std::uint32_t>(kv.page_size);
  const std::uint32_t page = jj / ps;
  return {kv.block_table[b * kv.table_stride + page], static_cast<std::int64_t>(jj - page * ps)};
}

KFA_HD std::int64_t key_row_offset(const Tensor4& t, const KeyRow& r, std::int64_t h) {
  return r.block * t.stride_b + r.row * t.stride_s + h * t.stride_h;
}

/// Element offset of key row j of (batch b, KV head h) in k or v.
KFA_HD std::int64_t key_row_offset(const Tensor4& t, const KvCache& kv, std::int64_t b, std::int64_t j,
                                   std::int64_t h) {
  return key_row_offset(t, key_row(kv, b, j), h);
}

/// The call's shape as one sequence sees it: masks (causal, window, ALiBi) align to its own lengths.
KFA_HD Shape sequence_shape(const Shape& s, const SequenceBounds& sb) {
  Shape r = s;
  r.seqlen_q = sb.seqlen_q;
  r.seqlen_k = sb.seqlen_k;
  return r;
}

// ---------------------------------------------------------------- trip counts

/// Key tiles [begin, end) of `cols` keys that rows [row_begin, row_end) can see, and the sub-range
/// [unmasked_begin, unmasked_end) in which every (row, key) is visible under the window and the
/// sequence end (detail::tile_fully_visible holds), so no window mask is needed there.
struct KeyTrip {
  std::int64_t begin = 0, end = 0, unmasked_begin = 0, unmasked_end = 0;
};

KFA_HD KeyTrip key_trip(std::int64_t row_begin, std::int64_t row_end, std::int64_t cols, const Shape& s,
                        const ScoreSpec& sc) {
  KeyTrip t;
  const VisibleRange keys = visible_keys(row_begin, row_end, s, sc);
  if (row_begin >= row_end || keys.begin >= keys.end) return t;
  t.begin = keys.begin / cols;
  t.end = (keys.end + cols - 1) / cols;
  const VisibleRange first = visible_keys(row_begin, s, sc);
  const VisibleRange last = visible_keys(row_end - 1, s, sc);
  const std::int64_t ub = last.begin <= 0 ? 0 : (last.begin + cols - 1) / cols;
  const std::int64_t ue = first.end <= 0 ? 0 : first.end / cols;  // first.end <= seqlen_k
  t.unmasked_begin = ub < t.begin ? t.begin : ub;
  t.unmasked_end = ue > t.end ? t.end : ue;
  if (t.unmasked_end < t.unmasked_begin) t.unmasked_end = t.unmasked_begin;
  return t;
}

/// Query tiles [begin, end) of `rows` rows that see any key of [col_begin, col_end) (the backward's
/// walk), and the sub-range where the whole (query tile, key range) is visible.
struct QueryTrip {
  std::int64_t begin = 0, end = 0;
};

KFA_HD QueryTrip query_trip(std::int64_t col_begin, std::int64_t col_end, std::int64_t rows, const Shape& s,
                            const ScoreSpec& sc) {
  const VisibleRange q = visible_queries(col_begin, col_end, s, sc);
  if (col_begin >= col_end || q.begin >= q.end) return {};
  return {q.begin / rows, (q.end + rows - 1) / rows};
}

// ---------------------------------------------------------------- block-sparse tiles

/// What a kernel does with one (query tile, key tile): skip it (never loaded), compute it whole, or
/// compute it under the mask blocks' element bits.
enum class BlockKind : int { skipped = 0, full = 1, partial = 2 };

/// The kind of kernel tile rows [row0, row_end) x keys [col0, col_end) of (batch b, head h) under the
/// block mask: full when every mask block it covers is full, skipped when all are skipped. Without a
/// block mask every tile is full. Rows and keys are positions within the sequence (< its lengths).
KFA_HD BlockKind block_tile_kind(const BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t row0,
                                 std::int64_t row_end, std::int64_t col0, std::int64_t col_end) {
  if (!m.enabled()) return BlockKind::full;
  if (row0 >= row_end || col0 >= col_end) return BlockKind::skipped;
  std::int64_t qb1 = m.qblock_of(row_end - 1), kb1 = m.kblock_of(col_end - 1);
  if (qb1 >= m.n_qblocks) qb1 = m.n_qblocks - 1;
  if (kb1 >= m.n_kblocks) kb1 = m.n_kblocks - 1;
  bool any = false, all_full = true;
  for (std::int64_t qb = m.qblock_of(row0); qb <= qb1; ++qb) {
    const std::int32_t* st = m.block_state + block_mask_row(m, b, h, qb) * m.n_kblocks;
    for (std::int64_t kb = m.kblock_of(col0); kb <= kb1; ++kb) {
      const std::int32_t v = st[kb];
      any = any || v != block_skipped;
      all_full = all_full && v == block_full;
    }
  }
  return !any ? BlockKind::skipped : all_full ? BlockKind::full : BlockKind::partial;
}

/// The mask row holding query `row` of (b, h), for element tests along that row.
struct BlockRow {
  const std::int32_t* state = nullptr;  // block_state of the row's mask row; nullptr: no block mask
  std::int32_t row_in_block = 0;
};

KFA_HD BlockRow block_row(const BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t row) {
  if (!m.enabled()) return {};
  std::int64_t qb = m.qblock_of(row);
  if (qb >= m.n_qblocks) qb = m.n_qblocks - 1;  // padding rows of a kernel's last tile (never stored)
  return {m.block_state + block_mask_row(m, b, h, qb) * m.n_kblocks, static_cast<std::int32_t>(row - qb * m.block_q)};
}

/// True when the block mask computes key `col` of the row (a key past the mask's blocks is not).
KFA_HD bool block_allows(const BlockSparseSpec& m, const BlockRow& r, std::int64_t col) {
  if (r.state == nullptr) return true;
  const std::int64_t kb = m.kblock_of(col);
  if (kb >= m.n_kblocks) return false;
  const std::int32_t v = r.state[kb];
  if (v == block_full) return true;
  if (v < 0) return false;
  const std::int64_t e = std::int64_t(r.row_in_block) * m.block_k + (col - kb * m.block_k);
  return (m.partial_bits[std::int64_t(v) * m.words_per_block + (e >> 5)] >> (e & 31)) & 1u;
}

/// Block sizes the native kernels take: powers of two from 64 to 256 (their tiles then cover whole
/// blocks or lie inside one, and the element test is shifts and masks).
KFA_HD bool native_block_sizes(const BlockSparseSpec& m) {
  auto ok = [](std::int32_t x) { return x == 64 || x == 128 || x == 256; };
  return !m.enabled() || (ok(m.block_q) && ok(m.block_k));
}

// ---------------------------------------------------------------- one visited tile

/// What a query tile's walk does at key tile t: visit it or not, and whether it needs the window /
/// sequence-end mask or the block bits. Skipped tiles are never loaded.
struct KeyTileWork {
  bool visit = false;
  bool window_mask = false;  // t straddles a window edge or the sequence end
  bool block_bits = false;   // t covers a partial mask block
  KFA_HD bool masked() const { return window_mask || block_bits; }
};

/// The walk's answer for key tile t of `cols` keys, rows [row0, row_end) of (b, h).
KFA_HD KeyTileWork key_tile_work(const KeyTrip& trip, std::int64_t t, std::int64_t cols, std::int64_t row0,
                                 std::int64_t row_end, std::int64_t b, std::int64_t h, const Shape& s,
                                 const ScoreSpec& sc) {
  KeyTileWork w;
  if (t < trip.begin || t >= trip.end) return w;
  const std::int64_t col0 = t * cols, col_end = col0 + cols < s.seqlen_k ? col0 + cols : s.seqlen_k;
  const BlockKind k = block_tile_kind(sc.blocks, b + sc.batch_base, h, row0, row_end, col0, col_end);
  if (k == BlockKind::skipped) return w;
  w.visit = true;
  w.window_mask = t < trip.unmasked_begin || t >= trip.unmasked_end;
  w.block_bits = k == BlockKind::partial;
  return w;
}

/// The first visited key tile at or after t (trip.end when none). Without a block mask: t itself.
KFA_HD std::int64_t next_key_tile(const KeyTrip& trip, std::int64_t t, std::int64_t cols, std::int64_t row0,
                                  std::int64_t row_end, std::int64_t b, std::int64_t h, const Shape& s,
                                  const ScoreSpec& sc) {
  if (t < trip.begin) t = trip.begin;
  if (!sc.blocks.enabled()) return t < trip.end ? t : trip.end;
  for (; t < trip.end; ++t)
    if (key_tile_work(trip, t, cols, row0, row_end, b, h, s, sc).visit) return t;
  return trip.end;
}

/// Number of key tiles the walk visits.
KFA_HD std::int64_t visited_key_tiles(const KeyTrip& trip, std::int64_t cols, std::int64_t row0, std::int64_t row_end,
                                      std::int64_t b, std::int64_t h, const Shape& s, const ScoreSpec& sc) {
  if (!sc.blocks.enabled()) return trip.end - trip.begin;
  std::int64_t n = 0;
  for (std::int64_t t = trip.begin; t < trip.end; ++t)
    n += key_tile_work(trip, t, cols, row0, row_end, b, h, s, sc).visit ? 1 : 0;
  return n;
}

/// The element answer inside a masked tile: key `col` of query `row` is computed. `br` is
/// block_row(sc.blocks, b, h, row) (hoisted out of the column loop by the caller).
KFA_HD bool element_visible(std::int64_t row, std::int64_t col, const Shape& s, const ScoreSpec& sc,
                            const BlockRow& br) {
  return key_visible(row, col, s, sc) && block_allows(sc.blocks, br, col);
}

// ---------------------------------------------------------------- score modifiers

/// Per-(head) constants of the score modifiers of a call.
struct ScoreMod {
  float scale = 1.0f;     // softmax scale
  float softcap = 0.0f;   // 0 = off
  float alibi_slope = 0;  // 0 = off (the head's slope)
  KFA_HD bool any() const { return softcap != 0.0f || alibi_slope != 0.0f; }
};

KFA_HD ScoreMod make_score_mod(const ScoreSpec& sc, std::int64_t head) {
  ScoreMod m;
  m.scale = static_cast<float>(sc.scale);
  m.softcap = sc.softcap;
  m.alibi_slope = sc.alibi_slopes != nullptr ? sc.alibi_slopes[head] : 0.0f;
  return m;
}

/// A modified score in "raw" units x, with softmax weight exp(scale * x) (what the online softmax
/// tracks), and its derivative with respect to the dot product (the backward's chain rule).
struct ModifiedScore {
  float x;        // -inf when masked
  float dx_ddot;  // 1 without softcap
};

/// Soft-capping: scale * x = softcap * tanh(scale * dot / softcap); ALiBi adds its bias / scale.
/// Needs scale > 0 (the native kernels decline other scales; the portable path handles them).
KFA_HD ModifiedScore modify_score(float dot, const ScoreMod& m, std::int64_t row, std::int64_t col, const Shape& s,
                                  bool visible) {
  ModifiedScore r{dot, 1.0f};
  if (!visible) {
    r.x = -INFINITY;
    return r;
  }
  if (m.softcap != 0.0f) {
    const float t = tanhf(dot * m.scale / m.softcap);
    r.x = m.softcap * t / m.scale;
    r.dx_ddot = 1.0f - t * t;
  }
  if (m.alibi_slope != 0.0f) r.x += alibi_bias(m.alibi_slope, row, col, s) / m.scale;
  return r;
}

// ---------------------------------------------------------------- dropout

/// The resolved dropout of a call (philox.hpp has the definition of the mask).
struct DropoutPolicy {
  bool on = false;
  DropoutKey key;
  std::uint32_t threshold = 0;  // drop when the column's byte < threshold
  float keep_scale = 1.0f;      // 1 / (1 - p_eff)
  std::int64_t batch_base = 0;  // added to the batch index (a packed sequence keeps its index)
};

KFA_HD DropoutPolicy make_dropout(const ScoreSpec& sc) {
  DropoutPolicy d;
  d.on = sc.dropout_p > 0.0f;
  d.batch_base = sc.batch_base;
  if (!d.on) return d;
  d.key = derive_dropout_key(sc.seed, sc.offset);
  d.threshold = dropout_threshold(sc.dropout_p);
  d.keep_scale = static_cast<float>(dropout_keep_scale(sc.dropout_p));
  return d;
}

/// Keep flags of the four columns (2t, 2t + 1, 2t + 8, 2t + 9) of a 16-column group that word t of the
/// group's Philox block decides, as bits 0..3 (a Tensor Core fragment's view of the mask).
KFA_HD std::uint32_t dropout_keep_bits(std::uint32_t word, std::uint32_t threshold) {
  std::uint32_t bits = 0;
  for (int k = 0; k < 4; ++k) bits |= (((word >> (8 * k)) & 0xffu) >= threshold ? 1u : 0u) << k;
  return bits;
}

}  // namespace kfa::detail
