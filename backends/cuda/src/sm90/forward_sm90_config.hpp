#pragma once
// Tile shapes of the Hopper forward, per head_dim and kernel variant (dense, Featured): `consumers`
// warpgroups of 64 query rows each, `block_n` keys per K/V tile, `stages` K/V slots in flight. Shared
// memory holds the Q tile and the K/V ring (e.g. head_dim 128 dense: 32 KB of Q + 2 x 88 KB of K/V).
// Every choice compiles without spills; the measurements behind them are in
// docs/performance-cuda-hopper.md (176 keys at head_dim 128; three consumers at head_dim 64, 176 keys
// there, and a persistent head_dim 256 were measured slower or equal). The Featured kernel keeps
// 128-key tiles at head_dims 64 and 128:
// its block-mask walk and block bits need tiles that divide the mask's blocks (64, 128, 256), and its
// larger state spills at 176 keys and with three consumers.
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::hopper {

template <int Consumers, int BlockN, int Stages>
struct Sm90Tiles {
  static constexpr int consumers = Consumers, block_n = BlockN, stages = Stages;
};

// The dense kernel's tiles (nvcc splits -D values at commas: override them from a header).
#ifndef KFA_SM90_TILES_64
#define KFA_SM90_TILES_64 2, 128, 4
#endif
#ifndef KFA_SM90_TILES_96
#define KFA_SM90_TILES_96 2, 128, 2
#endif
#ifndef KFA_SM90_TILES_128
#define KFA_SM90_TILES_128 2, 176, 2
#endif
#ifndef KFA_SM90_TILES_256
#define KFA_SM90_TILES_256 2, 80, 2
#endif
// The Featured kernel's.
#ifndef KFA_SM90_FEATURED_TILES_64
#define KFA_SM90_FEATURED_TILES_64 2, 128, 4
#endif
#ifndef KFA_SM90_FEATURED_TILES_96
#define KFA_SM90_FEATURED_TILES_96 2, 128, 2
#endif
#ifndef KFA_SM90_FEATURED_TILES_128
#define KFA_SM90_FEATURED_TILES_128 2, 128, 2
#endif
#ifndef KFA_SM90_FEATURED_TILES_256
#define KFA_SM90_FEATURED_TILES_256 2, 80, 2
#endif

// Head dims whose dense blocks loop over tiles (persistent grid, unmasked calls only).
#ifndef KFA_SM90_PERSISTENT_MAX_DIM
#define KFA_SM90_PERSISTENT_MAX_DIM 128
#endif

#ifndef KFA_SM90_PINGPONG
#define KFA_SM90_PINGPONG 1
#endif
/// Whether the consumer warpgroups take turns issuing their GEMMs (see Sm90PingPong).
inline constexpr bool kSm90PingPong = KFA_SM90_PINGPONG != 0;

template <int D, bool Featured>
struct Sm90Config;
template <>
struct Sm90Config<64, false> : Sm90Tiles<KFA_SM90_TILES_64> {};
template <>
struct Sm90Config<96, false> : Sm90Tiles<KFA_SM90_TILES_96> {};
template <>
struct Sm90Config<128, false> : Sm90Tiles<KFA_SM90_TILES_128> {};
template <>
struct Sm90Config<256, false> : Sm90Tiles<KFA_SM90_TILES_256> {};
template <>
struct Sm90Config<64, true> : Sm90Tiles<KFA_SM90_FEATURED_TILES_64> {};
template <>
struct Sm90Config<96, true> : Sm90Tiles<KFA_SM90_FEATURED_TILES_96> {};
template <>
struct Sm90Config<128, true> : Sm90Tiles<KFA_SM90_FEATURED_TILES_128> {};
template <>
struct Sm90Config<256, true> : Sm90Tiles<KFA_SM90_FEATURED_TILES_256> {};

/// Launches the Hopper forward of one (head_dim, element type); defined in its own translation unit
/// (compiled for sm_90a only).
template <int D, class T>
void launch_forward_sm90(const detail::ForwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda::hopper
