// Explicit instantiations of kfa's entry points for Kokkos::Cuda (empty when Kokkos lacks it); compiled
// once per part of parts.hpp.
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_CUDA
#define KFA_SPACE Kokkos::Cuda
#include "instantiate/parts.hpp"
#endif
