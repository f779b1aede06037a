#pragma once
// The split-KV decode kernel's shapes and launch parameters (host and device). Decode (a few query
// tokens against a long KV cache) is bound by the bandwidth of reading K and V once, so a block
// packs the query heads of one KV head (GQA packing: group x seqlen_q rows, 16 per m16 fragment)
// and streams its share of the keys through a deep cp.async ring, four warps splitting each key tile
// (16 keys per warp); the keys of a sequence are split across blocks so that every SM streams.
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::decode {

/// Tile shape per head_dim: block_n keys per ring slot (a K and a V tile), `stages` slots. About 96 KB
/// of slots at head_dim 64 and 128 (two blocks per SM), 192 KB at 256 (one).
template <int D>
struct DecodeShape {
  static constexpr int warps = 4, threads = warps * 32;
  static constexpr int block_m = 16;               // packed query rows per block (one m16 fragment)
  static constexpr int block_n = 16 * warps;       // keys per slot: 16 per warp
  static constexpr int stages = D == 64 ? 6 : 3;
  static constexpr int row_elems = (D + 63) / 64 * 64;  // SwizzledTile<D>::stride
  static constexpr int tile_bytes = block_n * row_elems * 2;
  static constexpr int q_bytes = block_m * row_elems * 2;
  static constexpr int smem_bytes = q_bytes + stages * 2 * tile_bytes;
  static constexpr int blocks_per_sm = smem_bytes <= 110 * 1024 ? 2 : 1;
  // the epilogue's cross-warp reduction reuses the slots: [warps][block_m][D + 4] floats
  static_assert(warps * block_m * (D + 4) * 4 + 2 * warps * block_m * 4 <= stages * 2 * tile_bytes, "reduction fits");
};

struct DecodeParams {
  detail::ForwardArgs a;  // q, o, lse; k, v the cache (a.kv: lengths, page table); a.score resolved
  int group = 1;          // query heads per KV head
  int packed_rows = 1;    // group * seqlen_q rows of one (batch, KV head)
  int row_tiles = 1;      // ceil(packed_rows / block_m)
  int splits = 1;         // key ranges per sequence (blocks), merged by the combine kernel when > 1
  float scale_log2 = 0;
  float* o_part = nullptr;    // [splits][batch][heads_kv][row_tiles * block_m][D], fp32 (splits > 1)
  float* lse_part = nullptr;  // [splits][batch][heads_kv][row_tiles * block_m], natural log
};

}  // namespace kfa::cuda::decode
