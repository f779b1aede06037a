#pragma once
// Element types of the AMD GPU suite: the native matrix-core kernels take half and bfloat16.
#include <Kokkos_Core.hpp>

#include <tuple>

#include "harness.hpp"

namespace kfa::test {

using HipMatrixCoreCases = std::tuple<Case<Kokkos::HIP, half>, Case<Kokkos::HIP, bhalf>>;
using HipAllCases = std::tuple<Case<Kokkos::HIP, float>, Case<Kokkos::HIP, double>, Case<Kokkos::HIP, half>,
                               Case<Kokkos::HIP, bhalf>>;

}  // namespace kfa::test
