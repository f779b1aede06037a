#pragma once
// The key tiles one query tile visits, in increasing order. Dense: every tile of the visible key
// range. Block-sparse: only the tiles of the mask row's full and partial blocks (each mask block
// spans block_k / bc kernel tiles), clipped to the visible range; skipped blocks are never touched.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/tile_rules.hpp"

namespace kfa::portable {

struct KvTile {
  std::int64_t kt = 0;                  // key tile index: keys [kt * bc, kt * bc + bc)
  const std::uint32_t* bits = nullptr;  // element bitmask of the partial mask block holding it, else nullptr
};

class KvTileWalk {
 public:
  /// Tiles of width bc covering keys `keys` for the query tile starting at row0 of (b, h).
  KOKKOS_INLINE_FUNCTION KvTileWalk(const detail::BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t row0,
                                    detail::VisibleRange keys, int bc)
      : m_(m) {
    kt_ = keys.begin / bc;
    kt_end_ = keys.begin < keys.end ? (keys.end + bc - 1) / bc : kt_;
    if (!m.enabled()) {
      block_end_ = kt_end_;
      return;
    }
    lo_ = kt_;
    tiles_per_block_ = m.block_k / bc;
    const std::int64_t r = detail::block_mask_row(m, b, h, row0 / m.block_q);
    full_ = m.row_ptr[r];
    full_end_ = m.row_ptr[r + 1];
    part_ = m.partial_row_ptr[r];
    part_end_ = m.partial_row_ptr[r + 1];
    block_end_ = kt_;  // no block open yet
  }

  KOKKOS_INLINE_FUNCTION bool next(KvTile& t) {
    while (kt_ >= block_end_) {
      if (!m_.enabled() || !open_next_block()) return false;
    }
    t.kt = kt_++;
    t.bits = bits_;
    return true;
  }

 private:
  /// Moves to the next mask block (the smaller head of the full and partial lists).
  KOKKOS_INLINE_FUNCTION bool open_next_block() {
    const bool has_full = full_ < full_end_, has_part = part_ < part_end_;
    if (!has_full && !has_part) return false;
    std::int64_t kb;
    if (has_full && (!has_part || m_.col_idx[full_] < m_.partial_col_idx[part_])) {
      kb = m_.col_idx[full_++];
      bits_ = nullptr;
    } else {
      bits_ = m_.partial_bits + std::int64_t(part_) * m_.words_per_block;
      kb = m_.partial_col_idx[part_++];
    }
    const std::int64_t first = kb * tiles_per_block_;
    if (first >= kt_end_) {  // sorted lists: nothing visible further right
      full_ = full_end_;
      part_ = part_end_;
      return false;
    }
    kt_ = first > lo_ ? first : lo_;
    const std::int64_t last = first + tiles_per_block_;
    block_end_ = last < kt_end_ ? last : kt_end_;
    return true;
  }

  detail::BlockSparseSpec m_;
  std::int64_t kt_ = 0, kt_end_ = 0, block_end_ = 0, lo_ = 0;
  std::int64_t tiles_per_block_ = 1;
  std::int32_t full_ = 0, full_end_ = 0, part_ = 0, part_end_ = 0;
  const std::uint32_t* bits_ = nullptr;
};

/// With a block mask, kernel tiles must divide the mask's blocks: the largest power of two (at most
/// the chosen tile) that divides the block size. Block sizes are multiples of 16, so tiles stay >= 16.
template <class Config>
void fit_tiles_to_block_mask(Config& tc, const detail::BlockSparseSpec& m) {
  if (!m.enabled()) return;
  auto fit = [](int tile, std::int64_t block) {
    while (block % tile != 0) tile /= 2;
    return tile;
  };
  tc.br = fit(tc.br, m.block_q);
  tc.bc = fit(tc.bc, m.block_k);
}

}  // namespace kfa::portable
