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
  std::int64_t rows_pad = 0;  // seqlen_q rounded up to kRowPad
  float* lse_log2 = nullptr;  // [b][h][rows_pad]; +inf for padding and fully masked rows (gives P = 0)
  float* dsum = nullptr;      // [b][h][rows_pad]: D = rowsum(dO * O)
  float* dq_accum = nullptr;  // [b][h][rows_pad][head_dim] fp32, atomic path only
};

__host__ __device__ inline std::int64_t row_index(const KernelParams& p, std::int64_t b, std::int64_t h,
                                                  std::int64_t row) {
  return (b * p.shape.heads + h) * p.rows_pad + row;
}

}  // namespace kfa::cuda::bwd
