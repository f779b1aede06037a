#pragma once
// What every backward kernel receives: the launcher contract plus the resolved constants and the
// workspace buffers, all padded to whole query tiles so the inner loops need no row bounds checks.
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::bwd {

/// Query rows are padded to a multiple of this in every workspace buffer (covers all tile heights).
inline constexpr std::int64_t kRowPad = 128;

struct KernelParams {
  kfa::detail::Shape shape;
  kfa::detail::ScoreSpec score;
  kfa::detail::Tensor4 q, k, v, o, dout, dq, dk, dv;
  kfa::detail::Tensor3 lse;
  float scale = 1.0f;       // softmax scale
  float scale_log2 = 1.0f;  // scale * log2(e): P = exp2(S * scale_log2 - lse_log2)
  // Key j is visible from query i when win_lo <= j - i - (seqlen_k - seqlen_q) <= win_hi (and j < seqlen_k);
  // 32-bit, with unbounded sides beyond any clamped difference (see clamp_diag).
  int win_lo = 0, win_hi = 0;
  std::int64_t rows_pad = 0;  // seqlen_q rounded up to kRowPad
  float* lse_log2 = nullptr;  // [b][h][rows_pad]; +inf for padding and fully masked rows (gives P = 0)
  float* dsum = nullptr;      // [b][h][rows_pad]: D = rowsum(dO * O)
  float* dq_accum = nullptr;  // [b][h][rows_pad][head_dim] fp32, atomic path only
};

/// Differences j - i - shift are computed per tile in 32 bits from a base clamped to this range,
/// which keeps every comparison exact for sequences shorter than 2^30.
inline constexpr std::int64_t kDiagClamp = (std::int64_t{1} << 30) + 1024;
inline constexpr std::int64_t kWindowUnbounded = (std::int64_t{1} << 30) + 4096;

__host__ __device__ inline int clamp_diag(std::int64_t x) {
  return static_cast<int>(x < -kDiagClamp ? -kDiagClamp : (x > kDiagClamp ? kDiagClamp : x));
}

__host__ __device__ inline std::int64_t row_index(const KernelParams& p, std::int64_t b, std::int64_t h,
                                                  std::int64_t row) {
  return (b * p.shape.heads + h) * p.rows_pad + row;
}

}  // namespace kfa::cuda::bwd
