#pragma once
// Main backward kernel (FlashAttention-2 partitioning): one CTA of 8 warps per (batch, kv head,
// BK keys: 128, or 64 for head_dim 256). K and V stay in shared memory; the CTA walks every query tile
// (of every query head sharing the kv head, so GQA needs no reduction pass) that sees its keys, with
// Q/dO/lse/D double-buffered through cp.async. Per query tile of BQ rows, warp w = (kw = w % KW,
// cw = w / KW) of a KW x CW grid (DkdvConfig: 4 x 2 for BK 128, 2 x 4 for BK 64), SQ = 64 / CW:
//   1. S^T, dP^T for keys [32 kw, +32) x queries [64 pass + SQ cw, +SQ)  (K Q^T and V dO^T)
//   2. P^T = exp2(S^T * scale_log2 - lse * log2 e), dS^T = P^T (dP^T - D), both to shared memory
//   3. dV, dK for keys [32 kw, +32) x head dims [cw * D/CW, +D/CW)     (P^T dO and dS^T Q)
//   4. atomic path: dQ tile [BQ x D] += dS K over a (BQ/32) x (8 / (BQ/32)) warp grid, added into
//      the fp32 accumulator with atomics; the deterministic path leaves dQ to dq_kernel.
// Warp tiles of 32 rows let each shared-memory fragment feed two mma, which is what bounds the
// kernel (its shared-memory traffic, not the Tensor Cores).
#include <cstdint>

#include "kfa/detail/tile_rules.hpp"
#include "sm80/backward/steps.cuh"

namespace kfa::cuda::bwd {

template <class T, int D, int BQ, int BK, bool kAtomicDq, int DS = D>
__global__ void __launch_bounds__(DkdvConfig<D, BQ, BK>::kThreads, 1) dkdv_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DkdvConfig<D, BQ, BK>;
  constexpr int NT = Cfg::kThreads;
  constexpr int SQ = Cfg::kSQ, KD = Cfg::kKD;
  extern __shared__ __align__(128) unsigned char smem[];
  const DkdvSmem<D, BQ, BK> sm(smem);

  const auto& shape = p.shape;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const int kw = warp % Cfg::kKeyWarps, cw = warp / Cfg::kKeyWarps;
  const int key_row0 = kw * 32;   // this warp's keys inside the CTA's block
  const int d_col0 = cw * KD;     // this warp's head dims of dK/dV
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * BK;
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.y) / shape.heads_kv;
  const std::int64_t hk = static_cast<std::int64_t>(blockIdx.y) % shape.heads_kv;
  const std::int64_t group = shape.heads / shape.heads_kv;
  const std::int64_t n_end = n0 + BK < shape.seqlen_k ? n0 + BK : shape.seqlen_k;

  const kfa::detail::VisibleRange rows = kfa::detail::visible_queries(n0, n_end, shape, p.score);
  const std::int64_t tile0 = rows.begin / BQ;
  const std::int64_t ntiles = rows.begin < rows.end ? (rows.end + BQ - 1) / BQ - tile0 : 0;
  const std::int64_t steps = group * ntiles;

  // Steps walk (query head, query tile) pairs, tiles fastest; kept incrementally (no 64-bit division).
  const std::int64_t m_first = tile0 * BQ, m_last = (tile0 + ntiles - 1) * BQ;
  std::int64_t h = hk * group, m0 = m_first;  // the current step
  // Issues the loads of step (h, m0) into buffer `buf`.
  auto load_step = [&](std::int64_t step_h, std::int64_t step_m0, int buf) {
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + step_h * p.q.stride_h;
    const T* go = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + step_h * p.dout.stride_h;
    load_tile_pair<T, BQ, DS, NT>(sm.q(buf), q, p.q.stride_s, sm.dout(buf), go, p.dout.stride_s, step_m0, shape.seqlen_q);
  };
  const int tid = static_cast<int>(threadIdx.x);

  zero_pad_columns<D, DS, BK, NT>(sm.k());  // padded head dims only (steps.cuh)
  zero_pad_columns<D, DS, BK, NT>(sm.v());
  for (int zb = 0; zb < 2; ++zb) {
    zero_pad_columns<D, DS, BQ, NT>(sm.q(zb));
    zero_pad_columns<D, DS, BQ, NT>(sm.dout(zb));
  }
  {
    const T* k = static_cast<const T*>(p.k.data) + b * p.k.stride_b + hk * p.k.stride_h;
    const T* v = static_cast<const T*>(p.v.data) + b * p.v.stride_b + hk * p.v.stride_h;
    load_tile_pair<T, BK, DS, NT>(sm.k(), k, p.k.stride_s, sm.v(), v, p.v.stride_s, n0, shape.seqlen_k);
    if (steps > 0) {
      load_step(h, m0, 0);
      if (tid < BQ) sm.stash_stats(row_stats(p, b, h, m0 + tid), 0, tid);
    }
    cp_async_commit();
  }

  float dk[2][KD / 8][4], dv[2][KD / 8][4];
  zero(dk);
  zero(dv);
  // Keys of this warp at or past seqlen_k (zero-filled) must not contribute: local key rows >= kmax.
  const int kmax = clamp_diag(shape.seqlen_k - n0 - key_row0);
  const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;

  for (std::int64_t it = 0; it < steps; ++it) {
    const int buf = static_cast<int>(it & 1);
    cp_async_wait<0>();
    __syncthreads();  // step `it` landed; everyone is done with the other buffer, P^T and dS^T
    const std::int64_t h_next = m0 == m_last ? h + 1 : h;
    const std::int64_t m_next = m0 == m_last ? m_first : m0 + BQ;
    if (it + 1 < steps) {
      load_step(h_next, m_next, buf ^ 1);
      cp_async_commit();
    }
    const std::uint32_t sQ = sm.q(buf), sDO = sm.dout(buf);
    const float* lse = sm.lse(buf);
    const float* dsum = sm.dsum(buf);

    const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, n0, n0 + BK, shape, p.score);
    const int diag = clamp_diag(n0 + key_row0 - m0 - shift);  // (key - query - shift) at local (0, 0)
