#pragma once
// Tile shapes of the Tensor Core forward, one per head_dim. Each warp owns block_m / warps query
// rows (FA2 partitioning: Q split across warps, K/V tiles shared by the block); `stages` K/V tiles
// are in flight in a cp.async ring. Chosen so 128-thread blocks fit two per SM (registers and
// shared memory), and head_dim 256 one 256-thread block per SM.
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
#define KFA_CUDA_FWD_TILES_64 128, 64, 4, 3, false
#endif
#ifndef KFA_CUDA_FWD_TILES_96
#define KFA_CUDA_FWD_TILES_96 128, 64, 4, 3, false
#endif
#ifndef KFA_CUDA_FWD_TILES_128
#define KFA_CUDA_FWD_TILES_128 128, 64, 4, 3, false
#endif
#ifndef KFA_CUDA_FWD_TILES_256
#define KFA_CUDA_FWD_TILES_256 128, 64, 8, 2, false
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

/// Launches the forward kernel of one (head_dim, element type); defined in its own translation unit.
template <int D, class T>
void launch_forward(const detail::ForwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
