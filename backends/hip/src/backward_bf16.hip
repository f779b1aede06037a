// Backward kernels (dK/dV and dQ) for bf16, every supported head_dim.
#include "launch_kernels.hpp"

template void kfa::hip::launch_backward<kfa::detail::DType::bf16>(const kfa::detail::BackwardArgs&, hipStream_t);
