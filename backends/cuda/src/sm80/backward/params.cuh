#pragma once
// What every backward kernel receives: the launcher contract plus the resolved constants and the
// workspace buffers. The workspace has the layout of kfa::detail::backward_workspace_layout
// (D = rowsum(dO * O) at offset 0, then the fp32 dQ accumulator, each 256-byte aligned), so a
// caller-owned workspace sized by the public query fits.
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/feature_policy.hpp"

namespace kfa::cuda::bwd {

struct KernelParams {
  kfa::detail::Shape shape;
  kfa::detail::ScoreSpec score;
  kfa::detail::Tensor4 q, k, v, o, dout, dq, dk, dv;
  kfa::detail::Tensor3 lse;
  float scale = 1.0f;       // softmax scale
  float scale_log2 = 1.0f;  // scale * log2(e): P = exp2(S * scale_log2 - lse * log2(e))
  // Key j is visible from query i when win_lo <= j - i - (seqlen_k - seqlen_q) <= win_hi (and j < seqlen_k);
  // 32-bit, with unbounded sides beyond any clamped difference (see clamp_diag).
  int win_lo = 0, win_hi = 0;
  // Dense: row (b, h, r) of the per-row buffers is (b * heads + h) * seqlen_q + r. Packed sequences:
  // (q_begin + r) * heads + h (total rows <= batch * heads * max seqlen_q, so the workspace fits).
  float* dsum = nullptr;      // D = rowsum(dO * O), one float per row
  float* dq_accum = nullptr;  // head_dim floats per row, fp32: the atomic path and the ordered one
  // Ordered (deterministic) additions into dq_accum: per (batch or sequence b, head h, 64-row query block
  // m) the count at dq_order[(b * heads + h) * dq_order_blocks + m] of key tiles whose additions are
  // in (kfa::detail::BackwardWorkspaceLayout); nullptr: atomic additions in any order.
  int* dq_order = nullptr;
  int dq_order_blocks = 0;
  // The features (the dense kernels never read these).
  kfa::detail::Varlen varlen;          // packed sequences (tensors have stride_b 0); disabled: padded batch
  kfa::detail::DropoutPolicy dropout;  // make_dropout(score)
};

/// Differences j - i - shift are computed per tile in 32 bits from a base clamped to this range,
/// which keeps every comparison exact for sequences shorter than 2^30.
inline constexpr std::int64_t kDiagClamp = (std::int64_t{1} << 30) + 1024;
inline constexpr std::int64_t kWindowUnbounded = (std::int64_t{1} << 30) + 4096;

__host__ __device__ inline int clamp_diag(std::int64_t x) {
  return static_cast<int>(x < -kDiagClamp ? -kDiagClamp : (x > kDiagClamp ? kDiagClamp : x));
}

/// Where the rows of one (sequence b, head h) live in the per-row workspace buffers: row r (its position
/// in the sequence) is base + r * stride. kVarlen = false: the padded layout, stride 1 at compile time.
struct RowMap {
  std::int64_t base = 0, stride = 1;
  __host__ __device__ std::int64_t operator()(std::int64_t r) const { return base + r * stride; }
};

template <bool kFeat>
__host__ __device__ inline RowMap row_map(const KernelParams& p, std::int64_t b, std::int64_t h, std::int64_t q_begin) {
  if (kFeat && p.varlen.enabled()) return {q_begin * p.shape.heads + h, p.shape.heads};
  return {(b * p.shape.heads + h) * p.shape.seqlen_q, 1};
}

/// Row (b, h, row) of the padded layout (the dense kernels).
__host__ __device__ inline std::int64_t row_index(const KernelParams& p, std::int64_t b, std::int64_t h,
                                                  std::int64_t row) {
  return (b * p.shape.heads + h) * p.shape.seqlen_q + row;
}

/// The row statistics a query tile needs, for row `row` of one (sequence, head): lse in log2 units and D.
/// `lse_bh` points at the (b, h, row 0) entry of the LSE; rows at or past seqlen_q and rows that saw no
/// key (lse = -inf) get lse +inf, so P = exp2(... - inf) = 0.
struct RowStats {
  float lse_log2, dsum;
};

/// lse in log2 units, +inf for a row that saw no key (lse = -inf).
__device__ inline float lse_log2(float lse) {
  return lse == -__int_as_float(0x7f800000) ? __int_as_float(0x7f800000) : lse * 1.4426950408889634f;
}

__device__ inline RowStats row_stats(const KernelParams& p, const float* lse_bh, const RowMap& rm, std::int64_t row,
                                     std::int64_t seqlen_q) {
  if (row >= seqlen_q) return {__int_as_float(0x7f800000), 0.0f};
  return {lse_log2(lse_bh[row * p.lse.stride_s]), p.dsum[rm(row)]};
}

/// The dense kernels' form: row `row` of (b, h) of the padded batch.
__device__ inline RowStats row_stats(const KernelParams& p, std::int64_t b, std::int64_t h, std::int64_t row) {
  if (row >= p.shape.seqlen_q) return {__int_as_float(0x7f800000), 0.0f};
  const float lse = static_cast<const float*>(p.lse.data)[b * p.lse.stride_b + h * p.lse.stride_h + row * p.lse.stride_s];
  return {lse_log2(lse), p.dsum[row_index(p, b, h, row)]};
}

}  // namespace kfa::cuda::bwd
