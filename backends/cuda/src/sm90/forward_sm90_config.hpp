#pragma once
// Tile shapes of the Hopper forward, one per head_dim: `consumers` warpgroups of 64 query rows each,
// `block_n` keys per K/V tile, `stages` K/V slots in flight. Shared memory holds the Q tile and the
// K/V ring (e.g. head_dim 128: 32 KB of Q + 2 x 64 KB of K/V). Measured on an H200
// (docs/performance-cuda-hopper.md); each choice compiles without spills: 80 keys beat 64 for head_dim
// 256 by 2-9%; 176 keys for head_dim 128 (+3-4% non-causal, slower causal) and 3 consumers for head_dim
// 64 spill registers, so both keep 2 x 128.
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::hopper {

template <int Consumers, int BlockN, int Stages>
struct Sm90Tiles {
  static constexpr int consumers = Consumers, block_n = BlockN, stages = Stages;
};

#ifndef KFA_SM90_TILES_64
#define KFA_SM90_TILES_64 2, 128, 4
#endif
#ifndef KFA_SM90_TILES_96
#define KFA_SM90_TILES_96 2, 128, 2
#endif
#ifndef KFA_SM90_TILES_128
#define KFA_SM90_TILES_128 2, 128, 2
#endif
#ifndef KFA_SM90_TILES_256
#define KFA_SM90_TILES_256 2, 80, 2
#endif

#ifndef KFA_SM90_PERSISTENT_MAX_DIM
#define KFA_SM90_PERSISTENT_MAX_DIM 128
#endif

#ifndef KFA_SM90_PINGPONG
#define KFA_SM90_PINGPONG 1
#endif
/// Whether the consumer warpgroups take turns issuing their GEMMs (see Sm90PingPong).
inline constexpr bool kSm90PingPong = KFA_SM90_PINGPONG != 0;

template <int D>
struct Sm90Config;
template <>
struct Sm90Config<64> : Sm90Tiles<KFA_SM90_TILES_64> {};
template <>
struct Sm90Config<96> : Sm90Tiles<KFA_SM90_TILES_96> {};
template <>
struct Sm90Config<128> : Sm90Tiles<KFA_SM90_TILES_128> {};
template <>
struct Sm90Config<256> : Sm90Tiles<KFA_SM90_TILES_256> {};

/// Launches the Hopper forward of one (head_dim, element type); defined in its own translation unit
/// (compiled for sm_90a only).
template <int D, class T>
void launch_forward_sm90(const detail::ForwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda::hopper
