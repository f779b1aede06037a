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
/// q0 + [0, 32) in columns, positions in the sequence), in dropout_keep_st's bit layout.
__device__ __forceinline__ std::uint32_t block_mask_st(const kfa::detail::BlockSparseSpec& m, std::int64_t batch,
                                                    std::int64_t h, std::int64_t q0, std::int64_t key0,
                                                    std::int64_t seqlen_q, int g, int t) {
  std::uint32_t allow = 0;
#pragma unroll 1
  for (int je = 0; je < 8; ++je) {  // query column 8 j + 2 t + e1
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

template <class T, int D, int BQ, int BK, bool kAtomicDq>
__global__ void __launch_bounds__(DkdvConfig<D, BQ, BK>::kThreads, 1) dkdv_feat_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DkdvConfig<D, BQ, BK>;
  using kfa::detail::BlockKind;
  constexpr int NT = Cfg::kThreads;
  constexpr int SQ = Cfg::kSQ, KD = Cfg::kKD;
  extern __shared__ __align__(128) unsigned char smem[];
  const std::uint32_t s_base = smem_u32(smem);
  const std::uint32_t sK = s_base + Cfg::kOffK, sV = s_base + Cfg::kOffV;
  const std::uint32_t sP = s_base + Cfg::kOffP, sDS = s_base + Cfg::kOffDS;
  const float* s_lse = reinterpret_cast<const float*>(smem + Cfg::kOffLse);
  const float* s_dsum = reinterpret_cast<const float*>(smem + Cfg::kOffDsum);

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const int kw = warp % 4, half = warp / 4;
  const int key_row0 = kw * 32;   // this warp's keys inside the CTA's block
  const int d_col0 = half * KD;   // this warp's head dims of dK/dV
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
    load_rows_async<T, BQ, D, NT>(s_base + Cfg::kOffQ + buf * Cfg::kQTileBytes, q, p.q.stride_s, step_m0, sq);
    load_rows_async<T, BQ, D, NT>(s_base + Cfg::kOffDO + buf * Cfg::kQTileBytes, go, p.dout.stride_s, step_m0, sq);
  };
  auto step_stats = [&](int step_h, int row) {
    const std::int64_t qb = cst[0];
    const float* lse =
        static_cast<const float*>(p.lse.data) + b * p.lse.stride_b + step_h * p.lse.stride_h + qb * p.lse.stride_s;
    return row_stats(p, lse, row_map<true>(p, b, step_h, qb), row, cst[1]);
  };
  // The row statistics of a step travel through registers of the first BQ threads and are stored
  // to shared memory at the end of the step before.
  const int tid = static_cast<int>(threadIdx.x);
  auto stash_stats = [&](const RowStats& st, int buf) {
    if (tid < BQ) {
      reinterpret_cast<float*>(smem + Cfg::kOffLse)[buf * BQ + tid] = st.lse_log2;
      reinterpret_cast<float*>(smem + Cfg::kOffDsum)[buf * BQ + tid] = st.dsum;
    }
  };

  {
    const T* k = static_cast<const T*>(p.k.data) + b * p.k.stride_b + std::int64_t(k_begin) * p.k.stride_s +
                 hk * p.k.stride_h;
    const T* v = static_cast<const T*>(p.v.data) + b * p.v.stride_b + std::int64_t(k_begin) * p.v.stride_s +
                 hk * p.v.stride_h;
    load_rows_async<T, BK, D, NT>(sK, k, p.k.stride_s, n0, seqlen_k);
    load_rows_async<T, BK, D, NT>(sV, v, p.v.stride_s, n0, seqlen_k);
    if (valid) {
      load_step(h, m0, 0);
      if (tid < BQ) stash_stats(step_stats(h, m0 + tid), 0);
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
    const std::uint32_t sQ = s_base + Cfg::kOffQ + buf * Cfg::kQTileBytes;
    const std::uint32_t sDO = s_base + Cfg::kOffDO + buf * Cfg::kQTileBytes;
    const float* lse = s_lse + buf * BQ;
    const float* dsum = s_dsum + buf * BQ;

    const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, n0, n0 + BK, seq_shape(), p.score);
    // Keys of this warp at or past seqlen_k (zero-filled) must not contribute: local key rows >= kmax.
    const int kmax = cst[2] - n0 - key_row0;
    const int diag = n0 + key_row0 - m0 - (cst[2] - cst[1]);  // (key - query - shift) at local (0, 0)
#pragma unroll
    for (int pass = 0; pass < BQ / 64; ++pass) {
      const int q_col0 = pass * 64 + half * SQ;  // this warp's query columns of S^T in this pass
      // The block mask's answers and the dropout keep bits of this warp's fragment (before the S^T
      // product, while few registers are live).
      std::uint32_t allow = ~0u, keep = ~0u;
      if (blocks_on && partial)
        allow = block_mask_st(p.score.blocks, b + p.score.batch_base, h, m0 + q_col0, n0 + key_row0, cst[1], g, t);
      if (p.dropout.on) keep = dropout_keep_st(p.dropout, b + p.score.batch_base, h, m0 + q_col0, n0 + key_row0, g, t);
      float s[2][SQ / 8][4];
      zero(s);
      gemm_abt_mt<T, 2, SQ / 8, D / 16, D, D>(s, sK, key_row0, sQ, q_col0);
      // pk: P^T as T pairs, what dS^T uses (times dx/d dot under softcap). What dV takes (P^T, or P^T Z
      // under dropout) goes to shared memory as it is made. Each is rounded to T once.
      std::uint32_t pk[2][SQ / 8][2];
      const bool masked = !full || partial;
      const float ks = p.dropout.on ? p.dropout.keep_scale : 1.0f;
      auto p_tile = [&](auto softcap_tag, auto alibi_tag, auto drop_tag) {
        constexpr bool kCap = decltype(softcap_tag)::value, kAlibi = decltype(alibi_tag)::value;
        constexpr bool kDrop = decltype(drop_tag)::value;
        const FeatureMod fm = feature_mod(p.score, h);  // made here: not live across the S^T product
        std::uint32_t pst[2][SQ / 8][2];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int j = 0; j < SQ / 8; ++j) {
            float pv[4], pd[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int col = q_col0 + 8 * j + 2 * t + (e & 1);
              const int krow = mt * 16 + g + 8 * (e >> 1);
              const int diff = diag + krow - col;  // key - query - shift
              float x = s[mt][j][e], dx = 1.0f;
              if constexpr (kCap) {
                const float th = policy::fast_tanh(x * fm.softcap_in);
                x = fm.softcap_out * th;
                dx = fmaf(-th, th, 1.0f);
              }
              if constexpr (kAlibi) x = fmaf(fm.alibi_k, static_cast<float>(abs(diff)), x);
              float v = fast_exp2(fmaf(x, p.scale_log2, -lse[col]));
              if (masked) {
                const bool ok = diff >= p.win_lo && diff <= p.win_hi && krow < kmax &&
                                ((allow >> (mt * 16 + 4 * j + e)) & 1u);
                if (!ok) v = 0.0f;
              }
              pd[e] = kCap ? v * dx : v;
              pv[e] = !kDrop ? v : (keep >> (mt * 16 + 4 * j + e)) & 1u ? v * ks : 0.0f;
            }
#pragma unroll
            for (int hi = 0; hi < 2; ++hi) {
              pk[mt][j][hi] = ElemOps<T>::pack(pd[2 * hi], pd[2 * hi + 1]);
              pst[mt][j][hi] = ElemOps<T>::pack(pv[2 * hi], pv[2 * hi + 1]);
            }
          }
        store_packed_tile<2, SQ / 8, BQ>(sP, key_row0, q_col0, pst);
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
      zero(dp);
      gemm_abt_mt<T, 2, SQ / 8, D / 16, D, D>(dp, sV, key_row0, sDO, q_col0);
      auto ds_tile = [&](auto drop_tag) {
        constexpr bool kDrop = decltype(drop_tag)::value;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int j = 0; j < SQ / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float pv = ElemOps<T>::unpack(pk[mt][j][e >> 1], e & 1);
              const float dpv = !kDrop ? dp[mt][j][e] : (keep >> (mt * 16 + 4 * j + e)) & 1u ? dp[mt][j][e] * ks : 0.0f;
              dp[mt][j][e] = pv * (dpv - dsum[q_col0 + 8 * j + 2 * t + (e & 1)]);
            }
      };
      if (p.dropout.on) ds_tile(std::true_type{});
      else ds_tile(std::false_type{});
      store_tile<T, 2, SQ / 8, BQ>(sDS, key_row0, q_col0, dp);
    }
    __syncthreads();  // P^T and dS^T complete
    // The next step's row statistics: loaded here (fewer live registers than at the top of the
    // step), their latency hidden behind the dV/dK/dQ products, stored at the end of the step.
    RowStats next_stats{0.0f, 0.0f};
    if (valid_next && tid < BQ) next_stats = step_stats(h_next, m_next + tid);

    gemm_ab_mt<T, 2, KD / 8, BQ / 16, BQ, D>(dv, sP, key_row0, sDO, d_col0);
    gemm_ab_mt<T, 2, KD / 8, BQ / 16, BQ, D>(dk, sDS, key_row0, sQ, d_col0);

    if constexpr (kAtomicDq) {
      const int wq = warp % Cfg::kDqRowWarps, wd = warp / Cfg::kDqRowWarps;
      float dq[2][Cfg::kDqCols / 8][4];
      zero(dq);
      gemm_tab_mt<T, 2, Cfg::kDqCols / 8, BK / 16, BQ, D>(dq, sDS, wq * 32, sK, wd * Cfg::kDqCols);
      // accumulator rows in 32 bits (the workspace holds fewer than 2^31 rows)
      const int heads = static_cast<int>(p.shape.heads);
      const bool packed = p.varlen.enabled();
      const int rbase = packed ? cst[0] * heads + static_cast<int>(h) : (b * heads + static_cast<int>(h)) * cst[1];
      const int rstride = packed ? heads : 1;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int row = m0 + wq * 32 + mt * 16 + g;
        float* acc = p.dq_accum + static_cast<std::int64_t>(rbase + row * rstride) * D + wd * Cfg::kDqCols + 2 * t;
        float* acc_hi = acc + 8 * rstride * D;
        const int sq = cst[1];
        const bool lo_ok = row < sq, hi_ok = row + 8 < sq;
#pragma unroll
        for (int j = 0; j < Cfg::kDqCols / 8; ++j) {
          if (lo_ok) atomic_add2(acc + 8 * j, dq[mt][j][0], dq[mt][j][1]);
          if (hi_ok) atomic_add2(acc_hi + 8 * j, dq[mt][j][2], dq[mt][j][3]);
        }
      }
    }
    if (valid_next) stash_stats(next_stats, buf ^ 1);  // nobody reads buffer buf ^ 1 this step
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
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int r = n0 + key_row0 + mt * 16 + g + 8 * hi;
      if (r >= sk) continue;
#pragma unroll
      for (int j = 0; j < KD / 8; ++j) {
        *reinterpret_cast<std::uint32_t*>(gk + r * p.dk.stride_s + 8 * j) =
            ElemOps<T>::pack(dk[mt][j][2 * hi] * p.scale, dk[mt][j][2 * hi + 1] * p.scale);
        *reinterpret_cast<std::uint32_t*>(gv + r * p.dv.stride_s + 8 * j) =
            ElemOps<T>::pack(dv[mt][j][2 * hi], dv[mt][j][2 * hi + 1]);
      }
    }
}

}  // namespace kfa::cuda::bwd
