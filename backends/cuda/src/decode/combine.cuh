#pragma once
// The split-KV combine: the fp32 partial states (o_s, lse_s) of a row's key splits merged into O and
// LSE, with the arithmetic of kfa::merge_attention_states (m = max_s lse_s, lse = m + log sum_s
// exp(lse_s - m), o = sum_s exp(lse_s - lse) o_s; parts with lse_s = -inf skipped; a row no split saw
// gets o = 0, lse = -inf). One warp per (batch, KV head, packed row); lanes over head_dim.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "arch/ptx.cuh"
#include "decode/decode_config.hpp"

namespace kfa::cuda::decode {

template <int D, class T>
__global__ void __launch_bounds__(128) combine_kernel(const DecodeParams p) {
  constexpr int per_lane = D / 32;  // 2, 4 or 8 consecutive columns
  static_assert(per_lane % 2 == 0, "pairs of columns");
  const detail::ForwardArgs& a = p.a;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t rows = a.shape.batch * a.shape.heads_kv * p.packed_rows;
  const std::int64_t row = std::int64_t(blockIdx.x) * 4 + warp;
  if (row >= rows) return;
  const int pr = static_cast<int>(row % p.packed_rows);
  const std::int64_t bh = row / p.packed_rows, hk = bh % a.shape.heads_kv, b = bh / a.shape.heads_kv;
  const std::int64_t mp = std::int64_t(p.row_tiles) * DecodeShape<D>::block_m;
  const std::int64_t split_stride = a.shape.batch * a.shape.heads_kv * mp;
  const std::int64_t base = bh * mp + pr;
  float m = -INFINITY;
  for (int s = 0; s < p.splits; ++s) m = fmaxf(m, p.lse_part[s * split_stride + base]);
  float acc[per_lane];
#pragma unroll
  for (int e = 0; e < per_lane; ++e) acc[e] = 0.0f;
  float lse = -INFINITY;
  if (m != -INFINITY) {
    float sum = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      const float l = p.lse_part[s * split_stride + base];
      if (l != -INFINITY) sum += expf(l - m);
    }
    lse = m + logf(sum);
    for (int s = 0; s < p.splits; ++s) {
      const float l = p.lse_part[s * split_stride + base];
      if (l == -INFINITY) continue;
      const float w = expf(l - lse);
      const float* o = p.o_part + (s * split_stride + base) * D + lane * per_lane;
#pragma unroll
      for (int e = 0; e < per_lane; e += 2) {
        const float2 x = *reinterpret_cast<const float2*>(o + e);
        acc[e] = fmaf(w, x.x, acc[e]);
        acc[e + 1] = fmaf(w, x.y, acc[e + 1]);
      }
    }
  }
  const std::int64_t head = hk * p.group + pr % p.group, token = pr / p.group;
  T* out = static_cast<T*>(a.o.data) + b * a.o.stride_b + token * a.o.stride_s + head * a.o.stride_h + lane * per_lane;
#pragma unroll
  for (int e = 0; e < per_lane; e += 2) *reinterpret_cast<std::uint32_t*>(out + e) = ptx::pack2<T>(acc[e], acc[e + 1]);
  if (lane == 0) static_cast<float*>(a.lse.data)[b * a.lse.stride_b + head * a.lse.stride_h + token * a.lse.stride_s] = lse;
}

}  // namespace kfa::cuda::decode
