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

template <class T, int D, int BQ, int BK, int KC, int DS = D>
__global__ void __launch_bounds__(DqConfig<D, BQ, BK>::kThreads) dq_feat_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DqConfig<D, BQ, BK>;
  constexpr int NT = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  const DqSmem<D, BQ, BK> sm(smem);

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
    load_tile_pair<T, BK, DS, NT>(sm.k(buf), kbase, p.k.stride_s, sm.v(buf), vbase, p.v.stride_s, n0, shape.seqlen_k);
  };
  zero_pad_columns<D, DS, BQ, NT>(sm.q());  // padded head dims only (steps.cuh)
  zero_pad_columns<D, DS, BQ, NT>(sm.dout());
  for (int zb = 0; zb < 2; ++zb) {
    zero_pad_columns<D, DS, BK, NT>(sm.k(zb));
    zero_pad_columns<D, DS, BK, NT>(sm.v(zb));
  }
  {
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + sb.q_begin * p.q.stride_s + h * p.q.stride_h;
    const T* go =
        static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + sb.q_begin * p.dout.stride_s + h * p.dout.stride_h;
    load_tile_pair<T, BQ, DS, NT>(sm.q(), q, p.q.stride_s, sm.dout(), go, p.dout.stride_s, m0, shape.seqlen_q);
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < BQ) {  // ordered before their use by the first step's barrier
      const float* lse_bh = static_cast<const float*>(p.lse.data) + b * p.lse.stride_b + h * p.lse.stride_h +
                            sb.q_begin * p.lse.stride_s;
      const RowStats st = row_stats(p, lse_bh, row_map<true>(p, b, h, sb.q_begin), m0 + tid, shape.seqlen_q);
      sm.stage_stats(st, tid);
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
    if (it == 0) sm.read_stats(lse_r, dsum_r, row0 + g);
    const std::int64_t kt_next = kfa::detail::next_key_tile(trip, kt + 1, BK, m0, m_end, b, h, shape, p.score);
    if (kt_next < last) {
      load_kv(kt_next, buf ^ 1);
      cp_async_commit();
    }
    const std::int64_t n0 = kt * BK;
    const std::uint32_t sK = sm.k(buf), sV = sm.v(buf);

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
      s_product<T, D, KC>(s, sm.q(), row0, sK, c0);
      // P (times dx/d dot under softcap: P only feeds dS here), one loop per combination of the
      // modifiers (uniform branches, no per-element tests)
      const FragMask fmk{diag, kmax, p.win_lo, p.win_hi, w.window_mask || bits};
      {
        using Y = std::true_type;
        using N = std::false_type;
        auto p_c = [&](auto softcap_tag, auto alibi_tag) {
          p_chunk<KC, decltype(softcap_tag)::value, decltype(alibi_tag)::value, true>(s, fm, lse_r, p.scale_log2, fmk,
                                                                                   allow, c0, g, t);
        };
        if (fm.softcap) fm.alibi ? p_c(Y{}, Y{}) : p_c(Y{}, N{});
        else fm.alibi ? p_c(N{}, Y{}) : p_c(N{}, N{});
      }
      float dp[KC / 8][4];
      s_product<T, D, KC>(dp, sm.dout(), row0, sV, c0);
      if (p.dropout.on) ds_chunk<KC, true>(dp, s, dsum_r, keep, p.dropout.keep_scale, c0);
      else ds_chunk<KC, false>(dp, s, dsum_r, keep, 1.0f, c0);
      dq_chunk_product<T, D, KC>(dq, dp, sK, c0);
    }
    kt = kt_next;
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // dQ = scale * dS K, written straight to the output; padded rows are skipped.
  T* out = static_cast<T*>(p.dq.data) + b * p.dq.stride_b + sb.q_begin * p.dq.stride_s + h * p.dq.stride_h + 2 * t;
  store_dq<T, D, DS>(out, p.dq.stride_s, m0 + row0 + g, shape.seqlen_q, dq, p.scale);
}

}  // namespace kfa::cuda::bwd
