#pragma once
// The optional features of the backward kernels (softcap, ALiBi, dropout, block masks), as fragment
// helpers over the one definition in kfa/detail/feature_policy.hpp. Only the featured instantiations
// of the kernels (kFeat = true) use them; the dense kernels compile without any of this.
#include <cstdint>

#include "policy/fragment_policy.cuh"
#include "kfa/detail/feature_policy.hpp"

namespace kfa::cuda::bwd {

/// The per-(query head) feature constants of a tile walk; warp-uniform. The kernels apply them as
/// kfa::detail::modify_score defines (x = softcap_out * tanh(dot * softcap_in), then + alibi_k * |i +
/// seqlen_k - seqlen_q - j|; dx/d dot = 1 - tanh^2), with tanh on the SFU (policy::fast_tanh).
struct FeatureMod {
  float softcap_in = 0.0f, softcap_out = 0.0f;  // tanh argument and output scales; softcap off: 0
  float alibi_k = 0.0f;                         // -slope / scale; 0: no ALiBi
  bool softcap = false, alibi = false;
};

__device__ __forceinline__ FeatureMod feature_mod(const kfa::detail::ScoreSpec& sc, std::int64_t h) {
  const kfa::detail::ScoreMod m = kfa::detail::make_score_mod(sc, h);
  FeatureMod f;
  f.softcap = m.softcap != 0.0f;
  f.alibi = m.alibi_slope != 0.0f;
  if (f.softcap) {
    f.softcap_in = m.scale / m.softcap;
    f.softcap_out = m.softcap / m.scale;
  }
  if (f.alibi) f.alibi_k = -m.alibi_slope / m.scale;
  return f;
}

/// Dropout keep bits of a dK/dV warp's S^T fragment (keys in rows, queries in columns):
/// keys key0 + [0, 32) (two 16-key groups: m-tiles mt = 0, 1), queries q0 + [0, 8 NJ) (n-blocks j < NJ,
/// NJ = 4 or 2). Bit mt * 16 + 4 j + e is the keep flag of fragment element [mt][j][e] (rows g, g + 8;
/// columns 2t, 2t+1). The warp needs 16 NJ Philox blocks (8 NJ queries x 2 key groups), each compressed
/// to 16 keep bits: for NJ = 4 lane (g, t) computes the two of query column 8 (g / 2) + 2t + g % 2, for
/// NJ = 2 the one of column 8 (g % 4 / 2) + 2t + g % 2 and key group g / 4; the lanes trade them by 8
/// shuffles. All 32 lanes must call it together. `batch` already includes score.batch_base.
template <int NJ>
__device__ __forceinline__ std::uint32_t dropout_keep_st(const kfa::detail::DropoutPolicy& d, std::int64_t batch,
                                                         std::int64_t h, std::int64_t q0, std::int64_t key0, int g,
                                                         int t) {
  static_assert(NJ == 4 || NJ == 2, "32 or 16 query columns");
  constexpr int kGroups = NJ / 2;  // key groups per lane
  const std::uint32_t thr4 = d.threshold * 0x01010101u;
  std::uint32_t mine = 0;  // bits 16 s + 4 k + byte: group s, word k, byte
  const int gc = NJ == 4 ? g : (g & 3);
  const std::int64_t my_q = q0 + 8 * (gc >> 1) + 2 * t + (gc & 1);
#pragma unroll
  for (int s = 0; s < kGroups; ++s) {
    const int group = NJ == 4 ? s : (g >> 2);
    const kfa::detail::Philox4 w = kfa::detail::dropout_words(d.key, batch, h, my_q, key0 + 16 * group);
#pragma unroll
    for (int k = 0; k < 4; ++k) mine |= policy::keep_nibble(w.w[k], thr4) << (16 * s + 4 * k);
  }
  // This lane's keys g and g + 8 of a group are bytes (g & 1) and (g & 1) + 2 of word g / 2.
  const int sh = 4 * (g >> 1) + (g & 1);
  std::uint32_t keep = 0;
  // Element [mt][j][e] (key g + 8 kh of group mt, query column 8 j + 2t + e1) comes from the lane that
  // made column 8 j + 2t + e1 (NJ = 4: both groups in one word; NJ = 2: the lane of group mt).
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int e1 = 0; e1 < 2; ++e1)
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        if (NJ == 4 && mt == 1) continue;  // one shuffle brought both groups
        const int src = NJ == 4 ? (2 * j + e1) * 4 + t : (4 * mt + 2 * j + e1) * 4 + t;
        const std::uint32_t m = __shfl_sync(0xffffffffu, mine, src) >> sh;
#pragma unroll
        for (int grp = 0; grp < kGroups; ++grp)  // the groups this word holds: mt, or 0 and 1
#pragma unroll
          for (int kh = 0; kh < 2; ++kh)
            keep |= ((m >> (16 * grp + 2 * kh)) & 1u) << ((mt + grp) * 16 + 4 * j + 2 * kh + e1);
      }
  return keep;
}

/// Dropout keep bits of a dQ warp's S fragment (queries in rows g, g + 8, keys in columns) over the
/// NG 16-key groups from key col0: bit 16 hi + 4 G + k (k: columns 2t, 2t+1, 2t+8, 2t+9 of group G) for
/// row g + 8 hi. The quad shares the blocks (fragment_policy's dropout_row_words). NG <= 4.
template <int NG>
__device__ __forceinline__ std::uint32_t dropout_keep_s(const kfa::detail::DropoutPolicy& d, std::int64_t b,
                                                        std::int64_t h, std::int64_t row_g, std::int64_t col0, int t) {
  static_assert(NG <= 4, "16 bits per row");
  const std::uint32_t thr4 = d.threshold * 0x01010101u;
  std::uint32_t keep = 0;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    std::uint32_t words[NG];
    policy::dropout_row_words<NG>(d, b, h, row_g + 8 * hi, col0, t, words);
#pragma unroll
    for (int G = 0; G < NG; ++G) keep |= policy::keep_nibble(words[G], thr4) << (16 * hi + 4 * G);
  }
  return keep;
}

}  // namespace kfa::cuda::bwd
