#pragma once
// Earlier dK/dV kernel (kept for comparison; register strips, S^T per warp of 16 keys): one CTA per (batch, kv head, BK keys).
// K and V stay in shared memory; the CTA walks every query tile (of every query head sharing the
// kv head, so GQA needs no reduction pass) that sees its keys, with Q/dO/lse/D double-buffered
// through cp.async. Warp w owns keys [16w, 16w + 16) and works in the transposed orientation:
//   S^T = K_w Q^T, P^T = exp2(S^T * scale_log2 - lse_log2), dP^T = V_w dO^T, dS^T = P^T (dP^T - D)
//   dV_w += P^T dO,  dK_w += dS^T Q   (P^T and dS^T feed the mma straight from registers)
// On the atomic path dS^T also goes through shared memory and the CTA adds dS K into the fp32 dQ
// accumulator with atomics; the deterministic path leaves dQ to dq_kernel.
#include <cstdint>

#include "kfa/detail/tile_rules.hpp"
#include "params.cuh"
#include "smem_tile.cuh"
#include "warp_gemm.cuh"

namespace kfa::cuda::bwd {

template <int D, int BQ, int BK>
struct DkdvStripConfig {
  static constexpr int kWarps = BK / 16;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kQTileBytes = BQ * D * 2;
  static constexpr int kKTileBytes = BK * D * 2;
  // layout: K | V | Q[2] | dO[2] | dS^T | lse[2] | D[2]
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKTileBytes;
  static constexpr int kOffQ = kOffV + kKTileBytes;
  static constexpr int kOffDO = kOffQ + 2 * kQTileBytes;
  static constexpr int kOffDS = kOffDO + 2 * kQTileBytes;
  static constexpr int kOffLse = kOffDS + BK * BQ * 2;
  static constexpr int kOffDsum = kOffLse + 2 * BQ * 4;
  static constexpr int kSmemBytes = kOffDsum + 2 * BQ * 4;
  // dQ tile [BQ x D] split over the warps: BQ/16 row strips x (kWarps / (BQ/16)) column blocks
  static constexpr int kDqRowWarps = BQ / 16;
  static constexpr int kDqColWarps = kWarps / kDqRowWarps;
  static constexpr int kDqCols = D / kDqColWarps;
  static_assert(kWarps % kDqRowWarps == 0 && D % kDqColWarps == 0 && kDqCols % 16 == 0, "dQ warp split");
};

/// Adds a pair of neighbouring floats to global memory (one vector atomic where the GPU has it).
__device__ __forceinline__ void atomic_add2_strip(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(a, b));
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

template <class T, int D, int BQ, int BK, int QC, bool kAtomicDq>
__global__ void __launch_bounds__(DkdvStripConfig<D, BQ, BK>::kThreads, 1) dkdv_strip_kernel(const __grid_constant__ KernelParams p) {
  using Cfg = DkdvStripConfig<D, BQ, BK>;
  constexpr int NT = Cfg::kThreads;
  extern __shared__ __align__(128) unsigned char smem[];
  const std::uint32_t s_base = smem_u32(smem);
  const std::uint32_t sK = s_base + Cfg::kOffK, sV = s_base + Cfg::kOffV, sDS = s_base + Cfg::kOffDS;
  const float* s_lse = reinterpret_cast<const float*>(smem + Cfg::kOffLse);
  const float* s_dsum = reinterpret_cast<const float*>(smem + Cfg::kOffDsum);

  const auto& shape = p.shape;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * BK;
  const std::int64_t b = static_cast<std::int64_t>(blockIdx.y) / shape.heads_kv;
  const std::int64_t hk = static_cast<std::int64_t>(blockIdx.y) % shape.heads_kv;
  const std::int64_t group = shape.heads / shape.heads_kv;
  const std::int64_t n_end = n0 + BK < shape.seqlen_k ? n0 + BK : shape.seqlen_k;

  const kfa::detail::VisibleRange rows = kfa::detail::visible_queries(n0, n_end, shape, p.score);
  const std::int64_t tile0 = rows.begin / BQ;
  const std::int64_t ntiles = rows.begin < rows.end ? (rows.end + BQ - 1) / BQ - tile0 : 0;
  const std::int64_t steps = group * ntiles;

  // Issues the loads of step `it` (query head, query tile) into buffer `buf`.
  auto load_step = [&](std::int64_t it, int buf) {
    const std::int64_t h = hk * group + it / ntiles;
    const std::int64_t m0 = (tile0 + it % ntiles) * BQ;
    const T* q = static_cast<const T*>(p.q.data) + b * p.q.stride_b + h * p.q.stride_h;
    const T* go = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + h * p.dout.stride_h;
    load_rows_async<T, BQ, D, NT>(s_base + Cfg::kOffQ + buf * Cfg::kQTileBytes, q, p.q.stride_s, m0, shape.seqlen_q);
    load_rows_async<T, BQ, D, NT>(s_base + Cfg::kOffDO + buf * Cfg::kQTileBytes, go, p.dout.stride_s, m0,
                                  shape.seqlen_q);
    const std::int64_t r = row_index(p, b, h, m0);
    load_floats_async<BQ, NT>(s_base + Cfg::kOffLse + buf * BQ * 4, p.lse_log2 + r);
    load_floats_async<BQ, NT>(s_base + Cfg::kOffDsum + buf * BQ * 4, p.dsum + r);
  };

  {
    const T* k = static_cast<const T*>(p.k.data) + b * p.k.stride_b + hk * p.k.stride_h;
    const T* v = static_cast<const T*>(p.v.data) + b * p.v.stride_b + hk * p.v.stride_h;
    load_rows_async<T, BK, D, NT>(sK, k, p.k.stride_s, n0, shape.seqlen_k);
    load_rows_async<T, BK, D, NT>(sV, v, p.v.stride_s, n0, shape.seqlen_k);
    if (steps > 0) load_step(0, 0);
    cp_async_commit();
  }

  float dk[D / 8][4], dv[D / 8][4];
  zero(dk);
  zero(dv);
  const int key_row0 = warp * 16;  // this warp's keys inside the CTA's block
  // The query rows that see each of this thread's two keys (g and g + 8); keys past seqlen_k see none.
  // Kept as 32-bit offsets from the first tile's row so they cost two registers each.
  int seen_lo[2], seen_hi[2];
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const std::int64_t key = n0 + key_row0 + g + 8 * hi;
    const kfa::detail::VisibleRange r = key < shape.seqlen_k ? kfa::detail::visible_queries(key, key + 1, shape, p.score)
                                                             : kfa::detail::VisibleRange{0, 0};
    seen_lo[hi] = static_cast<int>(clamp_offset(r.begin - tile0 * BQ));
    seen_hi[hi] = static_cast<int>(clamp_offset(r.end - tile0 * BQ));
  }

