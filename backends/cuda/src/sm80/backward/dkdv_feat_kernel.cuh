#pragma once
// The dK/dV kernel of calls with features (packed sequences, softcap, ALiBi, dropout, block masks):
// dkdv_kernel.cuh's partitioning and pipeline, with the features behind warp-uniform branches. The
// dense calls keep running dkdv_kernel, which compiles none of this.
//   packed sequences: the CTA's sequence gives the lengths every mask rule uses, and the rows of its
//     tensors start at the sequence's first row; key tiles past the sequence's end exit at once;
//   softcap / ALiBi: P^T from the modified score x (features.cuh FeatureMod); dS^T = P^T dx/d dot (dP^T - D);
//   dropout (Z = keep * keep_scale, the forward's mask): P^T Z goes to dV, dP^T = Z (V dO^T), and
//     dS^T = P^T (dP^T - D) with the undropped P^T;
//   block masks: steps of skipped (query tile x key tile) pairs are never made (nothing is loaded),
//     partial ones apply the element bits.
#include <cstdint>
#include <type_traits>

#include "sm80/backward/dkdv_kernel.cuh"
#include "sm80/backward/features.cuh"
#include "kfa/detail/feature_policy.hpp"

namespace kfa::cuda::bwd {

/// The block mask's answers for a dK/dV warp's S^T fragment (keys key0 + [0, 32) in rows, queries
/// q0 + [0, 8 NJ) in columns, positions in the sequence), in dropout_keep_st's bit layout.
template <int NJ>
__device__ __forceinline__ std::uint32_t block_mask_st(const kfa::detail::BlockSparseSpec& m, std::int64_t batch,
                                                    std::int64_t h, std::int64_t q0, std::int64_t key0,
                                                    std::int64_t seqlen_q, int g, int t) {
  std::uint32_t allow = 0;
#pragma unroll 1
  for (int je = 0; je < 2 * NJ; ++je) {  // query column 8 j + 2 t + e1
    const int j = je >> 1, e1 = je & 1;
    const std::int64_t row = q0 + 8 * j + 2 * t + e1;
    if (row >= seqlen_q || m.qblock_of(row) >= m.n_qblocks) continue;
    const kfa::detail::BlockRow br = kfa::detail::block_row(m, batch, h, row);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int kh = 0; kh < 2; ++kh)
        if (kfa::detail::block_allows(m, br, key0 + mt * 16 + g + 8 * kh))
          allow |= 1u << (mt * 16 + 4 * j + 2 * kh + e1);
  }
  return allow;
}

