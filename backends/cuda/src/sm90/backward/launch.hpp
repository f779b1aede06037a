#pragma once
// The Hopper backward's entry, declared for the dispatcher (launch/backward.cu): the main kernel of
// one (head_dim, element type), defined in its own sm_90a translation unit (sm90/backward/kernel.cuh).
#include <cuda_runtime_api.h>

#include "kfa/detail/args.hpp"
#include "sm80/backward/params.cuh"

namespace kfa::cuda::hopper {

/// Block geometry the dispatcher needs without the kernel: keys per block (the grid's y extent).
inline constexpr int kSm90BwdBlockK = 128;

/// `featured`: the call has packed sequences, a block mask, softcap, ALiBi or dropout (the Featured
/// instance); else the dense instance runs.
template <int D, class T>
void launch_backward_sm90(const bwd::KernelParams& p, detail::DType dtype, bool featured, cudaStream_t stream);

}  // namespace kfa::cuda::hopper
