// Explicit instantiations of kfa's entry points for Kokkos::Serial (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_SERIAL
#include "backward_dispatch.hpp"
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "kvcache_dispatch.hpp"
#include "merge_dispatch.hpp"
#include "reference/standard_attention.hpp"
#include "reference/standard_backward.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::Serial)
KFA_INSTANTIATE_FORWARD(Kokkos::Serial)
KFA_INSTANTIATE_KVCACHE(Kokkos::Serial)
KFA_INSTANTIATE_MERGE(Kokkos::Serial)
KFA_INSTANTIATE_REFERENCE(Kokkos::Serial)
KFA_INSTANTIATE_BACKWARD(Kokkos::Serial)
KFA_INSTANTIATE_REFERENCE_BACKWARD(Kokkos::Serial)
#endif
