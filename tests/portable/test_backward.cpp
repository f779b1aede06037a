// Portable backward on every host execution space and element type, against fp64 gradients.
#include "spaces.hpp"

#define KFA_BACKWARD_SUITE "backward"
#define KFA_BACKWARD_TAGS "[backward]"
#define KFA_BACKWARD_CASES HostCases
#include "backward_suite.hpp"
