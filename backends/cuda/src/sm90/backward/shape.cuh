#pragma once
// Why this file: the parts of the Hopper backward (producer, consumer mainloop, dQ writer, kernel
// shell) must agree on one block geometry and one shared-memory layout. This file is that agreement:
//   Sm90BwdShape    tiles (BK keys per block, 64 per consumer warpgroup; BQ query rows per step),
//                   byte sizes and offsets, register budgets, how dQ is split between the consumers,
//                   per (head_dim, Featured): the dense head_dim 64 instance takes 128-row steps;
//   Sm90BwdSmem     addresses of K, V, the Q / dO ring with each slot's row statistics and step
//                   word, the dS^T buffers, the dQ staging boxes with their step words, and the
//                   block's record (walk.cuh: its sequence and the extent of its walk);
//   Sm90BwdBarriers the mbarriers (K/V landed, Q/dO slot landed / free).
// Glossary (as in the forward): BK = block_k keys, BQ = block_q query rows, D = head_dim, `consumers`
// warpgroups of 64 keys each, `stages` Q/dO slots.
#include <cstdint>

#include "arch/sm90_ptx.cuh"
#include "sm90/backward/launch.hpp"

namespace kfa::cuda::hopper {

#ifndef KFA_SM90_BWD_STAGES
#define KFA_SM90_BWD_STAGES 2
#endif

#ifndef KFA_SM90_BWD_DENSE64_BLOCK_Q
#define KFA_SM90_BWD_DENSE64_BLOCK_Q 128
#endif

template <int D, bool Featured>
struct Sm90BwdShape {
  static_assert(D == 64 || D == 128, "the Hopper backward is instantiated for head_dim 64 and 128");
  static constexpr int consumers = 2;
  static constexpr int block_k = 64 * consumers;  // keys per block: K and V stay in shared memory
  static_assert(block_k == kSm90BwdBlockK, "launch.hpp");
  // Query rows per step (the N of S^T = K Q^T). At head_dim 64 every product of a 64-row step is
  // 64 wide, so the dense instance takes 128 rows: S^T and dP^T twice as wide, half the dQ additions
  // per row, the step's fixed costs over twice the work. The Featured instance keeps 64 (its block
  // bits and dropout flags are one 32-bit word per thread and step).
  static constexpr int block_q = D == 64 && !Featured ? KFA_SM90_BWD_DENSE64_BLOCK_Q : 64;
  static_assert(block_q == 64 || block_q == 128, "a step is one or two 64-row halves");
  static constexpr int stages = KFA_SM90_BWD_STAGES;
  static constexpr int threads = 128 * (consumers + 1);
  static constexpr int col_blocks = D / 64;                // 64-element (128-byte) column blocks
  static constexpr int kv_bytes = col_blocks * block_k * 128;  // the K or the V tile
  static constexpr int q_bytes = col_blocks * block_q * 128;   // one Q or dO slot
  static constexpr int ds_bytes = block_k * block_q * 2;       // dS^T [keys][queries], BQ / 64 column blocks
  // dQ = dS K, split between the consumers in one of three ways:
  //   BQ 128: by rows, each consumer's 64 query rows over all BK keys;
  //   head_dim >= 128: by columns, each D / consumers of them over all BK keys;
  //   else (64 x 64): each consumer adds the product over its own 64 keys (twice the additions).
  // The first two read both consumers' halves of dS^T: a barrier of both consumers per step.
  static constexpr bool dq_split_rows = block_q > 64;
  static constexpr bool dq_split_cols = !dq_split_rows && D >= 128;
  static constexpr bool dq_reads_all_keys = dq_split_rows || dq_split_cols;
  static constexpr int dq_rows = 64;  // rows of a consumer's dQ fragment
  static constexpr int dq_cols = dq_split_cols ? D / consumers : D;
  static constexpr int dq_keys = dq_reads_all_keys ? block_k : 64;
  static constexpr int k_offset = 0, v_offset = kv_bytes, q_offset = 2 * kv_bytes;
  static constexpr int dout_offset = q_offset + stages * q_bytes;
  static constexpr int ds_offset = dout_offset + stages * q_bytes;  // two buffers (steps alternate)
  // dQ is staged per consumer in the boxes of the accumulator's tensor map (32 fp32 columns x dq_rows
  // rows, 128-byte swizzle) and added to global memory by TMA reductions.
  static constexpr int dq_box_bytes = dq_rows * 128, dq_boxes = dq_cols / 32;
  static constexpr int dq_offset = ds_offset + 2 * ds_bytes;
  // Per ring slot: the step's row statistics, [lse (log2 units) | D][BQ] floats, written by the
  // statistics warp (producer.cuh) once the producer has published the slot's step word.
  static constexpr int stats_offset = dq_offset + consumers * dq_boxes * dq_box_bytes;
  static constexpr int stats_bytes = 2 * block_q * 4;
  // Step words (Sm90BwdStep): one per ring slot (walker -> the other roles) and two per consumer's dQ
  // staging boxes (consumer -> dQ writer; steps alternate), then the block's record (Sm90BwdBlock,
  // 64 bytes).
  static constexpr int words_offset = stats_offset + stages * stats_bytes;
  static constexpr int block_offset = words_offset + 8 * (stages + 2 * consumers);
  // The Featured consumers' per-thread feature words of the current step (block bits, dropout keep
  // flags): made early, kept here rather than in registers across the step's products.
  static constexpr int feat_offset = block_offset + 64;
  static constexpr int bar_offset = feat_offset + consumers * 128 * 8;
  static constexpr int n_bars = 1 + 3 * stages;
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

/// Barriers of the block: K and V landed (once); a ring slot's step word written (by the walker, for
/// the producer and the statistics warp); Q and dO of the slot landed with its row statistics (the
/// producer's arrival with the TMA bytes, one per lane of the statistics warp); slot free again (one
/// arrival per consumer warp once its products that read it are done).
template <int D, bool Featured>
struct Sm90BwdBarriers {
  using F = Sm90BwdShape<D, Featured>;
  std::uint32_t base;
  __device__ std::uint32_t kv_full() const { return base; }
  __device__ std::uint32_t q_full(int s) const { return base + 8 * (1 + s); }
  __device__ std::uint32_t q_free(int s) const { return base + 8 * (1 + F::stages + s); }
  __device__ std::uint32_t word_full(int s) const { return base + 8 * (1 + 2 * F::stages + s); }
  __device__ void init() const {
    mbar_init(kv_full(), 1);
    for (int s = 0; s < F::stages; ++s) {
      mbar_init(q_full(s), 1 + 32);
      mbar_init(q_free(s), 4 * F::consumers);
      mbar_init(word_full(s), 1);
    }
    fence_barrier_init();
  }
};

/// One step of a block's walk as the roles pass it on: query head h, first row m0 (in the sequence) of
/// its query tile, whether the tile covers a partial mask block, and whether it is the walk's last.
struct Sm90BwdStep {
  int h, m0;
  bool partial, last;
  __device__ void put(std::uint32_t addr) const {
    const std::uint32_t w = std::uint32_t(m0) | (partial ? 1u << 30 : 0u) | (last ? 1u << 31 : 0u);
    asm volatile("st.shared.v2.u32 [%0], {%1, %2};\n" ::"r"(addr), "r"(h), "r"(w) : "memory");
  }
  __device__ static Sm90BwdStep get(std::uint32_t addr) {
    std::uint32_t h, w;
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(h), "=r"(w) : "r"(addr) : "memory");
    return {int(h), int(w & ((1u << 30) - 1)), ((w >> 30) & 1u) != 0, (w >> 31) != 0};
  }
};

/// Shared memory from its 1024-byte aligned base: tiles in the 128-byte swizzled layout TMA writes
/// (column blocks of 64 elements, all rows of a block contiguous).
template <int D, bool Featured>
struct Sm90BwdSmem {
  using F = Sm90BwdShape<D, Featured>;
  std::uint32_t base;  // shared-window address
  unsigned char* ptr;  // the same, as a generic pointer (the row statistics are read as floats)
  __device__ std::uint32_t k() const { return base + F::k_offset; }
  __device__ std::uint32_t v() const { return base + F::v_offset; }
  __device__ std::uint32_t q(int s) const { return base + F::q_offset + s * F::q_bytes; }
  __device__ std::uint32_t dout(int s) const { return base + F::dout_offset + s * F::q_bytes; }
  __device__ std::uint32_t ds(int buf) const { return base + F::ds_offset + buf * F::ds_bytes; }
  /// Consumer w's dQ staging boxes (dq_boxes of them, dq_box_bytes apart).
  __device__ std::uint32_t dq(int w) const { return base + F::dq_offset + w * F::dq_boxes * F::dq_box_bytes; }
  /// lse (log2 units) and D of the BQ rows of the step in ring slot s.
  __device__ float* lse(int s) const { return reinterpret_cast<float*>(ptr + F::stats_offset + s * F::stats_bytes); }
  __device__ float* dsum(int s) const { return lse(s) + F::block_q; }
  __device__ std::uint32_t lse_addr(int s) const { return base + F::stats_offset + s * F::stats_bytes; }
  /// The step word of ring slot s, and of consumer w's dQ staging boxes in step buffer buf (0, 1).
  __device__ std::uint32_t slot_step(int s) const { return base + F::words_offset + 8 * s; }
  __device__ std::uint32_t dq_step(int w, int buf) const { return base + F::words_offset + 8 * (F::stages + 2 * w + buf); }
  __device__ void* block() const { return ptr + F::block_offset; }
  /// Thread `tid` of consumer w: its (block bits, dropout keep) words.
  __device__ std::uint32_t feature_words(int w, int tid) const { return base + F::feat_offset + (w * 128 + tid) * 8; }
  __device__ Sm90BwdBarriers<D, Featured> barriers() const { return {base + F::bar_offset}; }
};

}  // namespace kfa::cuda::hopper
