#pragma once
// The split-KV decode kernel's shapes and launch parameters (host and device). Decode (a few query
// tokens against a long KV cache) is bound by the bandwidth of reading K and V once, so a block
// packs the query heads of one KV head (GQA packing: group x seqlen_q rows, 16 per m16 fragment)
// and streams its share of the keys through a deep cp.async ring, four warps splitting each key tile
// (16 keys per warp); the keys of a sequence are split across blocks so that every SM streams.
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::decode {

/// Tile shape per head_dim and producer. block_n keys per ring slot (a K and a V tile), `stages`
/// slots, four consumer warps (16 keys of each tile per warp).
///   cp.async (sm_80 and sm_90): every thread copies 16-byte chunks into swizzled tiles;
///   Bulk (sm_90): a fifth warp issues one bulk copy per key row (cp.async.bulk, completing on the
///   slot's mbarrier) into rows padded by 16 bytes (ldmatrix then meets no bank conflicts), so many
///   more bytes are in flight per SM for the same issue cost; contiguous and paged caches alike.
/// About 100 KB of slots at head_dim 64 and 128 (two blocks per SM), 200 KB at 256 (one).
template <int D, bool Bulk = false>
struct DecodeShape {
  static constexpr bool bulk = Bulk;
  static constexpr int warps = 4;                             // consumers
  static constexpr int threads = (warps + (Bulk ? 1 : 0)) * 32;
  static constexpr int block_m = 16;                          // packed query rows per block (one m16 fragment)
  static constexpr int block_n = 16 * warps;                  // keys per slot: 16 per consumer warp
  static constexpr int swizzled_row_bytes = (D + 63) / 64 * 128;  // SwizzledTile<D>::row_bytes
  static constexpr int kv_row_bytes = Bulk ? 2 * D + 16 : swizzled_row_bytes;
  static constexpr int stages = D == 64 ? (Bulk ? 5 : 6) : 3;
  static constexpr int tile_bytes = block_n * kv_row_bytes;
  static constexpr int q_bytes = block_m * swizzled_row_bytes;
  static constexpr int ring_bytes = stages * 2 * tile_bytes;
  static constexpr int barrier_bytes = Bulk ? 2 * stages * 8 : 0;  // full[stages], empty[stages]
  static constexpr int smem_bytes = q_bytes + ring_bytes + barrier_bytes;
  static constexpr int blocks_per_sm = smem_bytes <= 112 * 1024 ? 2 : 1;
  // the epilogue's cross-warp reduction reuses the ring: [warps][block_m][D + 4] floats and two [warps][block_m]
  static_assert(warps * block_m * (D + 4) * 4 + 2 * warps * block_m * 4 <= ring_bytes, "reduction fits");
};

struct DecodeParams {
  detail::ForwardArgs a;  // q, o, lse; k, v the cache (a.kv: lengths, page table); a.score resolved
  int group = 1;          // query heads per KV head
  int packed_rows = 1;    // group * seqlen_q rows of one (batch, KV head)
  int row_tiles = 1;      // ceil(packed_rows / block_m)
  int splits = 1;         // key ranges per sequence (blocks), merged by the combine kernel when > 1
  bool bulk = false;      // the bulk-copy producer (sm_90)
  float scale_log2 = 0;
  float* o_part = nullptr;    // [splits][batch][heads_kv][row_tiles * block_m][D], fp32 (splits > 1)
  float* lse_part = nullptr;  // [splits][batch][heads_kv][row_tiles * block_m], natural log
};

}  // namespace kfa::cuda::decode
