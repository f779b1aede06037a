#pragma once
// The steps of the mma.sync backward that the dense kernels (dkdv_kernel.cuh, dq_kernel.cuh) and
// their featured copies (dkdv_feat_kernel.cuh, dq_feat_kernel.cuh) share, each written once: the
// shared-memory layouts, the tile loads, the staging of the row statistics, the per-step products,
// dS on a fragment, the featured kernels' P (score modifiers, dropout and block bits as compile-time
// switches) and the epilogue stores. The kernels stay two (dense and featured): one kernel with a
// Featured flag spilled more at head_dim 128. The dense kernels keep their own P loop (exp2 and the
// window mask only): through p_tile_st / p_chunk with every switch off, ptxas allocated them
// differently (dense dK/dV hd128 deterministic 8 -> 36 B of spills on sm_90, dense dQ 238 -> 174 registers).
#include <cstdint>

#include "sm80/backward/params.cuh"
#include "arch/smem_tile.cuh"
#include "arch/warp_gemm.cuh"
#include "policy/fragment_policy.cuh"  // fast_tanh (softcap, featured instances only)

namespace kfa::cuda::bwd {

// ---------------------------------------------------------------------------------------------------
// Shared-memory layouts

/// The warps of a dK/dV CTA: kKeyWarps rows of 32 keys (BK / 32) times kColWarps columns; a warp's S^T
/// and dP^T tiles are its 32 keys x kSQ query columns of each 64-query pass, its dK/dV tiles its 32 keys
/// x kKD head dims. BK = 128: 4 x 2 warps (32 queries, D / 2 head dims each); BK = 64 (the wide head
/// dims, whose K, V and double-buffered Q, dO fill the shared memory): 2 x 4 (16 queries, D / 4).
template <int D, int BQ, int BK>
struct DkdvConfig {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static_assert(BK == 128 || BK == 64, "four or two 32-key warp rows");
  static_assert(BQ % 64 == 0, "64-query passes");
  static constexpr int kKeyWarps = BK / 32;
  static constexpr int kColWarps = kWarps / kKeyWarps;
  static constexpr int kQTileBytes = BQ * D * 2;
  static constexpr int kKTileBytes = BK * D * 2;
  static constexpr int kPTileBytes = BK * BQ * 2;
  // layout: K | V | Q[2] | dO[2] | P^T | dS^T | lse[2] | D[2]
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKTileBytes;
  static constexpr int kOffQ = kOffV + kKTileBytes;
  static constexpr int kOffDO = kOffQ + 2 * kQTileBytes;
  static constexpr int kOffP = kOffDO + 2 * kQTileBytes;
  static constexpr int kOffDS = kOffP + kPTileBytes;
  static constexpr int kOffLse = kOffDS + kPTileBytes;
  static constexpr int kOffDsum = kOffLse + 2 * BQ * 4;
  static constexpr int kSmemBytes = kOffDsum + 2 * BQ * 4;
  static constexpr int kSQ = 64 / kColWarps;  // query columns of a warp's S^T tile in a 64-query pass
  static constexpr int kKD = D / kColWarps;   // head dims of a warp's dK/dV tile
  // dQ tile [BQ x D]: BQ/32 warp rows of 32 queries x the rest of the warps over head dims
  static constexpr int kDqRowWarps = BQ / 32;
  static constexpr int kDqColWarps = kWarps / kDqRowWarps;
  static constexpr int kDqCols = D / kDqColWarps;
  // ... made kDqPartCols columns at a time (registers: head_dim 256 holds 128 dK/dV floats per thread)
  static constexpr int kDqPartCols = kDqCols < 32 ? kDqCols : 32;
  static constexpr int kDqParts = kDqCols / kDqPartCols;
  static_assert(kDqCols % 16 == 0 && kSQ % 16 == 0 && kKD % 16 == 0, "warp tile shapes");
};

/// The dK/dV kernel's shared-memory tiles (addresses) and row-statistics buffers.
template <int D, int BQ, int BK>
struct DkdvSmem {
  using Cfg = DkdvConfig<D, BQ, BK>;
  unsigned char* raw;
  std::uint32_t base;
  __device__ __forceinline__ explicit DkdvSmem(unsigned char* smem) : raw(smem), base(smem_u32(smem)) {}
  __device__ __forceinline__ std::uint32_t k() const { return base + Cfg::kOffK; }
  __device__ __forceinline__ std::uint32_t v() const { return base + Cfg::kOffV; }
  __device__ __forceinline__ std::uint32_t p() const { return base + Cfg::kOffP; }
  __device__ __forceinline__ std::uint32_t ds() const { return base + Cfg::kOffDS; }
  __device__ __forceinline__ std::uint32_t q(int buf) const { return base + Cfg::kOffQ + buf * Cfg::kQTileBytes; }
  __device__ __forceinline__ std::uint32_t dout(int buf) const { return base + Cfg::kOffDO + buf * Cfg::kQTileBytes; }
  __device__ __forceinline__ const float* lse(int buf) const {
    return reinterpret_cast<const float*>(raw + Cfg::kOffLse) + buf * BQ;
  }
  __device__ __forceinline__ const float* dsum(int buf) const {
    return reinterpret_cast<const float*>(raw + Cfg::kOffDsum) + buf * BQ;
  }
  /// The row statistics of a step travel through registers of the first BQ threads (`tid`) and are
  /// stored to buffer `buf` at the end of the step before.
  __device__ __forceinline__ void stash_stats(const RowStats& st, int buf, int tid) const {
    if (tid < BQ) {
      reinterpret_cast<float*>(raw + Cfg::kOffLse)[buf * BQ + tid] = st.lse_log2;
      reinterpret_cast<float*>(raw + Cfg::kOffDsum)[buf * BQ + tid] = st.dsum;
    }
  }
};

template <int D, int BQ, int BK>
struct DqConfig {
  static constexpr int kWarps = BQ / 16;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kQTileBytes = BQ * D * 2;
  static constexpr int kKTileBytes = BK * D * 2;
  // layout: Q | dO | K[2] | V[2] | lse | D
  static constexpr int kOffQ = 0;
  static constexpr int kOffDO = kOffQ + kQTileBytes;
  static constexpr int kOffK = kOffDO + kQTileBytes;
  static constexpr int kOffV = kOffK + 2 * kKTileBytes;
  static constexpr int kOffLse = kOffV + 2 * kKTileBytes;
  static constexpr int kOffDsum = kOffLse + BQ * 4;
  static constexpr int kSmemBytes = kOffDsum + BQ * 4;
};

/// The dQ kernel's shared-memory tiles (addresses) and row statistics.
template <int D, int BQ, int BK>
struct DqSmem {
  using Cfg = DqConfig<D, BQ, BK>;
  unsigned char* raw;
  std::uint32_t base;
  __device__ __forceinline__ explicit DqSmem(unsigned char* smem) : raw(smem), base(smem_u32(smem)) {}
  __device__ __forceinline__ std::uint32_t q() const { return base + Cfg::kOffQ; }
  __device__ __forceinline__ std::uint32_t dout() const { return base + Cfg::kOffDO; }
  __device__ __forceinline__ std::uint32_t k(int buf) const { return base + Cfg::kOffK + buf * Cfg::kKTileBytes; }
  __device__ __forceinline__ std::uint32_t v(int buf) const { return base + Cfg::kOffV + buf * Cfg::kKTileBytes; }
  /// Row `tid` (< BQ) of the tile's statistics; ordered before their use by the first step's barrier.
  __device__ __forceinline__ void stage_stats(const RowStats& st, int tid) const {
    reinterpret_cast<float*>(raw + Cfg::kOffLse)[tid] = st.lse_log2;
    reinterpret_cast<float*>(raw + Cfg::kOffDsum)[tid] = st.dsum;
  }
  /// The statistics of a warp fragment's rows r and r + 8, into registers.
  __device__ __forceinline__ void read_stats(float (&lse_r)[2], float (&dsum_r)[2], int r) const {
    const float* s_lse = reinterpret_cast<const float*>(raw + Cfg::kOffLse);
    const float* s_dsum = reinterpret_cast<const float*>(raw + Cfg::kOffDsum);
    lse_r[0] = s_lse[r];
    lse_r[1] = s_lse[r + 8];
    dsum_r[0] = s_dsum[r];
    dsum_r[1] = s_dsum[r + 8];
  }
};

// ---------------------------------------------------------------------------------------------------
// Loads and shared-memory stores

/// Two tiles of ROWS rows from row0 (rows at or past rows_valid zero-filled), e.g. K and V, Q and dO.
template <class T, int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_pair(std::uint32_t tile_a, const T* a, std::int64_t stride_a,
                                               std::uint32_t tile_b, const T* b, std::int64_t stride_b,
                                               std::int64_t row0, std::int64_t rows_valid) {
  load_rows_async<T, ROWS, D, NT>(tile_a, a, stride_a, row0, rows_valid);
  load_rows_async<T, ROWS, D, NT>(tile_b, b, stride_b, row0, rows_valid);
}

/// Head dims that are not a multiple of 64 (96) compute as the next multiple D (128, the row padding
/// of SwizzledTile): the kernels take the data head dim DS beside D, load DS columns, and zero the pad
/// columns [DS, D) of every D-wide tile once at the start (loads never write them), so that S and dP,
/// which reduce over the head dim, are exact; the gradients' pad columns are never stored.
template <int D, int DS, int ROWS, int NT>
__device__ __forceinline__ void zero_pad_columns(std::uint32_t tile) {
  if constexpr (DS < D) {
    constexpr int kPad = (D - DS) / 8;  // 16-byte chunks per row
    for (int i = static_cast<int>(threadIdx.x); i < ROWS * kPad; i += NT) {
      const int r = i / kPad, c = DS / 8 + i % kPad;
      asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(tile + SwizzledTile<D>::chunk_offset(r, c)),
                   "r"(0));
    }
  }
}

