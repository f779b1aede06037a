#pragma once
// The feature policy (kfa/detail/feature_policy.hpp) applied to a Tensor Core score fragment. Every
// CUDA forward kernel holds S = Q K^T in the accumulator layout shared by mma.sync m16n8 and wgmma:
// lane (g = lane / 4, t = lane % 4) holds, of each n8 column block i of the tile, columns 8 i + 2 t and
// 8 i + 2 t + 1 of rows g and g + 8. A kernel passes one of its rows as an accessor ref(i, e) -> float&
// (block i, element e of the pair) and calls, in this order,
//   modify_and_mask_row   score modifiers (softcap, ALiBi) and the element mask (window / sequence end /
//                         block bits) of the tiles that need them,
//   dropout_row           after the softmax sum: zero the dropped probabilities,
// so that tuning a kernel never changes what a feature computes.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kfa/detail/feature_policy.hpp"

namespace kfa::cuda::policy {

/// The constants of a row walk that do not change from tile to tile.
struct RowPolicy {
  detail::ScoreMod mod;          // softcap / ALiBi of the head
  detail::BlockRow block;        // the block mask's row (state nullptr: none)
  std::int64_t row = 0;          // position of the row in its sequence
};

/// Soft-capping on the SFU (tanh.approx: relative error 2^-11, far below the rounding of P to 16 bits).
__device__ __forceinline__ float fast_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// Score modifiers, then the element mask, on row `rp` of a fragment whose tile starts at key col0.
/// mask: the tile needs the window / sequence-end test; bits: it covers a partial mask block.
/// Masked elements become -inf (raw units; see modify_score for the modifiers' formula).
template <int NB, class Ref>
__device__ __forceinline__ void modify_and_mask_row(Ref&& ref, const RowPolicy& rp, std::int64_t col0, bool mask,
                                                    bool bits, const detail::Shape& s, const detail::ScoreSpec& sc,
                                                    int t) {
  if (rp.mod.softcap != 0.0f) {
    const float in = rp.mod.scale / rp.mod.softcap, out = rp.mod.softcap / rp.mod.scale;
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) ref(i, e) = out * fast_tanh(ref(i, e) * in);
  }
  if (rp.mod.alibi_slope != 0.0f) {
    // bias / scale = -slope / scale * |row + sk - sq - col|: the distance in float (exact below 2^24,
    // the reference's own rounding above), one FADD with a constant and one FFMA with |.| per score
    // (no integer-to-float conversion, which runs at a quarter of the FMA rate).
    const float k = -rp.mod.alibi_slope / rp.mod.scale;
    const float diag = static_cast<float>(rp.row + s.seqlen_k - s.seqlen_q - col0 - 2 * t);
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) ref(i, e) = fmaf(k, fabsf(diag - static_cast<float>(8 * i + e)), ref(i, e));
  }
  if (mask) {
    const detail::VisibleRange r = detail::visible_keys(rp.row, s, sc);
    constexpr std::int64_t W = 8 * NB;
    const int first = static_cast<int>(r.begin - col0 < 0 ? 0 : r.begin - col0 > W ? W : r.begin - col0);
    const int end = static_cast<int>(r.end - col0 < 0 ? 0 : r.end - col0 > W ? W : r.end - col0);
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 8 * i + 2 * t + e;
        if (c < first || c >= end) ref(i, e) = -INFINITY;
      }
  }
  if (bits) {
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if (!detail::block_allows(sc.blocks, rp.block, col0 + 8 * i + 2 * t + e)) ref(i, e) = -INFINITY;
  }
}

/// Word t (this lane's) of the Philox blocks of the NG 16-column groups of a row, from col0 (a multiple
/// of 16). The four lanes of a quad share a row: each computes every fourth block and the quad trades
/// words through shuffles (a 4 x 4 transpose), so a lane runs ceil(NG / 4) Philox blocks, not NG. All 32
/// lanes must call it together.
template <int NG>
__device__ __forceinline__ void dropout_row_words(const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h,
                                                  std::int64_t row, std::int64_t col0, int t,
                                                  std::uint32_t (&words)[NG]) {
  auto pick = [](const detail::Philox4& w, int k) { return k == 0 ? w.w[0] : k == 1 ? w.w[1] : k == 2 ? w.w[2] : w.w[3]; };
#pragma unroll
  for (int j0 = 0; j0 < NG; j0 += 4) {
    const detail::Philox4 w = detail::dropout_words(d.key, b + d.batch_base, h, row, col0 + 16 * (j0 + t));
    std::uint32_t got[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)  // round k: lane t receives word t of the block of lane (t + k) % 4
      got[k] = __shfl_sync(0xffffffffu, pick(w, (t - k) & 3), (t + k) & 3, 4);
#pragma unroll
    for (int s = 0; s < 4; ++s)
      if (j0 + s < NG) {
        const int k = (s - t) & 3;  // the round in which block j0 + s arrived
        words[j0 + s] = k == 0 ? got[0] : k == 1 ? got[1] : k == 2 ? got[2] : got[3];
      }
  }
}

/// Keep flags (byte >= threshold) of the four columns a Philox word decides, as bits 0..3 in byte order:
/// detail::dropout_keep_bits by one SIMD byte compare and a multiply gather. threshold4 = threshold *
/// 0x01010101.
__device__ __forceinline__ std::uint32_t keep_nibble(std::uint32_t word, std::uint32_t threshold4) {
  const std::uint32_t ge = __vcmpgeu4(word, threshold4) & 0x01010101u;  // 1 in each kept byte
  return (ge * 0x10204080u) >> 28;
}

/// The same answer as 16-bit lane masks for P already packed in pairs: `lo` for the pair of columns
/// (2t, 2t + 1), `hi` for (2t + 8, 2t + 9) (bytes 0, 1 and 2, 3 of the word); P &= mask drops.
__device__ __forceinline__ void keep_pair_masks(std::uint32_t word, std::uint32_t threshold4, std::uint32_t& lo,
                                                std::uint32_t& hi) {
  const std::uint32_t keep = __vcmpgeu4(word, threshold4);  // 0xff in each kept byte
  lo = __byte_perm(keep, 0, 0x1100);
  hi = __byte_perm(keep, 0, 0x3322);
}

/// Zeroes the dropped probabilities of row `row` of a fragment tile starting at key col0 (NB n8 blocks).
template <int NB, class Ref>
__device__ __forceinline__ void dropout_row(Ref&& ref, const detail::DropoutPolicy& d, std::int64_t b, std::int64_t h,
                                            std::int64_t row, std::int64_t col0, int t) {
  static_assert(NB % 2 == 0, "tiles of whole 16-column groups");
  constexpr int NG = NB / 2;
  std::uint32_t words[NG];
  dropout_row_words<NG>(d, b, h, row, col0, t, words);
  const std::uint32_t threshold4 = d.threshold * 0x01010101u;
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    const std::uint32_t keep = keep_nibble(words[i / 2], threshold4) >> (2 * (i & 1));
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (!((keep >> e) & 1u)) ref(i, e) = 0.0f;
  }
}

}  // namespace kfa::cuda::policy
