#pragma once
// Why this file: the parts of the Hopper backward (producer, consumer mainloop, epilogue, kernel shell)
// must agree on one block geometry, one shared-memory layout and one walk over the query tiles. This
// file is that agreement:
//   Sm90BwdShape    tiles (BK keys per block, 64 per consumer warpgroup; BQ query rows per step),
//                   byte sizes and offsets, register budgets, how dQ is split between the consumers;
//   Sm90BwdSmem     addresses of K, V, the Q / dO ring, the dS^T buffers, the dQ staging boxes and
//                   the row statistics;
//   Sm90BwdBarriers the mbarriers (K/V landed, Q/dO slot landed / free);
//   QueryWalk       the (query head, query tile) steps of one key tile, in the order both roles take.
// Glossary (as in the forward): BK = block_k keys, BQ = block_q query rows, D = head_dim, `consumers`
// warpgroups of 64 keys each, `stages` Q/dO slots.
#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "kfa/detail/tile_rules.hpp"
#include "sm80/backward/params.cuh"
#include "sm90/backward/launch.hpp"

namespace kfa::cuda::hopper {

#ifndef KFA_SM90_BWD_STAGES
#define KFA_SM90_BWD_STAGES 2
#endif

template <int D>
struct Sm90BwdShape {
  static_assert(D == 64 || D == 128, "the Hopper backward is instantiated for head_dim 64 and 128");
  static constexpr int consumers = 2;
  static constexpr int block_k = 64 * consumers;  // keys per block: K and V stay in shared memory
  static_assert(block_k == kSm90BwdBlockK, "launch.hpp");
  static constexpr int block_q = 64;              // query rows per step (the N of S^T = K Q^T)
  static constexpr int stages = KFA_SM90_BWD_STAGES;
  static constexpr int threads = 128 * (consumers + 1);
  static constexpr int col_blocks = D / 64;                // 64-element (128-byte) column blocks
  static constexpr int kv_bytes = col_blocks * block_k * 128;  // the K or the V tile
  static constexpr int q_bytes = col_blocks * block_q * 128;   // one Q or dO slot
  static constexpr int ds_bytes = block_k * block_q * 2;       // dS^T [keys][queries], one column block
  static_assert(block_q == 64, "dS^T is one 128-byte column block wide");
  // dQ = dS K: at head_dim >= 128 the consumers split its columns (each D / consumers of them, over
  // all BK keys: both halves of dS^T are read, a barrier of both consumers per step); at 64 each
  // consumer adds the product over its own 64 keys (twice the atomics, no barrier between them).
  static constexpr bool dq_split_cols = D >= 128;
  static constexpr int dq_cols = dq_split_cols ? D / consumers : D;
  static constexpr int dq_keys = dq_split_cols ? block_k : 64;
  static constexpr int k_offset = 0, v_offset = kv_bytes, q_offset = 2 * kv_bytes;
  static constexpr int dout_offset = q_offset + stages * q_bytes;
  static constexpr int ds_offset = dout_offset + stages * q_bytes;  // two buffers (steps alternate)
  // dQ is staged per consumer in the boxes of the accumulator's tensor map (32 fp32 columns x BQ rows,
  // 128-byte swizzle) and added to global memory by TMA reductions.
  static constexpr int dq_box_bytes = block_q * 128, dq_boxes = dq_cols / 32;
  static constexpr int dq_offset = ds_offset + 2 * ds_bytes;
  static constexpr int stats_offset = dq_offset + consumers * dq_boxes * dq_box_bytes;  // [consumer][buffer][lse | D][BQ] floats
  static constexpr int bar_offset = stats_offset + consumers * 2 * 2 * block_q * 4;
  static constexpr int n_bars = 1 + 2 * stages;
  static constexpr int smem_bytes = bar_offset + n_bars * 8 + 1024;  // + alignment slack
  static constexpr int producer_regs = 24, consumer_regs = 240;
  // setmaxnreg moves registers within the block's launch allocation (threads x the launch bound's
  // per-thread count, 168 at 384 threads), so the roles' budgets must sum to at most that.
  static constexpr int launch_regs = 65536 / threads / 8 * 8;
  static_assert(producer_regs * 128 + consumer_regs * 128 * consumers <= launch_regs * threads, "register budget");
  static_assert(smem_bytes <= 227 * 1024, "shared memory");
  // Named barriers: 1 + w among consumer w's threads, 1 + consumers among all consumers; per consumer
  // w, its dQ staging boxes full / empty again, between it and the dQ writer warp.
  static constexpr int bar_consumer = 1, bar_all = 1 + consumers;
  static constexpr int bar_dq_full = 2 + consumers, bar_dq_empty = 2 + 2 * consumers, dq_sync_threads = 128 + 32;
};

/// Barriers of the block: K and V landed (once), Q and dO of a ring slot landed, slot free again
/// (one arrival per consumer warp once its products that read the slot are complete).
template <int D>
struct Sm90BwdBarriers {
  using F = Sm90BwdShape<D>;
  std::uint32_t base;
  __device__ std::uint32_t kv_full() const { return base; }
  __device__ std::uint32_t q_full(int s) const { return base + 8 * (1 + s); }
  __device__ std::uint32_t q_free(int s) const { return base + 8 * (1 + F::stages + s); }
  __device__ void init() const {
    mbar_init(kv_full(), 1);
    for (int s = 0; s < F::stages; ++s) {
      mbar_init(q_full(s), 1);
      mbar_init(q_free(s), 4 * F::consumers);
    }
    fence_barrier_init();
  }
};

/// Shared memory from its 1024-byte aligned base: tiles in the 128-byte swizzled layout TMA writes
/// (column blocks of 64 elements, all rows of a block contiguous).
template <int D>
struct Sm90BwdSmem {
  using F = Sm90BwdShape<D>;
  std::uint32_t base;  // shared-window address
  unsigned char* ptr;  // the same, as a generic pointer (the row statistics are read as floats)
  __device__ std::uint32_t k() const { return base + F::k_offset; }
  __device__ std::uint32_t v() const { return base + F::v_offset; }
  __device__ std::uint32_t q(int s) const { return base + F::q_offset + s * F::q_bytes; }
  __device__ std::uint32_t dout(int s) const { return base + F::dout_offset + s * F::q_bytes; }
  __device__ std::uint32_t ds(int buf) const { return base + F::ds_offset + buf * F::ds_bytes; }
  /// Consumer w's dQ staging boxes (dq_boxes of them, dq_box_bytes apart).
  __device__ std::uint32_t dq(int w) const { return base + F::dq_offset + w * F::dq_boxes * F::dq_box_bytes; }
  /// lse (log2 units) and D of the BQ rows of a step, one copy per consumer, two buffers.
  __device__ float* lse(int consumer, int buf) const {
    return reinterpret_cast<float*>(ptr + F::stats_offset) + ((consumer * 2 + buf) * 2) * F::block_q;
  }
  __device__ float* dsum(int consumer, int buf) const { return lse(consumer, buf) + F::block_q; }
  __device__ Sm90BwdBarriers<D> barriers() const { return {base + F::bar_offset}; }
};

/// The steps of one key tile [n0, n0 + BK) of kv head hk: every query tile that sees a key of it, of
/// every query head sharing hk (GQA sums dK and dV in the block, no reduction pass), tiles fastest.
/// Producer and consumers build it the same way and advance it once per step.
struct QueryWalk {
  std::int64_t steps = 0;          // (query head, query tile) pairs
  std::int64_t m_first = 0, m_last = 0;
  std::int64_t h = 0, m0 = 0;      // the current step: query head, first row of its tile
  __host__ __device__ QueryWalk(const kfa::detail::Shape& s, const kfa::detail::ScoreSpec& sc, std::int64_t hk,
                                std::int64_t n0, std::int64_t block_k, std::int64_t block_q) {
    const std::int64_t n_end = n0 + block_k < s.seqlen_k ? n0 + block_k : s.seqlen_k;
    const kfa::detail::VisibleRange rows = kfa::detail::visible_queries(n0, n_end, s, sc);
    const std::int64_t group = s.heads / s.heads_kv;
    const std::int64_t tile0 = rows.begin / block_q;
    const std::int64_t ntiles = rows.begin < rows.end ? (rows.end + block_q - 1) / block_q - tile0 : 0;
    steps = group * ntiles;
    m_first = tile0 * block_q;
    m_last = (tile0 + ntiles - 1) * block_q;
    h = hk * group;
    m0 = m_first;
  }
  __host__ __device__ std::int64_t next_h() const { return m0 == m_last ? h + 1 : h; }
  __host__ __device__ std::int64_t next_m0(std::int64_t block_q) const { return m0 == m_last ? m_first : m0 + block_q; }
  __host__ __device__ void advance(std::int64_t block_q) {
    const std::int64_t nh = next_h();
    m0 = next_m0(block_q);
    h = nh;
  }
  /// The same steps as 32-bit nested loops (positions < 2^30), for the warps of the producer
  /// warpgroup, which have 32 registers: f(h, m0, last) per step, in the walk's order.
  template <class Fn>
  __device__ __forceinline__ void for_each_step(std::int64_t group, std::int64_t block_q, Fn&& f) const {
    if (steps == 0) return;
    const int h_end = static_cast<int>(h + group), first = static_cast<int>(m_first), last = static_cast<int>(m_last);
    const int bq = static_cast<int>(block_q);
    for (int hh = static_cast<int>(h); hh < h_end; ++hh)
      for (int r = first; r <= last; r += bq) f(hh, r, hh + 1 == h_end && r == last);
  }
};

}  // namespace kfa::cuda::hopper