/// Whether the n-block of a fragment at head-dim column col (a lane's first column in it) holds data:
/// always, unless the head dim is padded (DS < D) and col lies in the pad.
template <int D, int DS>
__device__ __forceinline__ bool data_column(int col) {
  if constexpr (DS < D) return col < DS;
  return true;
}

/// Stores an fp32 accumulator tile [16*MT x 8*NB] at (row0, col0) of a swizzled [.][COLS] tile as T.
template <class T, int MT, int NB, int COLS>
__device__ __forceinline__ void store_tile(std::uint32_t tile, int row0, int col0, const float (&acc)[MT][NB][4]) {
  const int l = lane_id(), g = l >> 2, t = l & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NB; ++j) {
      const int r = row0 + mt * 16 + g, c = col0 + 8 * j + 2 * t;
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<COLS>(tile, r, c)),
                   "r"(ElemOps<T>::pack(acc[mt][j][0], acc[mt][j][1])));
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<COLS>(tile, r + 8, c)),
                   "r"(ElemOps<T>::pack(acc[mt][j][2], acc[mt][j][3])));
    }
}

/// The same for a tile already packed as T pairs (regs 0: row g, 1: row g + 8).
template <int MT, int NB, int COLS>
__device__ __forceinline__ void store_packed_tile(std::uint32_t tile, int row0, int col0,
                                                  const std::uint32_t (&pk)[MT][NB][2]) {
  const int l = lane_id(), g = l >> 2, t = l & 3;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NB; ++j) {
      const int r = row0 + mt * 16 + g, c = col0 + 8 * j + 2 * t;
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<COLS>(tile, r, c)), "r"(pk[mt][j][0]));
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(tile_elem_addr<COLS>(tile, r + 8, c)), "r"(pk[mt][j][1]));
    }
}

