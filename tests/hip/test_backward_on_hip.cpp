// The backward on Kokkos::HIP (every element type; the dispatcher picks the native kernels where it
// supports them), against fp64 gradients.
#include "hip_cases.hpp"

#define KFA_BACKWARD_SUITE "hip backward"
#define KFA_BACKWARD_TAGS "[hip][backward]"
#define KFA_BACKWARD_CASES HipAllCases
#include "backward_suite.hpp"
