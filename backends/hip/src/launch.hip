// kfa::hip entry points: which cases the matrix-core kernels take, and the element-type dispatch.
#include "kfa_hip/launch.hpp"

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/feature_policy.hpp"

namespace kfa::hip {

template <detail::DType DT>
void launch_forward(const detail::ForwardArgs&, hipStream_t);
template <detail::DType DT>
void launch_backward(const detail::BackwardArgs&, hipStream_t);

namespace {

constexpr std::int64_t chunk_elems = 8;  // the kernels move 16-byte chunks of 16-bit elements

bool chunk_aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

bool rows_aligned(const detail::Tensor4& t) {
  return t.data != nullptr && chunk_aligned(t.data) && t.stride_s % chunk_elems == 0 &&
         t.stride_h % chunk_elems == 0 && t.stride_b % chunk_elems == 0;
}

bool common_case(detail::DType dt, const detail::Shape& s, const detail::ScoreSpec& sc) {
  if (dt != detail::DType::f16 && dt != detail::DType::bf16) return false;
  if (s.batch < 1 || s.heads < 1 || s.heads_kv < 1 || s.heads % s.heads_kv != 0) return false;
  if (s.seqlen_q < 1 || s.seqlen_k < 1) return false;  // packed sequences: the longest lengths
  // grids fit the launch limits: 256-thread workgroups, fewer than 2^32 threads per dimension, and
  // the dK/dV grid's y/z dimensions (heads_kv, batch) below 65536
  constexpr std::int64_t max_groups = std::int64_t{1} << 24, rows = 128;
  if (s.batch > 65535 || s.heads_kv > 65535) return false;
  if ((s.seqlen_q + rows - 1) / rows * s.heads * s.batch >= max_groups) return false;
  if ((s.seqlen_k + rows - 1) / rows >= max_groups) return false;
  // raw-unit softmax bookkeeping (backends/common) needs a positive scale
  if (!(sc.scale > 0.0)) return false;
  if (!(sc.dropout_p >= 0.0f && sc.dropout_p < 1.0f)) return false;
  // block masks: the dense per-block state table, blocks of 64, 128 or 256 (feature_policy.hpp)
  if (sc.blocks.enabled() && (sc.blocks.block_state == nullptr || !detail::native_block_sizes(sc.blocks)))
    return false;
  return true;
}

// packed sequences: both offset tables, and the packed tensors' batch strides are 0
bool varlen_ok(const detail::Varlen& v) {
  if (!v.enabled()) return true;
  return v.cu_seqlens_k != nullptr;
}

}  // namespace

bool supports_forward(const detail::ForwardArgs& a) {
  const std::int64_t d = a.shape.head_dim;
  if (!(d == 32 || d == 64 || d == 96 || d == 128 || d == 256)) return false;
  if (a.kv.enabled()) return false;  // a KV cache reads keys per sequence / through pages: the portable path
  return common_case(a.dtype, a.shape, a.score) && varlen_ok(a.varlen) && rows_aligned(a.q) && rows_aligned(a.k) &&
         rows_aligned(a.v) && rows_aligned(a.o) && a.lse.data != nullptr;
}

void forward(const detail::ForwardArgs& a, hipStream_t stream) {
  if (a.dtype == detail::DType::f16)
    launch_forward<detail::DType::f16>(a, stream);
  else
    launch_forward<detail::DType::bf16>(a, stream);
}

bool supports_backward(const detail::BackwardArgs& a) {
  const std::int64_t d = a.shape.head_dim;
  if (!(d == 32 || d == 64 || d == 96 || d == 128)) return false;
  return common_case(a.dtype, a.shape, a.score) && varlen_ok(a.varlen) && rows_aligned(a.q) && rows_aligned(a.k) &&
         rows_aligned(a.v) && rows_aligned(a.o) && rows_aligned(a.dout) && rows_aligned(a.dq) && rows_aligned(a.dk) &&
         rows_aligned(a.dv) && a.lse.data != nullptr;
}

std::size_t backward_workspace_bytes(const detail::BackwardArgs&) { return 0; }

void backward(const detail::BackwardArgs& a, hipStream_t stream) {
  if (a.dtype == detail::DType::f16)
    launch_backward<detail::DType::f16>(a, stream);
  else
    launch_backward<detail::DType::bf16>(a, stream);
}

}  // namespace kfa::hip
