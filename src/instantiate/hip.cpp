// Explicit instantiations of kfa's entry points for Kokkos::HIP (empty when Kokkos lacks it); compiled
// once per part of parts.hpp.
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_HIP
#define KFA_SPACE Kokkos::HIP
#include "instantiate/parts.hpp"
#endif
