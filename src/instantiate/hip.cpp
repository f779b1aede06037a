// Explicit instantiations of kfa's entry points for Kokkos::HIP (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_HIP
#include "backward_dispatch.hpp"
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "kvcache_dispatch.hpp"
#include "merge_dispatch.hpp"
#include "reference/standard_attention.hpp"
#include "reference/standard_backward.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::HIP)
KFA_INSTANTIATE_FORWARD(Kokkos::HIP)
KFA_INSTANTIATE_KVCACHE(Kokkos::HIP)
KFA_INSTANTIATE_MERGE(Kokkos::HIP)
KFA_INSTANTIATE_REFERENCE(Kokkos::HIP)
KFA_INSTANTIATE_BACKWARD(Kokkos::HIP)
KFA_INSTANTIATE_REFERENCE_BACKWARD(Kokkos::HIP)
#endif