  for (std::int64_t it = 0; it < steps; ++it) {
    const int buf = static_cast<int>(it & 1);
    cp_async_wait<0>();
    __syncthreads();  // step `it` landed; everyone is done with the other buffer and with dS^T
    if (it + 1 < steps) {
      load_step(it + 1, buf ^ 1);
      cp_async_commit();
    }
    const std::int64_t h = hk * group + it / ntiles;
    const std::int64_t m0 = (tile0 + it % ntiles) * BQ;
    const std::uint32_t sQ = s_base + Cfg::kOffQ + buf * Cfg::kQTileBytes;
    const std::uint32_t sDO = s_base + Cfg::kOffDO + buf * Cfg::kQTileBytes;
    const float* lse = s_lse + buf * BQ;
    const float* dsum = s_dsum + buf * BQ;

    const bool full = kfa::detail::tile_fully_visible(m0, m0 + BQ, n0, n0 + BK, shape, p.score);
    int col_lo[2], col_hi[2];  // visible query columns of this tile, per key row, as tile offsets
    const int tile_off = static_cast<int>(it % ntiles) * BQ;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      col_lo[hi] = seen_lo[hi] - tile_off;
      col_hi[hi] = seen_hi[hi] - tile_off;
    }
    // The tile's query columns in chunks of QC, which bounds the registers the S^T / dP^T strips take.
#pragma unroll
    for (int c0 = 0; c0 < BQ; c0 += QC) {
      float s[QC / 8][4];
      zero(s);
      gemm_abt<T, QC / 8, D / 16, D>(s, sK, key_row0, sQ, c0);
      // P^T; element (key row, query col). Padded rows have lse +inf and come out 0 without masks.
#pragma unroll
      for (int j = 0; j < QC / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = c0 + 8 * j + 2 * t + (e & 1);
          float pv = exp2f(fmaf(s[j][e], p.scale_log2, -lse[col]));
          if (!full && (col < col_lo[e >> 1] || col >= col_hi[e >> 1])) pv = 0.0f;
          s[j][e] = pv;
        }
      float dp[QC / 8][4];
      zero(dp);
      gemm_abt<T, QC / 8, D / 16, D>(dp, sV, key_row0, sDO, c0);
      {
        std::uint32_t pa[QC / 16][4];
        acc_to_a<T, QC / 8>(pa, s);
        gemm_rab<T, D / 8, QC / 16, D>(dv, pa, sDO, c0, 0);
      }
#pragma unroll
      for (int j = 0; j < QC / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[j][e] = s[j][e] * (dp[j][e] - dsum[c0 + 8 * j + 2 * t + (e & 1)]);
      std::uint32_t dsa[QC / 16][4];
      acc_to_a<T, QC / 8>(dsa, dp);
      gemm_rab<T, D / 8, QC / 16, D>(dk, dsa, sQ, c0, 0);
      if constexpr (kAtomicDq) {
        // dS^T to shared memory: A fragment kk holds columns 16kk.. (regs 0/2: row g, 1/3: row g+8).
#pragma unroll
        for (int kk = 0; kk < QC / 16; ++kk) {
          const int r = key_row0 + g, c = c0 + 16 * kk + 2 * t;
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<BQ>(sDS, r, c)), "r"(dsa[kk][0]));
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<BQ>(sDS, r + 8, c)), "r"(dsa[kk][1]));
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<BQ>(sDS, r, c + 8)), "r"(dsa[kk][2]));
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<BQ>(sDS, r + 8, c + 8)), "r"(dsa[kk][3]));
        }
      }
    }

    if constexpr (kAtomicDq) {
      __syncthreads();
      const int wq = warp % Cfg::kDqRowWarps, wd = warp / Cfg::kDqRowWarps;
      float dq[Cfg::kDqCols / 8][4];
      zero(dq);
      gemm_tab<T, Cfg::kDqCols / 8, BK / 16, BQ, D>(dq, sDS, wq * 16, sK, wd * Cfg::kDqCols);
      const std::int64_t row = m0 + wq * 16 + g;
      float* acc = p.dq_accum + row_index(p, b, h, row) * D + wd * Cfg::kDqCols + 2 * t;
      const bool lo_ok = row < shape.seqlen_q, hi_ok = row + 8 < shape.seqlen_q;
#pragma unroll
      for (int j = 0; j < Cfg::kDqCols / 8; ++j) {
        if (lo_ok) atomic_add2_strip(acc + 8 * j, dq[j][0], dq[j][1]);
        if (hi_ok) atomic_add2_strip(acc + 8 * D + 8 * j, dq[j][2], dq[j][3]);
      }
    }
  }

  cp_async_wait<0>();  // nothing may stay in flight at exit (no step ran when no query sees the keys)
  // Epilogue: dK = scale * dS^T Q, dV as accumulated; rows past seqlen_k are not written.
  const std::int64_t key = n0 + key_row0 + g;
  T* gk = static_cast<T*>(p.dk.data) + b * p.dk.stride_b + hk * p.dk.stride_h + 2 * t;
  T* gv = static_cast<T*>(p.dv.data) + b * p.dv.stride_b + hk * p.dv.stride_h + 2 * t;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const std::int64_t r = key + 8 * hi;
    if (r >= shape.seqlen_k) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<std::uint32_t*>(gk + r * p.dk.stride_s + 8 * j) =
          ElemOps<T>::pack(dk[j][2 * hi] * p.scale, dk[j][2 * hi + 1] * p.scale);
      *reinterpret_cast<std::uint32_t*>(gv + r * p.dv.stride_s + 8 * j) =
          ElemOps<T>::pack(dv[j][2 * hi], dv[j][2 * hi + 1]);
    }
  }
}

}  // namespace kfa::cuda::bwd
