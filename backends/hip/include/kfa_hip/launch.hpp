#pragma once
// Launcher interface of the native HIP backend (AMD CDNA matrix cores, gfx90a / gfx94x): raw
// pointers and strides (kfa::detail::ForwardArgs / BackwardArgs) and a stream. No Kokkos here; the
// dispatcher in src/native_hip.hpp calls these when the execution space is Kokkos::HIP and
// supports_*() says yes, otherwise the portable path runs.
#include <hip/hip_runtime_api.h>

#include <cstddef>

#include "kfa/detail/args.hpp"

namespace kfa::hip {

/// True when the matrix-core forward handles this case: half/bfloat16, head_dim 32/64/96/128/256,
/// 16-byte aligned rows (strides multiple of 8 elements), scale > 0. Takes causal / sliding windows,
/// softcap, ALiBi, GQA/MQA, dropout, packed sequences (Varlen; the Shape holds the longest lengths,
/// which must be >= 1) and block masks with the dense block_state table and blocks of 64, 128 or 256.
bool supports_forward(const detail::ForwardArgs& args);
/// Writes O and LSE asynchronously on `stream`. Precondition: supports_forward(args).
void forward(const detail::ForwardArgs& args, hipStream_t stream);

/// True when the matrix-core backward handles this case: as the forward, head_dim 32/64/96/128.
bool supports_backward(const detail::BackwardArgs& args);
/// Bytes of device workspace backward() needs: 0 (dQ and dK/dV are separate deterministic kernels).
std::size_t backward_workspace_bytes(const detail::BackwardArgs& args);
/// Writes dQ, dK, dV asynchronously on `stream`. Precondition: supports_backward(args).
void backward(const detail::BackwardArgs& args, hipStream_t stream);

}  // namespace kfa::hip
