// The matrix-core (MFMA) forward (forced with Backend::native) against fp64 with the tolerance rule.
#include "hip_cases.hpp"

#define KFA_NATIVE_SUITE "hip native"
#define KFA_NATIVE_TAGS "[hip][native]"
#define KFA_NATIVE_CASES HipMatrixCoreCases
#include "native_forward_suite.hpp"

TEMPLATE_LIST_TEST_CASE("hip native: softcap and ALiBi", "[hip][native]", HipMatrixCoreCases) {
  using T = typename TestType::value;
  RefOptions m;
  m.softcap = 5.0;
  m.alibi = {0.25f, 0.0625f};
  m.causal = GENERATE(false, true);
  check_forward<Kokkos::HIP, T>({1, 80, 100, 2, 2, 64}, m, false, 3.0, native);
}
