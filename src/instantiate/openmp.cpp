// Explicit instantiations of kfa's entry points for Kokkos::OpenMP (empty when Kokkos lacks it); compiled
// once per part of parts.hpp.
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_OPENMP
#define KFA_SPACE Kokkos::OpenMP
#include "instantiate/parts.hpp"
#endif
