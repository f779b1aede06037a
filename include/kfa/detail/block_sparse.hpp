#pragma once
// Reading a BlockSparseSpec: the mask row of a query block, and the per-element answer used by
// the unfused reference and the debug path (the fused kernels walk whole rows instead).
#include <cstdint>

#include "kfa/detail/feature_args.hpp"
#include "kfa/detail/macros.hpp"

namespace kfa::detail {

/// Index of the mask row of (batch b, head h, query block qb), honouring broadcast dimensions.
KFA_HD std::int64_t block_mask_row(const BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t qb) {
  const std::int64_t mb = m.batch == 1 ? 0 : b, mh = m.heads == 1 ? 0 : h;
  return (mb * m.heads + mh) * m.n_qblocks + qb;
}

/// Index of the column-compressed list of (batch b, head h, key block kb).
KFA_HD std::int64_t block_mask_col(const BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t kb) {
  const std::int64_t mb = m.batch == 1 ? 0 : b, mh = m.heads == 1 ? 0 : h;
  return (mb * m.heads + mh) * m.n_kblocks + kb;
}

/// Bit of element (row, col) in the bitmask of the partial block that holds it.
KFA_HD bool partial_bit(const BlockSparseSpec& m, const std::uint32_t* bits, std::int64_t row, std::int64_t col) {
  const std::int64_t e = (row % m.block_q) * m.block_k + col % m.block_k;
  return (bits[e >> 5] >> (e & 31)) & 1u;
}

/// True when the block mask computes element (b, h, row, col). Linear in the row's block count.
KFA_HD bool block_mask_allows(const BlockSparseSpec& m, std::int64_t b, std::int64_t h, std::int64_t row,
                              std::int64_t col) {
  if (!m.enabled()) return true;
  const std::int64_t r = block_mask_row(m, b, h, row / m.block_q);
  const std::int32_t kb = static_cast<std::int32_t>(col / m.block_k);
  for (std::int32_t e = m.row_ptr[r]; e < m.row_ptr[r + 1]; ++e)
    if (m.col_idx[e] == kb) return true;
  for (std::int32_t e = m.partial_row_ptr[r]; e < m.partial_row_ptr[r + 1]; ++e)
    if (m.partial_col_idx[e] == kb) return partial_bit(m, m.partial_bits + std::int64_t(e) * m.words_per_block, row, col);
  return false;
}

}  // namespace kfa::detail
