#pragma once
// Launcher interface of the native CUDA backend: raw pointers and strides (kfa::detail::ForwardArgs /
// BackwardArgs / KvCacheArgs) and a stream. No Kokkos here; the dispatcher in src/native_cuda.hpp calls these when
// the execution space is Kokkos::Cuda and supports_*() says yes, otherwise the portable path runs.
//
// Forward: src/launch/forward.cu, backward: src/launch/backward.cu, decode over a KV cache:
// src/launch/decode.cu; each kernel instance in its own translation unit (src/instances).
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"
#include "kfa/detail/kvcache_args.hpp"

namespace kfa::cuda {

/// True when the Tensor Core forward handles this case (dtype half/bfloat16, head_dim 64/96/128/256,
/// 16-byte aligned rows, block masks of 64/128/256 blocks).
bool supports_forward(const detail::ForwardArgs& args);
/// Writes O and LSE asynchronously on `stream`. Precondition: supports_forward(args).
void forward(const detail::ForwardArgs& args, cudaStream_t stream);

/// True when the Tensor Core backward handles this case (more in kfa_cuda/backward.hpp when built).
bool supports_backward(const detail::BackwardArgs& args);
/// Writes dQ, dK, dV asynchronously on `stream`. Precondition: supports_backward(args).
void backward(const detail::BackwardArgs& args, cudaStream_t stream);

/// True when the split-KV decode kernel takes this KV-cache attention (dtype half/bfloat16, head_dim
/// 64/128/256, 16-byte aligned rows, page sizes that are multiples of 16). The append has run before.
bool supports_kvcache(const detail::KvCacheArgs& args);
/// Writes O and LSE asynchronously on `stream`. Precondition: supports_kvcache(args).
void forward_kvcache(const detail::KvCacheArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
