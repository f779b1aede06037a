// Explicit instantiations of kfa's entry points for Kokkos::Serial (empty when Kokkos lacks it); compiled
// once per part of parts.hpp.
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_SERIAL
#define KFA_SPACE Kokkos::Serial
#include "instantiate/parts.hpp"
#endif