template <class T, int D, int BQ, int BK, bool kAtomicDq, int DS = D>
__global__ void __launch_bounds__(DkdvConfig<D, BQ, BK>::kThreads, 1) dkdv_feat_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DkdvConfig<D, BQ, BK>;
  using kfa::detail::BlockKind;
  constexpr int NT = Cfg::kThreads;
  constexpr int SQ = Cfg::kSQ, KD = Cfg::kKD;
  extern __shared__ __align__(128) unsigned char smem[];
  const DkdvSmem<D, BQ, BK> sm(smem);

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const int kw = warp % Cfg::kKeyWarps, cw = warp / Cfg::kKeyWarps;
  const int key_row0 = kw * 32;   // this warp's keys inside the CTA's block
  const int d_col0 = cw * KD;     // this warp's head dims of dK/dV
  // Positions, lengths and the walk's state are 32-bit here (sequences are shorter than 2^31), which
  // keeps the registers the features need below what the dense kernel's constant-bank operands save.
  const int n0 = static_cast<int>(blockIdx.x) * BK;
  const int b = static_cast<int>(blockIdx.y) / static_cast<int>(p.shape.heads_kv);
  const int hk = static_cast<int>(blockIdx.y) % static_cast<int>(p.shape.heads_kv);
  const int group = static_cast<int>(p.shape.heads / p.shape.heads_kv);
  // The sequence of this CTA (the padded batch's shape without packed sequences): every mask rule
  // uses its lengths, and its rows start at q_begin / k_begin of the packed tensors.
  const kfa::detail::SequenceBounds sb = kfa::detail::sequence_bounds(p.shape, p.varlen, b);
  const int q_begin = static_cast<int>(sb.q_begin), k_begin = static_cast<int>(sb.k_begin);
  const int seqlen_q = static_cast<int>(sb.seqlen_q), seqlen_k = static_cast<int>(sb.seqlen_k);
  if (n0 >= seqlen_k) return;  // a key tile past its sequence: nothing to write
  const int n_end = n0 + BK < seqlen_k ? n0 + BK : seqlen_k;
  const bool blocks_on = p.score.blocks.enabled();

  kfa::detail::Shape setup_shape = p.shape;
  setup_shape.seqlen_q = seqlen_q;
  setup_shape.seqlen_k = seqlen_k;
  const kfa::detail::VisibleRange rows = kfa::detail::visible_queries(n0, n_end, setup_shape, p.score);
  const int tile0 = static_cast<int>(rows.begin / BQ);
  const int ntiles = rows.begin < rows.end ? static_cast<int>((rows.end + BQ - 1) / BQ) - tile0 : 0;
  const int steps = group * ntiles;

  // Steps walk (query head, query tile) pairs, tiles fastest; kept incrementally (no division).
  // The CTA's constants that the step loop needs are read back from shared memory where they are used
  // (volatile: never held in registers across the loop), which leaves the registers to the tiles.
  __shared__ int s_const[8];
  if (threadIdx.x == 0) {
    s_const[0] = q_begin;
    s_const[1] = seqlen_q;
    s_const[2] = seqlen_k;
    s_const[3] = tile0 * BQ;                 // m_first
    s_const[4] = (tile0 + ntiles - 1) * BQ;  // m_last
    s_const[5] = hk * group + group;         // h_end
    s_const[6] = steps;
    s_const[7] = k_begin;
  }
  __syncthreads();
  const volatile int* cst = s_const;
  auto seq_shape = [&] {
    kfa::detail::Shape s = p.shape;
    s.seqlen_q = cst[1];
    s.seqlen_k = cst[2];
    return s;
  };
  int h = hk * group, m0 = tile0 * BQ;  // the current step
  // Block masks: the kind of (query tile at m, key tile) for head hh; steps of skipped pairs are not made.
  auto tile_kind = [&](int hh, int m) {
    const int sq = cst[1], sk = cst[2];
    const int m_end = m + BQ < sq ? m + BQ : sq;
    const int n_end = n0 + BK < sk ? n0 + BK : sk;
    return kfa::detail::block_tile_kind(p.score.blocks, b + p.score.batch_base, hh, m, m_end, n0, n_end);
  };
  // Moves (hh, m) to the step after it; false when the walk is over.
  auto advance = [&](int& hh, int& m) {
    if (m == cst[4]) {
      ++hh;
      m = cst[3];
    } else {
      m += BQ;
    }
    return hh < cst[5];
  };
  bool valid = steps > 0;
  bool partial = false;  // the current step covers a partial mask block
  if (blocks_on && valid) {
    BlockKind kd = tile_kind(h, m0);
    while (valid && kd == BlockKind::skipped) {
      valid = advance(h, m0);
      if (valid) kd = tile_kind(h, m0);
    }
    partial = kd == BlockKind::partial;
  }

  // Issues the loads of step (h, m0) into buffer `buf` (pointers recomputed from the parameters).
  auto load_step = [&](int step_h, int step_m0, int buf) {
    const std::int64_t qb = cst[0];
    const int sq = cst[1];
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + qb * p.q.stride_s + step_h * p.q.stride_h;
    const T* go =
        static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + qb * p.dout.stride_s + step_h * p.dout.stride_h;
    load_tile_pair<T, BQ, DS, NT>(sm.q(buf), q, p.q.stride_s, sm.dout(buf), go, p.dout.stride_s, step_m0, sq);
  };
  auto step_stats = [&](int step_h, int row) {
    const std::int64_t qb = cst[0];
    const float* lse =
        static_cast<const float*>(p.lse.data) + b * p.lse.stride_b + step_h * p.lse.stride_h + qb * p.lse.stride_s;
    return row_stats(p, lse, row_map<true>(p, b, step_h, qb), row, cst[1]);
  };
  const int tid = static_cast<int>(threadIdx.x);

  zero_pad_columns<D, DS, BK, NT>(sm.k());  // padded head dims only (steps.cuh)
  zero_pad_columns<D, DS, BK, NT>(sm.v());
  for (int zb = 0; zb < 2; ++zb) {
    zero_pad_columns<D, DS, BQ, NT>(sm.q(zb));
    zero_pad_columns<D, DS, BQ, NT>(sm.dout(zb));
  }
  {
    const T* k = static_cast<const T*>(p.k.data) + b * p.k.stride_b + std::int64_t(k_begin) * p.k.stride_s +
                 hk * p.k.stride_h;
    const T* v = static_cast<const T*>(p.v.data) + b * p.v.stride_b + std::int64_t(k_begin) * p.v.stride_s +
                 hk * p.v.stride_h;
    load_tile_pair<T, BK, DS, NT>(sm.k(), k, p.k.stride_s, sm.v(), v, p.v.stride_s, n0, seqlen_k);
    if (valid) {
      load_step(h, m0, 0);
      if (tid < BQ) sm.stash_stats(step_stats(h, m0 + tid), 0, tid);
    }
    cp_async_commit();
  }

  float dk[2][KD / 8][4], dv[2][KD / 8][4];
  zero(dk);
  zero(dv);

  for (int it = 0; valid; ++it) {
    const int buf = static_cast<int>(it & 1);
    cp_async_wait<0>();
    __syncthreads();  // step `it` landed; everyone is done with the other buffer, P^T and dS^T
    int h_next = h, m_next = m0;
    bool valid_next = advance(h_next, m_next), partial_next = false;
    if (!blocks_on) {
      valid_next = it + 1 < cst[6];
    } else {
      BlockKind kd = valid_next ? tile_kind(h_next, m_next) : BlockKind::skipped;
      while (valid_next && kd == BlockKind::skipped) {
        valid_next = advance(h_next, m_next);
        if (valid_next) kd = tile_kind(h_next, m_next);
      }
      partial_next = kd == BlockKind::partial;
    }
    if (valid_next) {
      load_step(h_next, m_next, buf ^ 1);
      cp_async_commit();
    }
    const std::uint32_t sQ = sm.q(buf), sDO = sm.dout(buf);
    const float* lse = sm.lse(buf);
    const float* dsum = sm.dsum(buf);

    const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, n0, n0 + BK, seq_shape(), p.score);
    // Keys of this warp at or past seqlen_k (zero-filled) must not contribute: local key rows >= kmax.
    const int kmax = cst[2] - n0 - key_row0;
    const int diag = n0 + key_row0 - m0 - (cst[2] - cst[1]);  // (key - query - shift) at local (0, 0)
