// Forward kernels for bf16, every supported head_dim.
#include "launch_kernels.hpp"

template void kfa::hip::launch_forward<kfa::detail::DType::bf16>(const kfa::detail::ForwardArgs&, hipStream_t);