// ---------------------------------------------------------------------------------------------------
// Score fragments: the masks, modifiers and dropout that P and dS take, shared by both kernels

/// No score modifiers (the dense kernels); the featured ones pass their FeatureMod (features.cuh):
/// softcap_in, softcap_out, alibi_k, read only when the matching switch is on.
struct NoScoreMod {};

/// What decides an element of P: its visibility (win_lo <= diff <= win_hi, inside the keys; the
/// block bit where kBits) and, with modifiers, the score it is made from.
struct FragMask {
  int diag;         // key - query - shift at the fragment's local (0, 0)
  int kmax;         // local keys >= kmax are past seqlen_k
  int win_lo, win_hi;
  bool masked;      // the tile needs element masks (else every element is visible)
};

/// The score x of dot product `s` at (key - query - shift) = diff, and dx/d dot (softcap), per
/// kfa::detail::modify_score.
template <bool kCap, bool kAlibi, class Mod>
__device__ __forceinline__ float modified_score(float s, int diff, const Mod& fm, float& dx) {
  float x = s;
  dx = 1.0f;
  if constexpr (kCap) {
    const float th = policy::fast_tanh(x * fm.softcap_in);
    x = fm.softcap_out * th;
    dx = fmaf(-th, th, 1.0f);
  }
  if constexpr (kAlibi) x = fmaf(fm.alibi_k, static_cast<float>(abs(diff)), x);
  return x;
}

