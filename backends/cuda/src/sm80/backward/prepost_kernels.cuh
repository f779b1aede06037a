#pragma once
// The memory-bound stages around the main backward kernel:
//  - preprocess: D = rowsum(dO * O), and zeroing of the fp32 dQ accumulator (and of the counts of
//    ordered additions) when the main kernel accumulates dQ;
//  - dq_convert: dQ = scale * accumulator, written to the output type and strides.
// One warp per (batch, head, row) of the padded grid [batch, heads, seqlen_q]; with packed sequences
// seqlen_q is the longest sequence's length and the warps past their sequence's end return.
#include <cstdint>

#include "sm80/backward/params.cuh"
#include "arch/warp_ops.cuh"

namespace kfa::cuda::bwd {

/// Row `row` of (b, h) as a packed-aware location: false when the row lies past its sequence.
struct PrepostRow {
  std::int64_t b, h, row, q_begin;
  bool valid;
};

__device__ inline PrepostRow prepost_row(const KernelParams& p, std::int64_t warp) {
  const auto& s = p.shape;
  PrepostRow r;
  r.row = warp % s.seqlen_q;
  const std::int64_t bh = warp / s.seqlen_q;
  r.b = bh / s.heads;
  r.h = bh % s.heads;
  r.q_begin = 0;
  r.valid = true;
  if (p.varlen.enabled()) {
    const kfa::detail::SequenceBounds sb = kfa::detail::sequence_bounds(s, p.varlen, r.b);
    r.q_begin = sb.q_begin;
    r.valid = r.row < sb.seqlen_q;
  }
  return r;
}

template <class T>
__global__ void preprocess_kernel(const KernelParams p, bool zero_dq) {
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const auto& s = p.shape;
  const std::int64_t total = s.batch * s.heads * s.seqlen_q;
  if (warp >= total) return;
  const PrepostRow pr = prepost_row(p, warp);
  if (!pr.valid) return;
  const std::int64_t b = pr.b, h = pr.h, row = pr.q_begin + pr.row;
  const int d = static_cast<int>(s.head_dim);
  const T* o = static_cast<const T*>(p.o.data) + b * p.o.stride_b + row * p.o.stride_s + h * p.o.stride_h;
  const T* g = static_cast<const T*>(p.dout.data) + b * p.dout.stride_b + row * p.dout.stride_s + h * p.dout.stride_h;
  float dsum = 0.0f;
  for (int c = lane; c < d; c += 32) dsum += ElemOps<T>::to_float(o[c]) * ElemOps<T>::to_float(g[c]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) dsum += __shfl_xor_sync(0xffffffffu, dsum, off);
  const std::int64_t r = row_map<true>(p, b, h, pr.q_begin)(pr.row);
  if (lane == 0) p.dsum[r] = dsum;
  if (zero_dq) {
    float* acc = p.dq_accum + r * d;
    for (int c = lane; c < d; c += 32) acc[c] = 0.0f;
    if (p.dq_order != nullptr && lane == 0 && pr.row % 64 == 0)
      p.dq_order[(b * s.heads + h) * p.dq_order_blocks + pr.row / 64] = 0;
  }
}

template <class T>
__global__ void dq_convert_kernel(const KernelParams p) {
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const auto& s = p.shape;
  if (warp >= s.batch * s.heads * s.seqlen_q) return;
  const PrepostRow pr = prepost_row(p, warp);
  if (!pr.valid) return;
  const std::int64_t b = pr.b, h = pr.h, row = pr.q_begin + pr.row;
  const int d = static_cast<int>(s.head_dim);
  const float* acc = p.dq_accum + row_map<true>(p, b, h, pr.q_begin)(pr.row) * d;
  T* out = static_cast<T*>(p.dq.data) + b * p.dq.stride_b + row * p.dq.stride_s + h * p.dq.stride_h;
  for (int c = 2 * lane; c < d; c += 64) {
    const float2 v = *reinterpret_cast<const float2*>(acc + c);
    *reinterpret_cast<std::uint32_t*>(out + c) = ElemOps<T>::pack(v.x * p.scale, v.y * p.scale);
  }
}

}  // namespace kfa::cuda::bwd
