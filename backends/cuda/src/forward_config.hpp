#pragma once
// Tile shapes of the Tensor Core forward, one per head_dim. Each warp owns block_m / warps query
// rows (FA2 partitioning: Q split across warps, K/V tiles shared by the block); `stages` K/V tiles
// are in flight in a cp.async ring. Chosen so 128-thread blocks fit two per SM (registers and
// shared memory), and head_dim 256 one 256-thread block per SM.
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"

namespace kfa::cuda {

template <int D>
struct ForwardConfig;
template <>
struct ForwardConfig<64> {
  static constexpr int block_m = 128, block_n = 64, warps = 4, stages = 3;
};
template <>
struct ForwardConfig<96> {
  static constexpr int block_m = 128, block_n = 64, warps = 4, stages = 3;
};
template <>
struct ForwardConfig<128> {
  static constexpr int block_m = 128, block_n = 64, warps = 4, stages = 3;
};
template <>
struct ForwardConfig<256> {
  static constexpr int block_m = 128, block_n = 64, warps = 8, stages = 2;
};

/// Launches the forward kernel of one (head_dim, element type); defined in its own translation unit.
template <int D, class T>
void launch_forward(const detail::ForwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
