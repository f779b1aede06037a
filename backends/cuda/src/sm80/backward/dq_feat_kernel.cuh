#pragma once
// The deterministic dQ kernel of calls with features: dq_kernel.cuh's structure (one CTA per
// (sequence, query head, BQ rows) walking key tiles in a fixed order, dQ in registers) with the
// features behind warp-uniform branches (see dkdv_feat_kernel.cuh). The key walk follows the feature
// policy's key_trip / key_tile_work / next_key_tile, so block-sparse skips are never loaded.
#include <cstdint>
#include <type_traits>

#include "sm80/backward/dq_kernel.cuh"
#include "sm80/backward/features.cuh"
#include "kfa/detail/feature_policy.hpp"

namespace kfa::cuda::bwd {

/// The block mask's answers for a dQ warp's S fragment over one key tile of BK keys: rows row_g and
/// row_g + 8 (positions in the sequence), keys col0 + 8 j + 2 t + e1; bit 16 hi + 2 j + e1.
template <int BK>
__device__ __forceinline__ std::uint32_t block_mask_s(const kfa::detail::BlockSparseSpec& m, std::int64_t batch,
                                                   std::int64_t h, std::int64_t row_g, std::int64_t col0,
                                                   std::int64_t seqlen_q, int t) {
  static_assert(BK <= 64, "16 bits per row");
  std::uint32_t allow = 0;
#pragma unroll 1
  for (int hi = 0; hi < 2; ++hi) {
    const std::int64_t row = row_g + 8 * hi;
    if (row >= seqlen_q || m.qblock_of(row) >= m.n_qblocks) continue;
    const kfa::detail::BlockRow br = kfa::detail::block_row(m, batch, h, row);
#pragma unroll 1
    for (int j = 0; j < BK / 8; ++j)
#pragma unroll
      for (int e1 = 0; e1 < 2; ++e1)
        if (kfa::detail::block_allows(m, br, col0 + 8 * j + 2 * t + e1)) allow |= 1u << (16 * hi + 2 * j + e1);
  }
  return allow;
}

template <class T, int D, int BQ, int BK, int KC>
__global__ void __launch_bounds__(DqConfig<D, BQ, BK>::kThreads) dq_feat_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DqConfig<D, BQ, BK>;
  constexpr int NT = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  const std::uint32_t s_base = smem_u32(smem);
  const std::uint32_t sQ = s_base + Cfg::kOffQ, sDO = s_base + Cfg::kOffDO;
  const float* s_lse = reinterpret_cast<const float*>(smem + Cfg::kOffLse);
  const float* s_dsum = reinterpret_cast<const float*>(smem + Cfg::kOffDsum);

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.x) * BQ;
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.y) / p.shape.heads;
  const std::int64_t h = static_cast<std::int64_t>(blockIdx.y) % p.shape.heads;
  const std::int64_t hk = h / (p.shape.heads / p.shape.heads_kv);
  const kfa::detail::SequenceBounds sb = kfa::detail::sequence_bounds(p.shape, p.varlen, b);
  const kfa::detail::Shape shape = kfa::detail::sequence_shape(p.shape, sb);
  if (m0 >= shape.seqlen_q) return;  // a query tile past its sequence: nothing to write
  const std::int64_t m_end = m0 + BQ < shape.seqlen_q ? m0 + BQ : shape.seqlen_q;

  // The walk: key tiles kt = first, next(first), ... while kt < last.
  const kfa::detail::KeyTrip trip = kfa::detail::key_trip(m0, m_end, BK, shape, p.score);
  const std::int64_t first = kfa::detail::next_key_tile(trip, trip.begin, BK, m0, m_end, b, h, shape, p.score);
  const std::int64_t last = trip.end;

  const T* kbase = static_cast<const T*>(p.k.data) + b * p.k.stride_b + sb.k_begin * p.k.stride_s + hk * p.k.stride_h;
  const T* vbase = static_cast<const T*>(p.v.data) + b * p.v.stride_b + sb.k_begin * p.v.stride_s + hk * p.v.stride_h;
  auto load_kv = [&](std::int64_t kt, int buf) {
    const std::int64_t n0 = kt * BK;
    load_rows_async<T, BK, D, NT>(s_base + Cfg::kOffK + buf * Cfg::kKTileBytes, kbase, p.k.stride_s, n0,
                                  shape.seqlen_k);
    load_rows_async<T, BK, D, NT>(s_base + Cfg::kOffV + buf * Cfg::kKTileBytes, vbase, p.v.stride_s, n0,
                                  shape.seqlen_k);
  };
  {
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + sb.q_begin * p.q.stride_s + h * p.q.stride_h;
    const T* go =
        static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + sb.q_begin * p.dout.stride_s + h * p.dout.stride_h;
    load_rows_async<T, BQ, D, NT>(sQ, q, p.q.stride_s, m0, shape.seqlen_q);
    load_rows_async<T, BQ, D, NT>(sDO, go, p.dout.stride_s, m0, shape.seqlen_q);
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < BQ) {  // ordered before their use by the first step's barrier
      const float* lse_bh = static_cast<const float*>(p.lse.data) + b * p.lse.stride_b + h * p.lse.stride_h +
                            sb.q_begin * p.lse.stride_s;
      const RowStats st = row_stats(p, lse_bh, row_map<true>(p, b, h, sb.q_begin), m0 + tid, shape.seqlen_q);
      reinterpret_cast<float*>(smem + Cfg::kOffLse)[tid] = st.lse_log2;
      reinterpret_cast<float*>(smem + Cfg::kOffDsum)[tid] = st.dsum;
    }
    if (first < last) load_kv(first, 0);
    cp_async_commit();
  }

  float dq[D / 8][4];
  zero(dq);
  const int row0 = warp * 16;
  float lse_r[2] = {0, 0}, dsum_r[2] = {0, 0};
  const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;
  const FeatureMod fm = feature_mod(p.score, h);

  std::int64_t kt = first;
  for (std::int64_t it = 0; kt < last; ++it) {
    const int buf = static_cast<int>(it & 1);
    cp_async_wait<0>();
    __syncthreads();
    if (it == 0) {
      lse_r[0] = s_lse[row0 + g];
      lse_r[1] = s_lse[row0 + g + 8];
      dsum_r[0] = s_dsum[row0 + g];
      dsum_r[1] = s_dsum[row0 + g + 8];
    }
    const std::int64_t kt_next = kfa::detail::next_key_tile(trip, kt + 1, BK, m0, m_end, b, h, shape, p.score);
    if (kt_next < last) {
      load_kv(kt_next, buf ^ 1);
      cp_async_commit();
    }
    const std::int64_t n0 = kt * BK;
    const std::uint32_t sK = s_base + Cfg::kOffK + buf * Cfg::kKTileBytes;
    const std::uint32_t sV = s_base + Cfg::kOffV + buf * Cfg::kKTileBytes;

    const kfa::detail::KeyTileWork w = kfa::detail::key_tile_work(trip, kt, BK, m0, m_end, b, h, shape, p.score);
    const bool bits = w.block_bits;
    const int diag = clamp_diag(n0 - m0 - row0 - shift);  // (key - query - shift) at local (0, 0)
    const int kmax = clamp_diag(shape.seqlen_k - n0);      // local keys >= kmax are past seqlen_k
    std::uint32_t allow = ~0u, keep = 0;
    if (bits) allow = block_mask_s<BK>(p.score.blocks, b + p.score.batch_base, h, m0 + row0 + g, n0, shape.seqlen_q, t);
    if (p.dropout.on) keep = dropout_keep_s<BK / 16>(p.dropout, b, h, m0 + row0 + g, n0, t);
    // The tile's keys in chunks of KC, which bounds the registers the S / dP strips take.
#pragma unroll
    for (int c0 = 0; c0 < BK; c0 += KC) {
      float s[KC / 8][4];
      zero(s);
      gemm_abt<T, KC / 8, D / 16, D>(s, sQ, row0, sK, c0);
      // P (times dx/d dot under softcap: P only feeds dS here), one loop per combination of the
      // modifiers (uniform branches, no per-element tests)
      const bool masked = w.window_mask || bits;
      auto p_chunk = [&](auto softcap_tag, auto alibi_tag) {
        constexpr bool kCap = decltype(softcap_tag)::value, kAlibi = decltype(alibi_tag)::value;
#pragma unroll
        for (int j = 0; j < KC / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = c0 + 8 * j + 2 * t + (e & 1);
            const int diff = diag + col - (g + 8 * (e >> 1));
            float x = s[j][e], dx = 1.0f;
            if constexpr (kCap) {
              const float th = policy::fast_tanh(x * fm.softcap_in);
              x = fm.softcap_out * th;
              dx = fmaf(-th, th, 1.0f);
            }
            if constexpr (kAlibi) x = fmaf(fm.alibi_k, static_cast<float>(abs(diff)), x);
            float pv = fast_exp2(fmaf(x, p.scale_log2, -lse_r[e >> 1]));
            if constexpr (kCap) pv *= dx;
            if (masked) {
              const int jt = c0 / 8 + j;  // n8 block within the tile
              const bool ok = diff >= p.win_lo && diff <= p.win_hi && col < kmax &&
                              ((allow >> (16 * (e >> 1) + 2 * jt + (e & 1))) & 1u);
              if (!ok) pv = 0.0f;
            }
            s[j][e] = pv;
          }
      };
      {
        using Y = std::true_type;
        using N = std::false_type;
        if (fm.softcap) fm.alibi ? p_chunk(Y{}, Y{}) : p_chunk(Y{}, N{});
        else fm.alibi ? p_chunk(N{}, Y{}) : p_chunk(N{}, N{});
      }
      float dp[KC / 8][4];
      zero(dp);
      gemm_abt<T, KC / 8, D / 16, D>(dp, sDO, row0, sV, c0);
      if (p.dropout.on) {
        const float ks = p.dropout.keep_scale;
#pragma unroll
        for (int j = 0; j < KC / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int jt = c0 / 8 + j;
            const bool kept = (keep >> (16 * (e >> 1) + 4 * (jt >> 1) + 2 * (jt & 1) + (e & 1))) & 1u;
            dp[j][e] = s[j][e] * ((kept ? dp[j][e] * ks : 0.0f) - dsum_r[e >> 1]);
          }
      } else {
#pragma unroll
        for (int j = 0; j < KC / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) dp[j][e] = s[j][e] * (dp[j][e] - dsum_r[e >> 1]);
      }
      std::uint32_t dsa[KC / 16][4];
      acc_to_a<T, KC / 8>(dsa, dp);
      gemm_rab<T, D / 8, KC / 16, D>(dq, dsa, sK, c0, 0);
    }
    kt = kt_next;
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // dQ = scale * dS K, written straight to the output; padded rows are skipped.
  T* out = static_cast<T*>(p.dq.data) + b * p.dq.stride_b + sb.q_begin * p.dq.stride_s + h * p.dq.stride_h + 2 * t;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const std::int64_t r = m0 + row0 + g + 8 * hi;
    if (r >= shape.seqlen_q) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
      *reinterpret_cast<std::uint32_t*>(out + r * p.dq.stride_s + 8 * j) =
          ElemOps<T>::pack(dq[j][2 * hi] * p.scale, dq[j][2 * hi + 1] * p.scale);
  }
}

}  // namespace kfa::cuda::bwd
