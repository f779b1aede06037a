#pragma once
// Backend-neutral description of one attention call: raw pointers, 64-bit element strides and
// the resolved options. This is the launcher contract between the dispatcher (src/) and every
// implementation (the portable Kokkos algorithm, backends/cuda, backends/hip); it has no Kokkos in it.
#include <cstddef>
#include <cstdint>

#include "kfa/detail/feature_args.hpp"

namespace kfa::detail {

enum class DType : int { f32, f64, f16, bf16 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float";
    case DType::f64: return "double";
    case DType::f16: return "half";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

/// A [batch, seq, head, dim] tensor with unit stride in dim. Strides are in elements.
struct Tensor4 {
  void* data = nullptr;
  std::int64_t stride_b = 0, stride_s = 0, stride_h = 0;
};

/// The log-sum-exp tensor [batch, head, seq].
struct Tensor3 {
  void* data = nullptr;
  std::int64_t stride_b = 0, stride_h = 0, stride_s = 0;
};

struct Shape {
  std::int64_t batch = 0, seqlen_q = 0, seqlen_k = 0, heads = 0, heads_kv = 0, head_dim = 0;
};

/// Resolved masking and score modification, shared by forward and backward.
/// A key j is visible from query i when  i + diag - window_left <= j <= i + diag + window_right
/// (a negative window means unbounded on that side) and j < seqlen_k; diag = seqlen_k - seqlen_q.
struct ScoreSpec {
  double scale = 1.0;
  std::int64_t window_left = -1, window_right = -1;
  float softcap = 0.0f;                   // 0 = off
  const float* alibi_slopes = nullptr;    // device pointer, [heads]; nullptr = off
  float dropout_p = 0.0f;
  std::uint64_t seed = 0, offset = 0;
  BlockSparseSpec blocks;                 // block-sparse layout; disabled = dense
  std::int64_t batch_base = 0;            // added to the batch index by dropout and block masks (a packed
                                          // sequence run alone as batch 0 keeps its sequence index)
};

struct ForwardArgs {
  DType dtype = DType::f32;
  Shape shape;
  Tensor4 q, k, v, o;
  Tensor3 lse;  // float, or double when dtype is f64
  ScoreSpec score;
  Varlen varlen;  // packed sequences (stride_b of the tensors is then 0); disabled = padded batch
  KvCache kv;     // k/v are a KV cache with per-sequence lengths (kfa::forward_kvcache); disabled = plain
};

struct BackwardArgs {
  DType dtype = DType::f32;
  Shape shape;
  Tensor4 q, k, v, o, dout, dq, dk, dv;
  Tensor3 lse;
  ScoreSpec score;
  Varlen varlen;
  bool deterministic = false;
  void* workspace = nullptr;  // device memory of backward_workspace_bytes(); nullptr: kfa allocates
  std::size_t workspace_bytes = 0;
};

}  // namespace kfa::detail
