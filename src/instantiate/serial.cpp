// Explicit instantiations of kfa's entry points for Kokkos::Serial (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_SERIAL
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "reference/standard_attention.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::Serial)
KFA_INSTANTIATE_FORWARD(Kokkos::Serial)
KFA_INSTANTIATE_REFERENCE(Kokkos::Serial)
#endif
