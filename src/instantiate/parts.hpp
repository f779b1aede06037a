// kfa's entry points for the execution space KFA_SPACE, in three parts that compile in separate
// translation units (KFA_PART 1, 2, 3; src/CMakeLists.txt generates one per space and part), so that
// a build's cores share the heavy instantiations:
//   1  the forward and the KV-cache forward (they share the portable forward kernels),
//   2  the backward,
//   3  the debug probabilities, the merge and the unfused references.
#if KFA_PART == 1
#include "forward_dispatch.hpp"
#include "kvcache_dispatch.hpp"

KFA_INSTANTIATE_FORWARD(KFA_SPACE)
KFA_INSTANTIATE_KVCACHE(KFA_SPACE)
#elif KFA_PART == 2
#include "backward_dispatch.hpp"

KFA_INSTANTIATE_BACKWARD(KFA_SPACE)
#elif KFA_PART == 3
#include "debug_dispatch.hpp"
#include "merge_dispatch.hpp"
#include "reference/standard_attention.hpp"
#include "reference/standard_backward.hpp"

KFA_INSTANTIATE_DEBUG(KFA_SPACE)
KFA_INSTANTIATE_MERGE(KFA_SPACE)
KFA_INSTANTIATE_REFERENCE(KFA_SPACE)
KFA_INSTANTIATE_REFERENCE_BACKWARD(KFA_SPACE)
#else
#error "KFA_PART must be 1, 2 or 3"
#endif
