#pragma once
// Deterministic dQ: one CTA per (batch, query head, BQ query rows) walks the visible key tiles in a
// fixed order and accumulates dQ in registers, so no two threads ever add into the same value.
// It recomputes S = Q K^T, P, dP = dO V^T and dS = P (dP - D) (the price of determinism: 3 of the
// backward's 5 products again); warp w owns query rows [16w, 16w + 16).
#include <cstdint>

#include "kfa/detail/tile_rules.hpp"
#include "sm80/backward/steps.cuh"  // DqConfig

namespace kfa::cuda::bwd {

template <class T, int D, int BQ, int BK, int KC, int DS = D>
__global__ void __launch_bounds__(DqConfig<D, BQ, BK>::kThreads) dq_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DqConfig<D, BQ, BK>;
  constexpr int NT = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  const std::uint32_t s_base = smem_u32(smem);
  const std::uint32_t sQ = s_base + Cfg::kOffQ, sDO = s_base + Cfg::kOffDO;
  const float* s_lse = reinterpret_cast<const float*>(smem + Cfg::kOffLse);
  const float* s_dsum = reinterpret_cast<const float*>(smem + Cfg::kOffDsum);

  const auto& shape = p.shape;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.x) * BQ;
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.y) / shape.heads;
  const std::int64_t h = static_cast<std::int64_t>(blockIdx.y) % shape.heads;
  const std::int64_t hk = h / (shape.heads / shape.heads_kv);
  const std::int64_t m_end = m0 + BQ < shape.seqlen_q ? m0 + BQ : shape.seqlen_q;

  const kfa::detail::VisibleRange keys = kfa::detail::visible_keys(m0, m_end, shape, p.score);
  const std::int64_t tile0 = keys.begin / BK;
  const std::int64_t ntiles = keys.begin < keys.end ? (keys.end + BK - 1) / BK - tile0 : 0;

  const T* kbase = static_cast<const T*>(p.k.data) + b * p.k.stride_b + hk * p.k.stride_h;
  const T* vbase = static_cast<const T*>(p.v.data) + b * p.v.stride_b + hk * p.v.stride_h;
  auto load_kv = [&](std::int64_t it, int buf) {
    const std::int64_t n0 = (tile0 + it) * BK;
    load_rows_async<T, BK, DS, NT>(s_base + Cfg::kOffK + buf * Cfg::kKTileBytes, kbase, p.k.stride_s, n0,
                                  shape.seqlen_k);
    load_rows_async<T, BK, DS, NT>(s_base + Cfg::kOffV + buf * Cfg::kKTileBytes, vbase, p.v.stride_s, n0,
                                  shape.seqlen_k);
  };
  zero_pad_columns<D, DS, BQ, NT>(sQ);  // padded head dims only (steps.cuh)
  zero_pad_columns<D, DS, BQ, NT>(sDO);
  for (int zb = 0; zb < 2; ++zb) {
    zero_pad_columns<D, DS, BK, NT>(s_base + Cfg::kOffK + zb * Cfg::kKTileBytes);
    zero_pad_columns<D, DS, BK, NT>(s_base + Cfg::kOffV + zb * Cfg::kKTileBytes);
  }
  {
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + h * p.q.stride_h;
    const T* go = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + h * p.dout.stride_h;
    load_rows_async<T, BQ, DS, NT>(sQ, q, p.q.stride_s, m0, shape.seqlen_q);
    load_rows_async<T, BQ, DS, NT>(sDO, go, p.dout.stride_s, m0, shape.seqlen_q);
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < BQ) {  // ordered before their use by the first step's barrier
      const RowStats st = row_stats(p, b, h, m0 + tid);
      reinterpret_cast<float*>(smem + Cfg::kOffLse)[tid] = st.lse_log2;
      reinterpret_cast<float*>(smem + Cfg::kOffDsum)[tid] = st.dsum;
    }
    if (ntiles > 0) load_kv(0, 0);
    cp_async_commit();
  }

  float dq[D / 8][4];
  zero(dq);
  const int row0 = warp * 16;
  float lse_r[2] = {0, 0}, dsum_r[2] = {0, 0};
  const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;

  for (std::int64_t it = 0; it < ntiles; ++it) {
    const int buf = static_cast<int>(it & 1);
    cp_async_wait<0>();
    __syncthreads();
    if (it == 0) {
      lse_r[0] = s_lse[row0 + g];
      lse_r[1] = s_lse[row0 + g + 8];
      dsum_r[0] = s_dsum[row0 + g];
      dsum_r[1] = s_dsum[row0 + g + 8];
    }
    if (it + 1 < ntiles) {
      load_kv(it + 1, buf ^ 1);
      cp_async_commit();
    }
    const std::int64_t n0 = (tile0 + it) * BK;
    const std::uint32_t sK = s_base + Cfg::kOffK + buf * Cfg::kKTileBytes;
    const std::uint32_t sV = s_base + Cfg::kOffV + buf * Cfg::kKTileBytes;

    const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, n0, n0 + BK, shape, p.score);
    const int diag = clamp_diag(n0 - m0 - row0 - shift);  // (key - query - shift) at local (0, 0)
    const int kmax = clamp_diag(shape.seqlen_k - n0);      // local keys >= kmax are past seqlen_k
    // The tile's keys in chunks of KC, which bounds the registers the S / dP strips take.
#pragma unroll
    for (int c0 = 0; c0 < BK; c0 += KC) {
      float s[KC / 8][4];
      zero(s);
      gemm_abt<T, KC / 8, D / 16, D>(s, sQ, row0, sK, c0);
#pragma unroll
      for (int j = 0; j < KC / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = c0 + 8 * j + 2 * t + (e & 1);
          float pv = fast_exp2(fmaf(s[j][e], p.scale_log2, -lse_r[e >> 1]));
          if (!full) {
            const int diff = diag + col - (g + 8 * (e >> 1));
            if (diff < p.win_lo || diff > p.win_hi || col >= kmax) pv = 0.0f;
          }
          s[j][e] = pv;
        }
      float dp[KC / 8][4];
      zero(dp);
      gemm_abt<T, KC / 8, D / 16, D>(dp, sDO, row0, sV, c0);
#pragma unroll
      for (int j = 0; j < KC / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[j][e] = s[j][e] * (dp[j][e] - dsum_r[e >> 1]);
      std::uint32_t dsa[KC / 16][4];
      acc_to_a<T, KC / 8>(dsa, dp);
      gemm_rab<T, D / 8, KC / 16, D>(dq, dsa, sK, c0, 0);
    }
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // dQ = scale * dS K, written straight to the output; padded rows are skipped.
  T* out = static_cast<T*>(p.dq.data) + b * p.dq.stride_b + h * p.dq.stride_h + 2 * t;
  store_dq<T, D, DS>(out, p.dq.stride_s, m0 + row0 + g, shape.seqlen_q, dq, p.scale);
}

}  // namespace kfa::cuda::bwd
