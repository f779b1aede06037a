// Explicit instantiations of kfa's entry points for Kokkos::OpenMP (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_OPENMP
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "reference/standard_attention.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::OpenMP)
KFA_INSTANTIATE_FORWARD(Kokkos::OpenMP)
KFA_INSTANTIATE_REFERENCE(Kokkos::OpenMP)
#endif
