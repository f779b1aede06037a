#pragma once
// Launcher interface of the native CUDA backward (raw pointers, strides, a stream; no Kokkos).
// Tensor Core kernels for half and bfloat16 inputs, head_dim 64 and 128, causal/window masks,
// GQA/MQA, fp32 accumulation and an optional bitwise-deterministic dQ pass; softcap, ALiBi, dropout
// (the forward's Philox mask, regenerated), block masks of 64/128/256 blocks and packed sequences run
// featured instantiations of the same kernels (dense calls never pay for them).
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kfa/detail/args.hpp"

namespace kfa::cuda {

/// True when the native kernels handle this call (dtype, head_dim, alignment, block sizes; softcap and
/// ALiBi need scale > 0); otherwise the dispatcher uses the portable path.
bool supports_backward(const kfa::detail::BackwardArgs& args);

/// Bytes of device workspace backward() needs (fp32 row statistics and, unless deterministic,
/// the fp32 dQ accumulator). Linear in seqlen_q, never seqlen_q * seqlen_k.
std::size_t backward_workspace_bytes(const kfa::detail::Shape& shape, bool deterministic);

/// dq, dk, dv of attention given q, k, v, out, dout and the forward's lse. Asynchronous on `stream`;
/// when args.workspace is null the workspace is allocated and freed in stream order. Throws kfa::Error
/// for a case supports_backward() declines and kfa::LaunchError when CUDA fails (allocation, launch).
void backward(const kfa::detail::BackwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
