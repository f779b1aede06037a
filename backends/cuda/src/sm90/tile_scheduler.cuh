#pragma once
// Why this file: which work a block of the Hopper forward does, in one place. Sm90Tile is one
// (batch, head, query tile) and the key tiles its rows see (packed sequences: the sequence's bounds);
// Sm90TileScheduler is the order in which a block takes tile ids (head-major, longest first, through
// common::schedule_tile) and the persistent loop over them, on the device, and the grid that the
// launcher starts, on the host. Producer and consumers walk the same ids in the same order.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "arch/device_attribute.hpp"
#include "common/tile_scheduler.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "sm90/forward_shape.cuh"

namespace kfa::cuda::hopper {

/// One (batch, head, query tile) of the persistent loop and the key tiles its rows see, in 32-bit
/// fields (positions are < 2^30, checked by supports_forward) to keep the consumers' registers free.
/// Featured: the tile's sequence (packed varlen: its first rows in the packed q/o and k/v and its own
/// lengths; padded: 0 and the call's lengths), and rows/keys are positions within it.
template <int D, bool Featured>
struct Sm90Tile {
  int batch, head, head_kv, row0;              // row0: within the sequence
  int key_begin, key_end;                      // key tiles [key_begin, key_end) the rows can see
  int unmasked_begin, unmasked_end;            // key tiles that need no window / sequence-end mask
  int q_begin, k_begin, seqlen_q, seqlen_k;    // the sequence (Featured; else 0 and the call's)
  __device__ Sm90Tile(std::int64_t id, std::int64_t n_qtiles, const detail::ForwardArgs& a) {
    constexpr int BM = Sm90Shape<D, Featured>::block_m, BN = Sm90Shape<D, Featured>::block_n;
    const common::TileCoord c = common::schedule_tile(id, n_qtiles, a.shape, a.score);
    batch = static_cast<int>(c.batch), head = static_cast<int>(c.head), head_kv = static_cast<int>(c.head_kv);
    detail::Shape s = a.shape;
    if constexpr (Featured) {
      const detail::SequenceBounds sb = detail::sequence_bounds(a.shape, a.varlen, c.batch);
      s = detail::sequence_shape(a.shape, sb);
      q_begin = static_cast<int>(sb.q_begin), k_begin = static_cast<int>(sb.k_begin);
    } else {
      q_begin = 0, k_begin = 0;
    }
    seqlen_q = static_cast<int>(s.seqlen_q), seqlen_k = static_cast<int>(s.seqlen_k);
    const std::int64_t r0 = c.q_tile * BM;
    const std::int64_t row_end = s.seqlen_q - r0 < BM ? s.seqlen_q : r0 + BM;
    const detail::KeyTrip trip = detail::key_trip(r0, row_end, BN, s, a.score);  // empty when r0 >= row_end
    row0 = static_cast<int>(r0);
    key_begin = static_cast<int>(trip.begin);
    key_end = static_cast<int>(trip.end);
    unmasked_begin = static_cast<int>(trip.unmasked_begin);
    unmasked_end = static_cast<int>(trip.unmasked_end);
  }
  /// A tile past its packed sequence's end: no block work at all (producer and consumers skip it).
  __device__ bool past_end() const { return Featured && row0 >= seqlen_q; }
  __device__ int row_end() const {
    constexpr int BM = Sm90Shape<D, Featured>::block_m;
    return seqlen_q - row0 < BM ? seqlen_q : row0 + BM;
  }
  __device__ detail::Shape shape(const detail::Shape& call) const {
    detail::Shape s = call;
    s.seqlen_q = seqlen_q;
    s.seqlen_k = seqlen_k;
    return s;
  }
};

/// Batch coordinate of a tensor map: 0 for a tensor without batch stride (packed varlen, or a tensor
/// shared by the batches), whose map make_tensor_map builds with one batch.
__device__ __forceinline__ int map_batch(const detail::Tensor4& t, int batch) { return t.stride_b != 0 ? batch : 0; }

/// The tile ids of a block. Persistent (one block per SM): block b takes tiles b, b + grid, b + 2 grid,
/// ... (head-major, longest first); otherwise one block per tile, whose in-order dispatch keeps the
/// K/V of a few heads hot in L2. A tile past its packed sequence's end is skipped by everyone (it
/// counts no Q buffer and no ring slot).
template <int D, bool Featured>
struct Sm90TileScheduler {
  using F = Sm90Shape<D, Featured>;
  using Tile = Sm90Tile<D, Featured>;
  // Tile ids: 32-bit in the Featured kernel (fewer than 2^31 tiles, checked by supports_forward), whose
  // producer needs the registers for its walk.
  using Id = std::conditional_t<Featured, int, std::int64_t>;
  static constexpr bool persistent = Featured ? F::featured_persistent : F::persistent;

  std::int64_t n_qtiles;  // query tiles per (batch, head); varlen: of the longest sequence
  Id n_work;

  __device__ Sm90TileScheduler(const detail::ForwardArgs& a, std::int64_t n_qtiles_)
      : n_qtiles(n_qtiles_), n_work(static_cast<Id>(a.shape.batch * a.shape.heads * n_qtiles_)) {}
  __device__ Id first() const { return blockIdx.x; }
  __device__ bool valid(Id id) const { return id < n_work; }
  /// The block's tile after `id` (without the persistent loop: none).
  __device__ Id next(Id id) const { return persistent ? id + Id(gridDim.x) : n_work; }
  __device__ Tile tile(Id id, const detail::ForwardArgs& a) const { return Tile(id, n_qtiles, a); }

  /// Host: the number of blocks for `work` tiles. Persistent (one block per SM, tiles taken
  /// round-robin) only when every tile costs the same: with causal or windowed masks the blocks drift
  /// apart over many heads and lose the L2 reuse of K/V (d128 causal 16k ran at 0.73x of one block per
  /// tile on an H200), which the hardware's in-order block dispatch keeps. Block masks and packed
  /// sequences make tiles unequal too.
  static std::int64_t grid(const detail::ForwardArgs& a, std::int64_t work) {
    const bool uniform = a.score.window_left < 0 && a.score.window_right < 0 && !a.score.blocks.enabled() &&
                         !a.varlen.enabled();
    const std::int64_t sms = std::max(1, device_attribute<cudaDevAttrMultiProcessorCount>());
    return persistent && uniform && work > sms ? sms : work;
  }
};

}  // namespace kfa::cuda::hopper