/// dK/dV: P^T of a warp's S^T fragment s (keys key_row0 + [0, 32) in rows, query columns q_col0 + [0, SQ)),
/// element (key row, query col); padded query rows have lse +inf and come out 0 unmasked. pk gets P^T
/// as T pairs (times dx/d dot under softcap), what dS^T uses; what dV takes (P^T, or P^T Z under dropout
/// with keep bits `keep` and scale ks) goes to the P^T tile sP as it is made. Each is rounded to T once,
/// so dS uses the same rounded P that dV sees, as a plain backward in the input precision does.
/// Bits mt * 16 + 4 j + e of `allow` (kBits) and `keep` (kDrop) belong to element [mt][j][e].
template <class T, int SQ, int BQ, bool kCap, bool kAlibi, bool kDrop, bool kBits, class Mod>
__device__ __forceinline__ void p_tile_st(std::uint32_t (&pk)[2][SQ / 8][2], const float (&s)[2][SQ / 8][4],
                                          const Mod& fm, const float* lse, float scale_log2, const FragMask& fmk,
                                          std::uint32_t allow, std::uint32_t keep, float ks, std::uint32_t sP,
                                          int key_row0, int q_col0, int g, int t) {
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
        const int diff = fmk.diag + krow - col;  // key - query - shift
        float dx;
        const float x = modified_score<kCap, kAlibi>(s[mt][j][e], diff, fm, dx);
        float v = fast_exp2(fmaf(x, scale_log2, -lse[col]));  // pairs: one 8-byte load
        if (fmk.masked) {
          if constexpr (kBits) {
            const bool ok = diff >= fmk.win_lo && diff <= fmk.win_hi && krow < fmk.kmax &&
                            ((allow >> (mt * 16 + 4 * j + e)) & 1u);
            if (!ok) v = 0.0f;
          } else if (diff < fmk.win_lo || diff > fmk.win_hi || krow >= fmk.kmax) {
            v = 0.0f;
          }
        }
        pd[e] = kCap ? v * dx : v;
        pv[e] = !kDrop ? v : (keep >> (mt * 16 + 4 * j + e)) & 1u ? v * ks : 0.0f;
      }
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        pk[mt][j][hi] = ElemOps<T>::pack(pd[2 * hi], pd[2 * hi + 1]);
        pst[mt][j][hi] = ElemOps<T>::pack(pv[2 * hi], pv[2 * hi + 1]);  // = pk without softcap, dropout
      }
    }
  store_packed_tile<2, SQ / 8, BQ>(sP, key_row0, q_col0, pst);
}

/// dK/dV: dS^T = P^T (dP^T - D) from the dP^T fragment dp (in place; under dropout dP^T = Z (V dO^T)),
/// then to the dS^T tile sDS.
template <class T, int SQ, int BQ, bool kDrop>
__device__ __forceinline__ void ds_tile_st(float (&dp)[2][SQ / 8][4], const std::uint32_t (&pk)[2][SQ / 8][2],
                                           const float* dsum, std::uint32_t keep, float ks, std::uint32_t sDS,
                                           int key_row0, int q_col0, int t) {
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
  store_tile<T, 2, SQ / 8, BQ>(sDS, key_row0, q_col0, dp);
}