#pragma unroll
    for (int pass = 0; pass < BQ / 64; ++pass) {
      const int q_col0 = pass * 64 + cw * SQ;  // this warp's query columns of S^T in this pass
      float s[2][SQ / 8][4];
      st_product<T, D, SQ>(s, sm.k(), key_row0, sQ, q_col0);
      // P^T; element (key row, query col). Padded query rows have lse +inf and come out 0 unmasked.
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < SQ / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = q_col0 + 8 * j + 2 * t + (e & 1);
            float pv = fast_exp2(fmaf(s[mt][j][e], p.scale_log2, -lse[col]));  // pairs: one 8-byte load
            if (!full) {
              const int krow = mt * 16 + g + 8 * (e >> 1);
              const int diff = diag + krow - col;  // key - query - shift
              if (diff < p.win_lo || diff > p.win_hi || krow >= kmax) pv = 0.0f;
            }
            s[mt][j][e] = pv;
          }
      // P^T is kept as T pairs from here on (half the registers); dS uses the same rounded P
      // that dV sees, as a plain backward in the input precision does.
      std::uint32_t pk[2][SQ / 8][2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < SQ / 8; ++j) {
          pk[mt][j][0] = ElemOps<T>::pack(s[mt][j][0], s[mt][j][1]);
          pk[mt][j][1] = ElemOps<T>::pack(s[mt][j][2], s[mt][j][3]);
        }
      store_packed_tile<2, SQ / 8, BQ>(sm.p(), key_row0, q_col0, pk);
      float dp[2][SQ / 8][4];
      st_product<T, D, SQ>(dp, sm.v(), key_row0, sDO, q_col0);
      ds_tile_st<T, SQ, BQ, false>(dp, pk, dsum, ~0u, 1.0f, sm.ds(), key_row0, q_col0, t);
    }
    __syncthreads();  // P^T and dS^T complete
    // The next step's row statistics: loaded here (fewer live registers than at the top of the
    // step), their latency hidden behind the dV/dK/dQ products, stored at the end of the step.
    RowStats next_stats{0.0f, 0.0f};
    if (it + 1 < steps && tid < BQ) next_stats = row_stats(p, b, h_next, m_next + tid);

    dkdv_products<T, D, BQ, KD>(dv, dk, sm.p(), sm.ds(), sDO, sQ, key_row0, d_col0);

    if constexpr (kAtomicDq) {
      const int wq = warp % Cfg::kDqRowWarps, wd = warp / Cfg::kDqRowWarps;
#pragma unroll
      for (int part = 0; part < Cfg::kDqParts; ++part) {
        const int col0 = wd * Cfg::kDqCols + part * Cfg::kDqPartCols;
        float dq[2][Cfg::kDqPartCols / 8][4];
        dq_step_product<T, D, BQ, BK>(dq, sm.ds(), sm.k(), wq, col0);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const std::int64_t row = m0 + wq * 32 + mt * 16 + g;
          float* acc = p.dq_accum + row_index(p, b, h, row) * DS + col0 + 2 * t;
          atomic_add_rows<D, DS>(acc, acc + 8 * DS, row < shape.seqlen_q, row + 8 < shape.seqlen_q, dq[mt], col0 + 2 * t);
        }
      }
    }
    if (it + 1 < steps) sm.stash_stats(next_stats, buf ^ 1, tid);  // nobody reads buffer buf ^ 1 this step
    h = h_next;
    m0 = m_next;
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // Epilogue: dK = scale * dS^T Q, dV as accumulated; rows past seqlen_k are not written.
  T* gk = static_cast<T*>(p.dk.data) + b * p.dk.stride_b + hk * p.dk.stride_h + d_col0 + 2 * t;
  T* gv = static_cast<T*>(p.dv.data) + b * p.dv.stride_b + hk * p.dv.stride_h + d_col0 + 2 * t;
  store_dkdv<T, KD, D, DS>(gk, p.dk.stride_s, gv, p.dv.stride_s, n0 + key_row0 + g, shape.seqlen_k, dk, dv, p.scale, d_col0 + 2 * t);
}

}  // namespace kfa::cuda::bwd
