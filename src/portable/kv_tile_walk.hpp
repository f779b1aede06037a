#pragma once
// The tiles one team visits along the other axis, in increasing order. Dense: every tile of the
// visible range. Block-sparse: only the tiles of the mask's full and partial blocks (a mask block
// spans block / tile kernel tiles), clipped to the visible range; skipped blocks are never touched.
//   rows():    the key tiles of one query tile (forward, deterministic dQ pass), from the compressed rows;
//   columns(): the query tiles of one key tile (backward dK/dV pass), from the compressed columns.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/tile_rules.hpp"

namespace kfa::portable {

struct TileStep {
  std::int64_t index = 0;               // tile index along the walked axis
  const std::uint32_t* bits = nullptr;  // element bitmask of the partial mask block holding it, else nullptr
};

class TileWalk {
 public:
  /// Key tiles of width bc for the query tile starting at row0 of (b, h), within `keys`.
  KOKKOS_INLINE_FUNCTION static TileWalk rows(const detail::BlockSparseSpec& m, std::int64_t b, std::int64_t h,
                                              std::int64_t row0, detail::VisibleRange keys, int bc) {
    TileWalk w(keys, bc);
    if (!m.enabled()) return w;
    const std::int64_t r = detail::block_mask_row(m, b, h, row0 / m.block_q);
    w.sparse(m, m.col_idx, m.row_ptr[r], m.row_ptr[r + 1], m.partial_col_idx, m.partial_row_ptr[r],
             m.partial_row_ptr[r + 1], nullptr, m.block_k / bc);
    return w;
  }

  /// Query tiles of height bq for the key tile starting at col0 of (b, h), within `queries`.
  KOKKOS_INLINE_FUNCTION static TileWalk columns(const detail::BlockSparseSpec& m, std::int64_t b, std::int64_t h,
                                                 std::int64_t col0, detail::VisibleRange queries, int bq) {
    TileWalk w(queries, bq);
    if (!m.enabled()) return w;
    const std::int64_t c = detail::block_mask_col(m, b, h, col0 / m.block_k);
    w.sparse(m, m.row_idx, m.col_ptr[c], m.col_ptr[c + 1], m.partial_row_idx, m.partial_col_ptr[c],
             m.partial_col_ptr[c + 1], m.col_partial_entry, m.block_q / bq);
    return w;
  }

  KOKKOS_INLINE_FUNCTION bool next(TileStep& t) {
    while (t_ >= block_end_)
      if (!sparse_ || !open_next_block()) return false;
    t.index = t_++;
    t.bits = bits_;
    return true;
  }

 private:
  KOKKOS_INLINE_FUNCTION TileWalk(detail::VisibleRange range, int tile) {
    t_ = range.begin / tile;
    t_end_ = range.begin < range.end ? (range.end + tile - 1) / tile : t_;
    lo_ = t_;
    block_end_ = t_end_;
  }

  KOKKOS_INLINE_FUNCTION void sparse(const detail::BlockSparseSpec& m, const std::int32_t* full_idx, std::int32_t f0,
                                     std::int32_t f1, const std::int32_t* part_idx, std::int32_t p0, std::int32_t p1,
                                     const std::int32_t* entry, std::int64_t tiles_per_block) {
    sparse_ = true;
    full_idx_ = full_idx;
    part_idx_ = part_idx;
    entry_ = entry;
    bits_base_ = m.partial_bits;
    words_ = m.words_per_block;
    full_ = f0;
    full_end_ = f1;
    part_ = p0;
    part_end_ = p1;
    tiles_per_block_ = tiles_per_block;
    block_end_ = t_;  // no block open yet
  }

  /// Moves to the next mask block (the smaller head of the full and partial lists).
  KOKKOS_INLINE_FUNCTION bool open_next_block() {
    const bool has_full = full_ < full_end_, has_part = part_ < part_end_;
    if (!has_full && !has_part) return false;
    std::int64_t blk;
    if (has_full && (!has_part || full_idx_[full_] < part_idx_[part_])) {
      blk = full_idx_[full_++];
      bits_ = nullptr;
    } else {
      const std::int64_t e = entry_ ? entry_[part_] : part_;
      bits_ = bits_base_ + e * words_;
      blk = part_idx_[part_++];
    }
    const std::int64_t first = blk * tiles_per_block_;
    if (first >= t_end_) {  // sorted lists: nothing visible further on
      full_ = full_end_;
      part_ = part_end_;
      return false;
    }
    t_ = first > lo_ ? first : lo_;
    const std::int64_t last = first + tiles_per_block_;
    block_end_ = last < t_end_ ? last : t_end_;
    return true;
  }

  std::int64_t t_ = 0, t_end_ = 0, block_end_ = 0, lo_ = 0, tiles_per_block_ = 1;
  bool sparse_ = false;
  const std::int32_t *full_idx_ = nullptr, *part_idx_ = nullptr, *entry_ = nullptr;
  const std::uint32_t* bits_base_ = nullptr;
  std::int64_t words_ = 0;
  std::int32_t full_ = 0, full_end_ = 0, part_ = 0, part_end_ = 0;
  const std::uint32_t* bits_ = nullptr;
};

/// Zeroes P and dS where a partial mask block's bitmask excludes the element (the backward computes
/// whole tile lines first). QueryInner: the line runs over rows i0 + e at column j0, else over columns.
template <bool QueryInner, class Acc>
KOKKOS_INLINE_FUNCTION void zero_outside_bits(const detail::BlockSparseSpec& m, const std::uint32_t* bits, Acc* s,
                                              Acc* ds, int n, std::int64_t i0, std::int64_t j0) {
  for (int e = 0; e < n; ++e) {
    const std::int64_t i = QueryInner ? i0 + e : i0, j = QueryInner ? j0 : j0 + e;
    if (!detail::partial_bit(m, bits, i, j)) {
      s[e] = Acc(0);
      ds[e] = Acc(0);
    }
  }
}

/// With a block mask, kernel tiles must divide the mask's blocks so that every tile lies in one
/// block: the chosen tile when it divides the block, else the largest multiple of 16 below it that
/// does (blocks are multiples of 16, so 16 always does; tuned tile sizes stay multiples of the
/// register block). Tiles only shrink, so the scratch sized for the chosen tiles suffices.
inline int fit_tile_to_block(int tile, std::int64_t block) {
  if (block % tile == 0) return tile;
  for (int t = tile / 16 * 16; t > 16; t -= 16)
    if (block % t == 0) return t;
  return 16;
}

/// `q_tile` / `k_tile` are the config's query and key tile sizes (their names differ between kernels).
inline void fit_tiles_to_block_mask(int& q_tile, int& k_tile, const detail::BlockSparseSpec& m) {
  if (!m.enabled()) return;
  q_tile = fit_tile_to_block(q_tile, m.block_q);
  k_tile = fit_tile_to_block(k_tile, m.block_k);
}

}  // namespace kfa::portable
