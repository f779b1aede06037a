// The Tensor Core forward (forced with Backend::native) against fp64 with the tolerance rule.
#include "cuda_cases.hpp"

#define KFA_NATIVE_SUITE "cuda native"
#define KFA_NATIVE_TAGS "[cuda][native]"
#define KFA_NATIVE_CASES CudaTensorCoreCases
#include "native_forward_suite.hpp"
