#pragma once
// Why this file: every part of the Hopper forward (producer, mainloop, epilogue, kernel shell) must
// agree on one block geometry and one shared-memory layout, and count the K/V ring and the Q buffers
// the same way. This file is that agreement: Sm90Shape (tile sizes, byte sizes and offsets, register
// budgets), Sm90Smem (the addresses of the Q tile, the ring slots and the walk words), Sm90Barriers
// (the mbarriers) and Sm90PipelineState (the position in a ring: slot index and phase parity), which
// the producer and the consumers advance in the same order.
#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "sm90/forward_sm90_config.hpp"

namespace kfa::cuda::hopper {

template <int D, bool Featured>
struct Sm90Shape : Sm90Config<D, Featured> {
  using C = Sm90Config<D, Featured>;
  static constexpr int block_m = 64 * C::consumers;
  static constexpr int threads = 128 * (C::consumers + 1);
  static constexpr int col_blocks = (D + 63) / 64;           // 64-element (128-byte) column blocks
  static constexpr int q_bytes = col_blocks * block_m * 128;
  static constexpr int q_part_bytes = col_blocks * 64 * 128;  // one consumer's 64 rows
  static constexpr int kv_bytes = col_blocks * C::block_n * 128;  // one K or V tile
  static constexpr int bar_offset = q_bytes + 2 * C::stages * kv_bytes;
  static constexpr int n_bars = 2 * C::consumers + 3 * C::stages;
  // Featured: one word per ring slot (which key tile it holds, see Sm90Visit) and per consumer (whether
  // its tile visits any key tile), written by the producer before the arrival that publishes the slot.
  static constexpr int meta_offset = bar_offset + n_bars * 8;
  static constexpr int smem_bytes = meta_offset + 4 * (C::stages + C::consumers) + 1024;  // + alignment slack
  // setmaxnreg budgets (multiples of 8, 64K registers per SM): the producer keeps 24.
  static constexpr int producer_regs = 24;
  static constexpr int consumer_regs = C::consumers == 3 ? 160 : 240;
  // setmaxnreg moves registers within the block's launch allocation (threads x the launch bound's count).
  static_assert(producer_regs * 128 + consumer_regs * 128 * C::consumers <= 65536 / threads / 8 * 8 * threads,
                "register budget");
  // A block may loop over several tiles (head dims up to KFA_SM90_PERSISTENT_MAX_DIM).
  static constexpr bool persistent = D <= KFA_SM90_PERSISTENT_MAX_DIM;
  // The Featured kernel's consumers hold more state; with the persistent loop's head_dim 96 spilled.
  static constexpr bool featured_persistent = D == 64 || D == 128;
  static_assert(C::block_n % 16 == 0 && C::block_n <= 256 && D % 16 == 0, "wgmma shapes");
};

/// The block's mbarriers: per consumer, Q landed / Q buffer free again (its O store has read it);
/// per ring slot, K landed / V landed / slot free (every consumer warp is done with it).
template <int D, bool Featured>
struct Sm90Barriers {
  using F = Sm90Shape<D, Featured>;
  static constexpr int C = F::consumers, S = F::stages;
  std::uint32_t base;
  __device__ std::uint32_t q_full(int w) const { return base + 8 * w; }
  __device__ std::uint32_t q_free(int w) const { return base + 8 * (C + w); }
  __device__ std::uint32_t k_full(int s) const { return base + 8 * (2 * C + s); }
  __device__ std::uint32_t v_full(int s) const { return base + 8 * (2 * C + S + s); }
  __device__ std::uint32_t kv_free(int s) const { return base + 8 * (2 * C + 2 * S + s); }
  __device__ void init() const {
    for (int w = 0; w < C; ++w) {
      mbar_init(q_full(w), 1);
      mbar_init(q_free(w), 1);
    }
    for (int s = 0; s < S; ++s) {
      mbar_init(k_full(s), 1);
      mbar_init(v_full(s), 1);
      mbar_init(kv_free(s), 4 * C);  // one arrival per consumer warp
    }
    fence_barrier_init();
  }
};

/// The block's shared memory, from its 1024-byte aligned base (128-byte swizzle atoms): the Q tile
/// (`consumers` parts of 64 rows, each column block of all block_m rows contiguous; the epilogue
/// stages O there), the ring's K tiles, its V tiles, the mbarriers, and the Featured walk words.
template <int D, bool Featured>
struct Sm90Smem {
  using F = Sm90Shape<D, Featured>;
  std::uint32_t base;
  __device__ std::uint32_t q() const { return base; }
  __device__ std::uint32_t k(int s) const { return base + F::q_bytes + s * F::kv_bytes; }
  __device__ std::uint32_t v(int s) const { return base + F::q_bytes + (F::stages + s) * F::kv_bytes; }
  __device__ Sm90Barriers<D, Featured> barriers() const { return {base + F::bar_offset}; }
  /// The word of ring slot s (which key tile it holds) ...
  __device__ std::uint32_t slot_word(int s) const { return base + F::meta_offset + 4 * s; }
  /// ... and consumer w's (whether its tile visits any key tile).
  __device__ std::uint32_t tile_word(int w) const { return base + F::meta_offset + 4 * (F::stages + w); }
};

/// A position in a ring of `Stages` buffers (like CUTLASS's PipelineState): the slot `index` and the
/// parity of its lap, `phase`. Producer and consumers start at {0, 0} and advance() once per buffer
/// they fill or take, in the same order, so they meet on the same slots. A consumer waits for the
/// slot's "full" barrier with `phase`; the producer waits for its "free" barrier with free_phase(),
/// the phase the consumers completed on the previous lap (on the first lap the phase before the
/// barrier's first, which counts as complete: the wait returns at once).
template <int Stages>
struct Sm90PipelineState {
  int index = 0;
  std::uint32_t phase = 0;
  __device__ void advance() {
    if (++index == Stages) {
      index = 0;
      phase ^= 1u;
    }
  }
  __device__ std::uint32_t free_phase() const { return phase ^ 1u; }
};

}  // namespace kfa::cuda::hopper