#pragma unroll
    for (int pass = 0; pass < BQ / 64; ++pass) {
      const int q_col0 = pass * 64 + cw * SQ;  // this warp's query columns of S^T in this pass
      // The block mask's answers and the dropout keep bits of this warp's fragment (before the S^T
      // product, while few registers are live).
      std::uint32_t allow = ~0u, keep = ~0u;
      if (blocks_on && partial)
        allow = block_mask_st<SQ / 8>(p.score.blocks, b + p.score.batch_base, h, m0 + q_col0, n0 + key_row0, cst[1], g, t);
      if (p.dropout.on) keep = dropout_keep_st<SQ / 8>(p.dropout, b + p.score.batch_base, h, m0 + q_col0, n0 + key_row0, g, t);
      float s[2][SQ / 8][4];
      st_product<T, D, SQ>(s, sm.k(), key_row0, sQ, q_col0);
      std::uint32_t pk[2][SQ / 8][2];  // P^T as T pairs (times dx/d dot under softcap), what dS^T uses
      const FragMask fmk{diag, kmax, p.win_lo, p.win_hi, !full || partial};
      const float ks = p.dropout.on ? p.dropout.keep_scale : 1.0f;
      auto p_tile = [&](auto softcap_tag, auto alibi_tag, auto drop_tag) {
        constexpr bool kCap = decltype(softcap_tag)::value, kAlibi = decltype(alibi_tag)::value;
        constexpr bool kDrop = decltype(drop_tag)::value;
        const FeatureMod fm = feature_mod(p.score, h);  // made here: not live across the S^T product
        p_tile_st<T, SQ, BQ, kCap, kAlibi, kDrop, true>(pk, s, fm, lse, p.scale_log2, fmk, allow, keep, ks, sm.p(),
                                                        key_row0, q_col0, g, t);
      };
      // one loop per combination of the modifiers (uniform branches; no per-element tests)
      using Y = std::true_type;
      using N = std::false_type;
      const bool cap = p.score.softcap != 0.0f, alibi = p.score.alibi_slopes != nullptr, drop = p.dropout.on;
      if (cap) {
        if (alibi) drop ? p_tile(Y{}, Y{}, Y{}) : p_tile(Y{}, Y{}, N{});
        else drop ? p_tile(Y{}, N{}, Y{}) : p_tile(Y{}, N{}, N{});
      } else {
        if (alibi) drop ? p_tile(N{}, Y{}, Y{}) : p_tile(N{}, Y{}, N{});
        else drop ? p_tile(N{}, N{}, Y{}) : p_tile(N{}, N{}, N{});
      }
      float dp[2][SQ / 8][4];
      st_product<T, D, SQ>(dp, sm.v(), key_row0, sDO, q_col0);
      if (p.dropout.on) ds_tile_st<T, SQ, BQ, true>(dp, pk, dsum, keep, ks, sm.ds(), key_row0, q_col0, t);
      else ds_tile_st<T, SQ, BQ, false>(dp, pk, dsum, keep, ks, sm.ds(), key_row0, q_col0, t);
    }
    __syncthreads();  // P^T and dS^T complete
    // The next step's row statistics: loaded here (fewer live registers than at the top of the
    // step), their latency hidden behind the dV/dK/dQ products, stored at the end of the step.
    RowStats next_stats{0.0f, 0.0f};
    if (valid_next && tid < BQ) next_stats = step_stats(h_next, m_next + tid);

    dkdv_products<T, D, BQ, KD>(dv, dk, sm.p(), sm.ds(), sDO, sQ, key_row0, d_col0);

    if constexpr (kAtomicDq) {
      const int wq = warp % Cfg::kDqRowWarps, wd = warp / Cfg::kDqRowWarps;
      // accumulator rows in 32 bits (the workspace holds fewer than 2^31 rows)
      const int heads = static_cast<int>(p.shape.heads);
      const bool packed = p.varlen.enabled();
      const int rbase = packed ? cst[0] * heads + static_cast<int>(h) : (b * heads + static_cast<int>(h)) * cst[1];
      const int rstride = packed ? heads : 1;
#pragma unroll
      for (int part = 0; part < Cfg::kDqParts; ++part) {
        const int col0 = wd * Cfg::kDqCols + part * Cfg::kDqPartCols;
        float dq[2][Cfg::kDqPartCols / 8][4];
        dq_step_product<T, D, BQ, BK>(dq, sm.ds(), sm.k(), wq, col0);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const int row = m0 + wq * 32 + mt * 16 + g;
          float* acc = p.dq_accum + static_cast<std::int64_t>(rbase + row * rstride) * DS + col0 + 2 * t;
          float* acc_hi = acc + 8 * rstride * DS;
          const int sq = cst[1];
          atomic_add_rows<D, DS>(acc, acc_hi, row < sq, row + 8 < sq, dq[mt], col0 + 2 * t);
        }
      }
    }
    if (valid_next) sm.stash_stats(next_stats, buf ^ 1, tid);  // nobody reads buffer buf ^ 1 this step
    h = h_next;
    m0 = m_next;
    valid = valid_next;
    partial = partial_next;
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // Epilogue: dK = scale * dS^T Q, dV as accumulated; rows past seqlen_k are not written.
  const std::int64_t kb = cst[7];
  const int sk = cst[2];
  T* gk = static_cast<T*>(p.dk.data) + b * p.dk.stride_b + kb * p.dk.stride_s + hk * p.dk.stride_h + d_col0 + 2 * t;
  T* gv = static_cast<T*>(p.dv.data) + b * p.dv.stride_b + kb * p.dv.stride_s + hk * p.dv.stride_h + d_col0 + 2 * t;
  store_dkdv<T, KD, D, DS>(gk, p.dk.stride_s, gv, p.dv.stride_s, n0 + key_row0 + g, sk, dk, dv, p.scale, d_col0 + 2 * t);
}

}  // namespace kfa::cuda::bwd
