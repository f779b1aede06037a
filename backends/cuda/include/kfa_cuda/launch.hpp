#pragma once
// Launcher interface of the native CUDA backend: raw pointers and strides (kfa::detail::ForwardArgs /
// BackwardArgs) and a stream. No Kokkos here; the dispatcher in src/native_cuda.hpp calls these when
// the execution space is Kokkos::Cuda and supports_*() says yes, otherwise the portable path runs.
//
// Forward: src/forward_launch.cu (+ one translation unit per (head_dim, dtype)).
// Backward: src/backward*.cu when present; otherwise src/no_backward.cu makes supports_backward() false.
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"

namespace kfa::cuda {

/// True when the Tensor Core forward handles this case (dtype half/bfloat16, head_dim 64/96/128/256,
/// 16-byte aligned rows, no softcap/ALiBi/dropout).
bool supports_forward(const detail::ForwardArgs& args);
/// Writes O and LSE asynchronously on `stream`. Precondition: supports_forward(args).
void forward(const detail::ForwardArgs& args, cudaStream_t stream);

/// True when the Tensor Core backward handles this case (more in kfa_cuda/backward.hpp when built).
bool supports_backward(const detail::BackwardArgs& args);
/// Writes dQ, dK, dV asynchronously on `stream`. Precondition: supports_backward(args).
void backward(const detail::BackwardArgs& args, cudaStream_t stream);

}  // namespace kfa::cuda