/// dQ: P of a warp's S chunk s (query rows g, g + 8 of the warp, keys c0 + [0, KC) of the tile), in place,
/// times dx/d dot under softcap (P only feeds dS here). lse_r: the rows' lse in log2 units. Bit
/// 16 hi + 2 jt + e1 of `allow` (kBits) belongs to row g + 8 hi, n8 block jt of the tile, column 2t + e1.
template <int KC, bool kCap, bool kAlibi, bool kBits, class Mod>
__device__ __forceinline__ void p_chunk(float (&s)[KC / 8][4], const Mod& fm, const float (&lse_r)[2],
                                        float scale_log2, const FragMask& fmk, std::uint32_t allow, int c0, int g,
                                        int t) {
#pragma unroll
  for (int j = 0; j < KC / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = c0 + 8 * j + 2 * t + (e & 1);
      const int diff = fmk.diag + col - (g + 8 * (e >> 1));
      float dx;
      const float x = modified_score<kCap, kAlibi>(s[j][e], diff, fm, dx);
      float pv = fast_exp2(fmaf(x, scale_log2, -lse_r[e >> 1]));
      if constexpr (kCap) pv *= dx;
      if (fmk.masked) {
        if constexpr (kBits) {
          const bool ok = diff >= fmk.win_lo && diff <= fmk.win_hi && col < fmk.kmax &&
                          ((allow >> (16 * (e >> 1) + 2 * (c0 / 8 + j) + (e & 1))) & 1u);
          if (!ok) pv = 0.0f;
        } else if (diff < fmk.win_lo || diff > fmk.win_hi || col >= fmk.kmax) {
          pv = 0.0f;
        }
      }
      s[j][e] = pv;
    }
}

/// dQ: dS = P (dP - D) of a chunk, in place in dp; under dropout dP = Z (dO V^T), keep bit
/// 16 hi + 4 (jt / 2) + 2 (jt % 2) + e1 (dropout_keep_s's layout).
template <int KC, bool kDrop>
__device__ __forceinline__ void ds_chunk(float (&dp)[KC / 8][4], const float (&s)[KC / 8][4], const float (&dsum_r)[2],
                                         std::uint32_t keep, float ks, int c0) {
#pragma unroll
  for (int j = 0; j < KC / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (kDrop) {
        const int jt = c0 / 8 + j;
        const bool kept = (keep >> (16 * (e >> 1) + 4 * (jt >> 1) + 2 * (jt & 1) + (e & 1))) & 1u;
        dp[j][e] = s[j][e] * ((kept ? dp[j][e] * ks : 0.0f) - dsum_r[e >> 1]);
      } else {
        dp[j][e] = s[j][e] * (dp[j][e] - dsum_r[e >> 1]);
      }
    }
}

// ---------------------------------------------------------------------------------------------------
// Per-step products

/// dK/dV: S^T or dP^T of a warp, [32 keys from key_row0 of tile a] x [SQ queries from q_col0 of tile b].
template <class T, int D, int SQ>
__device__ __forceinline__ void st_product(float (&acc)[2][SQ / 8][4], std::uint32_t a, int key_row0, std::uint32_t b,
                                           int q_col0) {
  zero(acc);
  gemm_abt_mt<T, 2, SQ / 8, D / 16, D, D>(acc, a, key_row0, b, q_col0);
}

/// dK/dV: dV += P^T dO and dK += dS^T Q over the step's BQ queries, for a warp's keys x head dims.
template <class T, int D, int BQ, int KD>
__device__ __forceinline__ void dkdv_products(float (&dv)[2][KD / 8][4], float (&dk)[2][KD / 8][4], std::uint32_t sP,
                                              std::uint32_t sDS, std::uint32_t sDO, std::uint32_t sQ, int key_row0,
                                              int d_col0) {
  gemm_ab_mt<T, 2, KD / 8, BQ / 16, BQ, D>(dv, sP, key_row0, sDO, d_col0);
  gemm_ab_mt<T, 2, KD / 8, BQ / 16, BQ, D>(dk, sDS, key_row0, sQ, d_col0);
}

/// dK/dV, atomic path: a part of a warp's share of the step's dQ tile, dS K: queries wq * 32 + [0, 32) x
/// head dims col0 + [0, 8 NB) (the warp's share: wq = warp % kDqRowWarps, columns wd * kDqCols + [0,
/// kDqCols) for wd = warp / kDqRowWarps, made kDqPartCols at a time).
template <class T, int D, int BQ, int BK, int NB>
__device__ __forceinline__ void dq_step_product(float (&dq)[2][NB][4], std::uint32_t sDS, std::uint32_t sK, int wq,
                                                int col0) {
  zero(dq);
  gemm_tab_mt<T, 2, NB, BK / 16, BQ, D>(dq, sDS, wq * 32, sK, col0);
}

