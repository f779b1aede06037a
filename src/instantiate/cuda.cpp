// Explicit instantiations of kfa's entry points for Kokkos::Cuda (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_CUDA
#include "backward_dispatch.hpp"
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "kvcache_dispatch.hpp"
#include "merge_dispatch.hpp"
#include "reference/standard_attention.hpp"
#include "reference/standard_backward.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::Cuda)
KFA_INSTANTIATE_FORWARD(Kokkos::Cuda)
KFA_INSTANTIATE_KVCACHE(Kokkos::Cuda)
KFA_INSTANTIATE_MERGE(Kokkos::Cuda)
KFA_INSTANTIATE_REFERENCE(Kokkos::Cuda)
KFA_INSTANTIATE_BACKWARD(Kokkos::Cuda)
KFA_INSTANTIATE_REFERENCE_BACKWARD(Kokkos::Cuda)
#endif
