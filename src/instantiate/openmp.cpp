// Explicit instantiations of kfa's entry points for Kokkos::OpenMP (empty when Kokkos lacks it).
#include <Kokkos_Core.hpp>

#ifdef KOKKOS_ENABLE_OPENMP
#include "backward_dispatch.hpp"
#include "debug_dispatch.hpp"
#include "forward_dispatch.hpp"
#include "kvcache_dispatch.hpp"
#include "merge_dispatch.hpp"
#include "reference/standard_attention.hpp"
#include "reference/standard_backward.hpp"

KFA_INSTANTIATE_DEBUG(Kokkos::OpenMP)
KFA_INSTANTIATE_FORWARD(Kokkos::OpenMP)
KFA_INSTANTIATE_KVCACHE(Kokkos::OpenMP)
KFA_INSTANTIATE_MERGE(Kokkos::OpenMP)
KFA_INSTANTIATE_REFERENCE(Kokkos::OpenMP)
KFA_INSTANTIATE_BACKWARD(Kokkos::OpenMP)
KFA_INSTANTIATE_REFERENCE_BACKWARD(Kokkos::OpenMP)
#endif