/// Adds m-tile rows g (at lo, if lo_ok) and g + 8 (at hi, if hi_ok) of a dQ fragment into the fp32
/// accumulator (lo / hi: the rows' entries at the warp's first column, lane offset 2t included).
/// col: the lane's head-dim column of n-block 0 (blocks in the pad of a padded head dim are skipped).
template <int D, int DS, int NB>
__device__ __forceinline__ void atomic_add_rows(float* lo, float* hi, bool lo_ok, bool hi_ok,
                                                const float (&dq)[NB][4], int col) {
#pragma unroll
  for (int j = 0; j < NB; ++j) {
    if (!data_column<D, DS>(col + 8 * j)) continue;
    if (lo_ok) atomic_add2(lo + 8 * j, dq[j][0], dq[j][1]);
    if (hi_ok) atomic_add2(hi + 8 * j, dq[j][2], dq[j][3]);
  }
}

/// dQ kernel: S or dP of a warp's 16 rows from row0 of tile a x KC keys from c0 of tile b.
template <class T, int D, int KC>
__device__ __forceinline__ void s_product(float (&acc)[KC / 8][4], std::uint32_t a, int row0, std::uint32_t b, int c0) {
  zero(acc);
  gemm_abt<T, KC / 8, D / 16, D>(acc, a, row0, b, c0);
}

/// dQ kernel: dQ += dS K for a chunk of KC keys from c0 of the K tile.
template <class T, int D, int KC>
__device__ __forceinline__ void dq_chunk_product(float (&dq)[D / 8][4], const float (&ds)[KC / 8][4], std::uint32_t sK,
                                                 int c0) {
  std::uint32_t dsa[KC / 16][4];
  acc_to_a<T, KC / 8>(dsa, ds);
  gemm_rab<T, D / 8, KC / 16, D>(dq, dsa, sK, c0, 0);
}

// ---------------------------------------------------------------------------------------------------
// Epilogues

/// dK = scale * dS^T Q, dV as accumulated: a warp's rows r0 + 16 mt + 8 hi (r0 = its first key row plus
/// g; index type I of the kernel) into gk / gv (at the warp's first column, lane offset 2t included);
/// rows at or past rows_valid are not written, nor the pad columns of a padded head dim (col: the lane's
/// first head-dim column).
template <class T, int KD, int D, int DS, class I>
__device__ __forceinline__ void store_dkdv(T* gk, std::int64_t stride_k, T* gv, std::int64_t stride_v, I r0,
                                           I rows_valid, const float (&dk)[2][KD / 8][4],
                                           const float (&dv)[2][KD / 8][4], float scale, int col) {
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const I r = r0 + mt * 16 + 8 * hi;
      if (r >= rows_valid) continue;
#pragma unroll
      for (int j = 0; j < KD / 8; ++j) {
        if (!data_column<D, DS>(col + 8 * j)) continue;
        *reinterpret_cast<std::uint32_t*>(gk + r * stride_k + 8 * j) =
            ElemOps<T>::pack(dk[mt][j][2 * hi] * scale, dk[mt][j][2 * hi + 1] * scale);
        *reinterpret_cast<std::uint32_t*>(gv + r * stride_v + 8 * j) =
            ElemOps<T>::pack(dv[mt][j][2 * hi], dv[mt][j][2 * hi + 1]);
      }
    }
}

/// dQ = scale * dS K, written straight to the output: a warp's rows r0 and r0 + 8 (r0 = its first row
/// plus g) into out (lane offset 2t included); rows at or past rows_valid are skipped, and the pad columns
/// of a padded head dim.
template <class T, int D, int DS = D>
__device__ __forceinline__ void store_dq(T* out, std::int64_t stride_s, std::int64_t r0, std::int64_t rows_valid,
                                         const float (&dq)[D / 8][4], float scale) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const std::int64_t r = r0 + 8 * hi;
    if (r >= rows_valid) continue;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      if (!data_column<D, DS>(8 * j + 2 * (lane_id() & 3))) continue;
      *reinterpret_cast<std::uint32_t*>(out + r * stride_s + 8 * j) =
          ElemOps<T>::pack(dq[j][2 * hi] * scale, dq[j][2 * hi + 1] * scale);
    }
  }
}

}  // namespace kfa::cuda::bwd
