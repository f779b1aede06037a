// Built only while backends/cuda has no backward kernel (no src/backward*.cu): the dispatcher then
// always takes the portable backward.
#include "kfa_cuda/launch.hpp"

namespace kfa::cuda {

bool supports_backward(const detail::BackwardArgs&) { return false; }
void backward(const detail::BackwardArgs&, cudaStream_t) {}

}  // namespace kfa::cuda
