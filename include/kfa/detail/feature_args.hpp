#pragma once
// Launcher-contract pieces of the optional features: a block-sparse layout as device pointers
// (compressed rows, and compressed columns for the backward), packed variable-length sequences, and a
// KV cache read in place (per-sequence key counts, optionally through a page table).
// No Kokkos here; kfa::BlockMask (kfa/block_mask.hpp) is the host object these point into.
#include <cstdint>

#include "kfa/detail/macros.hpp"

namespace kfa::detail {

/// Dense per-block states of BlockSparseSpec::block_state: skipped, full, or (>= 0) the index of a
/// partial entry (its bits at partial_bits + index * words_per_block).
inline constexpr std::int32_t block_skipped = -1;
inline constexpr std::int32_t block_full = -2;

/// A block mask in the execution space's memory. Mask row r = (mb * heads + mh) * n_qblocks + qb,
/// with mb = batch index (0 when the mask broadcasts over batch) and mh likewise for heads. The KV
/// blocks of a row are sorted; "full" blocks are computed whole, "partial" blocks apply an element
/// bitmask (words_per_block 32-bit words per partial entry, row-major [block_q][block_k] bits).
/// The column-compressed copy lists, for each (mb, mh, KV block), the Q blocks that use it;
/// col_partial_entry maps each of its partial entries to the row-compressed entry holding the bits.
struct BlockSparseSpec {
  const std::int32_t* row_ptr = nullptr;
  const std::int32_t* col_idx = nullptr;
  const std::int32_t* partial_row_ptr = nullptr;
  const std::int32_t* partial_col_idx = nullptr;
  const std::uint32_t* partial_bits = nullptr;
  const std::int32_t* col_ptr = nullptr;
  const std::int32_t* row_idx = nullptr;
  const std::int32_t* partial_col_ptr = nullptr;
  const std::int32_t* partial_row_idx = nullptr;
  const std::int32_t* col_partial_entry = nullptr;
  /// [mask row][key block] dense states (block_skipped / block_full / partial entry), so that a kernel
  /// whose tiles are not the mask's blocks classifies any tile in O(blocks it covers).
  const std::int32_t* block_state = nullptr;
  std::int32_t block_q = 0, block_k = 0, n_qblocks = 0, n_kblocks = 0;
  std::int32_t batch = 1, heads = 1;  // 1 = broadcast
  std::int32_t words_per_block = 0;
  std::int32_t block_q_shift = -1, block_k_shift = -1;  // log2 of the block sizes when powers of two, else -1
  KFA_HD bool enabled() const { return row_ptr != nullptr; }
  /// x / block_q and x / block_k (shifts when the sizes are powers of two, as the native ones are).
  KFA_HD std::int64_t qblock_of(std::int64_t x) const { return block_q_shift >= 0 ? x >> block_q_shift : x / block_q; }
  KFA_HD std::int64_t kblock_of(std::int64_t x) const { return block_k_shift >= 0 ? x >> block_k_shift : x / block_k; }
};

/// Packed sequences: sequence b has rows [cu_seqlens_q[b], cu_seqlens_q[b+1]) of q/o and keys
/// [cu_seqlens_k[b], cu_seqlens_k[b+1]) of k/v (device pointers, batch + 1 entries each). The
/// Shape then holds the number of sequences and the maximal lengths.
struct Varlen {
  const std::int32_t* cu_seqlens_q = nullptr;
  const std::int32_t* cu_seqlens_k = nullptr;
  std::int64_t total_q = 0, total_k = 0;  // rows of the packed q and k tensors (cu_seqlens_*[batch])
  KFA_HD bool enabled() const { return cu_seqlens_q != nullptr; }
};

/// A KV cache attended in place (kfa::forward_kvcache): the batch is padded (q, o, lse as a plain
/// call), and sequence b attends to keys [0, seqlens[b] + added) of k/v, where `added` keys were
/// appended by the call itself. The Shape's seqlen_k is the cache's capacity. With a page table, k
/// and v are [num_pages, page_size, heads_kv, dim] (their stride_b moves from page to page) and key j
/// of sequence b is row j % page_size of page block_table[b * table_stride + j / page_size].
struct KvCache {
  const std::int32_t* seqlens = nullptr;      // device, [batch]: keys in the cache before the call
  std::int32_t added = 0;                     // keys the call appended after them
  const std::int32_t* block_table = nullptr;  // device, [batch, table_stride]; nullptr = contiguous
  std::int64_t table_stride = 0;
  std::int32_t page_size = 0;
  std::int64_t num_pages = 0;
  KFA_HD bool enabled() const { return seqlens != nullptr; }
  KFA_HD bool paged() const { return block_table != nullptr; }
  /// Keys sequence b attends to.
  KFA_HD std::int64_t seqlen_k(std::int64_t b) const { return std::int64_t(seqlens[b]) + added; }
};

}  // namespace kfa::detail
