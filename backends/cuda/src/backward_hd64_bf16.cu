// One (element type, head_dim) of the native backward per translation unit, so builds parallelize.
#include "backward/launch_kernels.cuh"

namespace kfa::cuda::bwd {
KFA_CUDA_BWD_INSTANTIATE(__nv_bfloat16, 64)
}  // namespace kfa::cuda::bwd
