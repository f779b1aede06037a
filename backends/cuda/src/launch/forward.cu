// kfa::cuda::supports_forward / forward: which cases the Tensor Core forwards take (every option of the
// feature policy; block masks with blocks of 64, 128 or 256), which of the two
// kernels runs (the Hopper wgmma/TMA kernel on sm_90 devices when the build has it, else the mma.sync
// kernel), and the dispatch from (head_dim, dtype) to the kernel instantiated in its own translation unit.
// KFA_CUDA_FORWARD=mma or =wgmma forces one of the two kernels (tests and benchmarks compare them;
// wgmma still needs an sm_90 device and TMA-addressable tensors).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/tile_scheduler.hpp"
#include "arch/device_attribute.hpp"
#include "sm80/forward_config.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa_cuda/launch.hpp"
#include "kfa_cuda_instances.hpp"
#include "launch/alignment.hpp"
#ifdef KFA_CUDA_HAS_SM90
#include "sm90/forward_sm90_config.hpp"
#include "arch/tensor_map.hpp"
#endif

namespace kfa::cuda {
namespace {

/// Shared memory of the mma.sync kernel for head_dim d (the same for both element types); 0 when no
/// instance exists for d.
int smem_bytes(std::int64_t d) {
  switch (d) {
#define KFA_CASE(D) \
  case D: return forward_smem_bytes<D>();
    KFA_CUDA_FORWARD_SM80_DIMS(KFA_CASE)
#undef KFA_CASE
    default: return 0;
  }
}

/// The current device's opt-in shared memory per block (e.g. 227 KB on sm_90, 163 KB on sm_80).
int device_smem_limit() { return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(); }

#ifdef KFA_CUDA_HAS_SM90
/// Compute capability of the current device as major * 10 + minor.
int device_arch() {
  return device_attribute<cudaDevAttrComputeCapabilityMajor>() * 10 + device_attribute<cudaDevAttrComputeCapabilityMinor>();
}

/// The Hopper kernel takes a supported case on an sm_90 device when TMA can address every tensor.
bool use_sm90(const detail::ForwardArgs& a) {
  static const int forced = [] {  // 0 automatic, 1 mma.sync, 2 Hopper
    const char* e = std::getenv("KFA_CUDA_FORWARD");
    return e == nullptr ? 0 : std::strcmp(e, "mma") == 0 ? 1 : std::strcmp(e, "wgmma") == 0 ? 2 : 0;
  }();
  if (forced == 1 || device_arch() != 90) return false;
  const std::int64_t b = a.shape.batch;
  const bool possible = hopper::tensor_map_possible(a.q, b) && hopper::tensor_map_possible(a.k, b) &&
                        hopper::tensor_map_possible(a.v, b) && hopper::tensor_map_possible(a.o, b);
  if (!possible || forced == 2) return possible;
  // With few keys per query tile the Hopper kernel's fixed cost per block (Q load, pipeline fill, O
  // store) outweighs its faster loop: on an H200 the mma.sync kernel won at head_dim 64 below 512
  // visible keys per row (causal 512: 176 vs 156 TFLOP/s; docs/performance-cuda-hopper.md). A
  // right-bounded window (causal) sees about half the keys.
  const std::int64_t keys = a.score.window_right >= 0 ? a.shape.seqlen_k / 2 : a.shape.seqlen_k;
  return !(a.shape.head_dim == 64 && keys < 512);
}
#endif  // KFA_CUDA_HAS_SM90

template <class T>
void launch_for_dim(const detail::ForwardArgs& a, cudaStream_t stream) {
#ifdef KFA_CUDA_HAS_SM90
  if (use_sm90(a)) {
    switch (a.shape.head_dim) {
#define KFA_CASE(D)                                 \
  case D: hopper::launch_forward_sm90<D, T>(a, stream); \
    return;
      KFA_CUDA_FORWARD_SM90_DIMS(KFA_CASE)
#undef KFA_CASE
      default: break;
    }
  }
#endif
  switch (a.shape.head_dim) {
#define KFA_CASE(D)                      \
  case D: launch_forward<D, T>(a, stream); \
    break;
    KFA_CUDA_FORWARD_SM80_DIMS(KFA_CASE)
#undef KFA_CASE
    default: break;
  }
}

}  // namespace

bool supports_forward(const detail::ForwardArgs& a) {
  if (a.dtype != detail::DType::f16 && a.dtype != detail::DType::bf16) return false;
  if (a.kv.enabled()) return false;  // a KV cache: the decode kernel (launch/decode.cu)
  const std::int64_t d = a.shape.head_dim;
  if (d != 64 && d != 96 && d != 128 && d != 256) return false;  // others: the portable path
  // Score modifiers the kernel does not implement: the portable path handles them.
  // Every option runs natively (the feature policy); block masks need blocks the kernels' tiles align with.
  if (!detail::native_block_sizes(a.score.blocks)) return false;
  if (!(a.score.scale > 0.0)) return false;  // the online softmax tracks the maximum of the raw scores
  constexpr std::int64_t max_len = std::int64_t(1) << 30;  // key/row positions are 32-bit in the kernel
  if (a.shape.seqlen_q >= max_len || a.shape.seqlen_k >= max_len) return false;
  const std::int64_t blocks = a.shape.batch * a.shape.heads * common::tile_count(a.shape.seqlen_q, 64);
  if (blocks >= (std::int64_t(1) << 31)) return false;
  if (!(rows_aligned(a.q) && rows_aligned(a.k) && rows_aligned(a.v) && rows_aligned(a.o))) return false;
  return smem_bytes(d) <= device_smem_limit();  // head_dim 256 needs 192 KB: not on sm_80's 163 KB
}

void forward(const detail::ForwardArgs& a, cudaStream_t stream) {
  if (a.dtype == detail::DType::bf16)
    launch_for_dim<__nv_bfloat16>(a, stream);
  else
    launch_for_dim<__half>(a, stream);
}

}  // namespace kfa::cuda
