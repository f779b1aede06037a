#pragma once
// Why this file: the feature policy (kfa/detail/feature_policy.hpp) on the Hopper backward's S^T
// fragment, where keys are the rows and queries the columns (the transpose of the forward's
// fragment_policy.cuh view). A consumer warp holds keys key_w + [0, 16) of its warpgroup's 64: lane
// (g = lane / 4, t = lane % 4) has keys g (hh = 0) and g + 8 (hh = 1) of queries m0 + 8 i + 2 t + e
// (i < BQ / 8, e < 2), element 4 i + 2 hh + e of the accumulator. Each helper gives one 32-bit word
// with bit 4 i + 2 hh + e per element, made before the scores are needed (while the S^T product
// runs), so the softmax applies a feature with a shift and a select per element:
//   sm90_bwd_block_bits   the block mask's element bits of a partial tile (block_allows);
//   sm90_bwd_dropout_keep the dropout keep flags (the Philox bytes of kfa/detail/philox.hpp).
#include <cstdint>

#include "kfa/detail/feature_policy.hpp"
#include "policy/fragment_policy.cuh"

namespace kfa::cuda::hopper {

/// Block-mask bits of the lane's 32 elements for the step's query tile [m0, m0 + 64) (one mask row:
/// blocks have at least 64 rows) and the warp's 16 keys from key_w (one mask block: blocks have at
/// least 64 columns). A partial block's bits of one row are contiguous, so keys g and g + 8 come from
/// one word (key_w is a multiple of 16).
__device__ __forceinline__ std::uint32_t sm90_bwd_block_bits(const kfa::detail::BlockSparseSpec& m, int batch,
                                                             int head, int m0, int key_w, int g, int t) {
  const int q_shift = 31 - __clz(m.block_q), k_shift = 31 - __clz(m.block_k);
  const int qb = m0 >> q_shift, kb = key_w >> k_shift;
  if (qb >= m.n_qblocks || kb >= m.n_kblocks) return 0u;
  const std::int32_t v = m.block_state[kfa::detail::block_mask_row(m, batch, head, qb) * m.n_kblocks + kb];
  if (v == kfa::detail::block_full) return ~0u;
  if (v < 0) return 0u;
  const std::uint32_t* bits = m.partial_bits + std::int64_t(v) * m.words_per_block;
  const int col = key_w + g - (kb << k_shift);               // key g's column in the block
  const int row0 = (m0 & (m.block_q - 1)) + 2 * t;            // query 2t's row in the block
  std::uint32_t allow = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int el = ((row0 + 8 * i + e) << k_shift) + col;
      const std::uint32_t w = bits[el >> 5] >> (el & 31);  // keys g, g + 8: bits 0 and 8
      allow |= (w & 1u) << (4 * i + e) | ((w >> 8) & 1u) << (4 * i + 2 + e);
    }
  return allow;
}

/// Dropout keep flags of the lane's 32 elements: the warp's 16 keys are one column group of the
/// Philox blocks of queries m0 + [0, 64), so the warp needs 64 blocks; lane L makes those of queries
/// 2L and 2L + 1 as 16 keep bits each (bit j: key key_w + j), and lane (g, t) gathers its columns
/// 8 i + 2 t + e from lane 4 i + t by 8 shuffles. All 32 lanes call it together. `batch` includes the
/// call's batch_base.
__device__ __forceinline__ std::uint32_t sm90_bwd_dropout_keep(const kfa::detail::DropoutPolicy& d, std::int64_t batch,
                                                               std::int64_t head, int m0, int key_w, int lane) {
  const std::uint32_t thr4 = d.threshold * 0x01010101u;
  std::uint32_t mine = 0;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const kfa::detail::Philox4 w = kfa::detail::dropout_words(d.key, batch, head, m0 + 2 * lane + e, key_w);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      // word k, bytes 0..3: columns 2k, 2k + 1, 2k + 8, 2k + 9 (philox.hpp's byte order)
      const std::uint32_t nib = policy::keep_nibble(w.w[k], thr4);
      mine |= ((nib & 3u) << (2 * k) | ((nib >> 2) & 3u) << (2 * k + 8)) << (16 * e);
    }
  }
  const int g = lane / 4, t = lane % 4;
  std::uint32_t keep = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const std::uint32_t v = __shfl_sync(0xffffffffu, mine, 4 * i + t);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
#pragma unroll
      for (int e = 0; e < 2; ++e) keep |= ((v >> (16 * e + g + 8 * hh)) & 1u) << (4 * i + 2 * hh + e);
  }
  return keep;
}

}  // namespace kfa::cuda::hopper
