#pragma once
// Tile shapes of the Tensor Core forward, one per head_dim. Each warp owns block_m / warps query
// rows (FA2 partitioning: Q split across warps, K/V tiles shared by the block); `stages` ring slots
// of K/V tiles are in flight through cp.async. Chosen on an H100 (docs/performance-cuda.md): 4-warp
// blocks of 255 registers run two per SM; head_dim 64 takes 128 keys per tile (fewer barriers and
// rescales per key), 96/128 take 64 (the S and O accumulators then fit the registers), head_dim 256
// runs one 8-warp block per SM (192 KB of shared memory).
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"

namespace kfa::cuda {

template <int BlockM, int BlockN, int Warps, int Stages, bool KvTogether>
struct ForwardTiles {
  static constexpr int block_m = BlockM, block_n = BlockN, warps = Warps, stages = Stages;
  static constexpr bool kv_together = KvTogether;  // a ring slot holds a K and V pair (else one of them)
};

// block_m, block_n, warps, stages, kv_together; overridable at build time for tuning experiments.
#ifndef KFA_CUDA_FWD_TILES_64
#define KFA_CUDA_FWD_TILES_64 128, 128, 4, 2, true
#endif
#ifndef KFA_CUDA_FWD_TILES_96
#define KFA_CUDA_FWD_TILES_96 128, 64, 4, 2, true
#endif
#ifndef KFA_CUDA_FWD_TILES_128
#define KFA_CUDA_FWD_TILES_128 128, 64, 4, 2, true
#endif
#ifndef KFA_CUDA_FWD_TILES_256
#define KFA_CUDA_FWD_TILES_256 128, 64, 8, 2, true
#endif

template <int D>
struct ForwardConfig;
template <>
struct ForwardConfig<64> : ForwardTiles<KFA_CUDA_FWD_TILES_64> {};
template <>
struct ForwardConfig<96> : ForwardTiles<KFA_CUDA_FWD_TILES_96> {};
template <>
struct ForwardConfig<128> : ForwardTiles<KFA_CUDA_FWD_TILES_128> {};
template <>
struct ForwardConfig<256> : ForwardTiles<KFA_CUDA_FWD_TILES_256> {};

/// Shared memory of the forward kernel for head_dim D: the Q tile and the ring of K/V slots, rows
/// padded to a multiple of 64 elements of 16 bits (see smem_tile.cuh).
template <int D>
constexpr int forward_smem_bytes() {
  using C = ForwardConfig<D>;
  constexpr int row_bytes = (D + 63) / 64 * 64 * 2;
  return C::block_m * row_bytes + C::stages * (C::kv_together ? 2 : 1) * C::block_n * row_bytes;
}

/// True when the call needs a kernel's Featured instance (packed sequences, a block mask, score
/// modifiers, dropout); the plain instance is the dense kernel.
inline bool forward_featured(const detail::ForwardArgs& a) {
  return a.varlen.enabled() || a.score.blocks.enabled() || a.score.softcap != 0.0f || a.score.alibi_slopes != nullptr ||
         a.score.dropout_p > 0.0f;
}

/// Launches the forward kernel of one (head_dim, element type); defined in its own translation unit.
template <int D, class T>
void launch_forward(const detail::ForwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
