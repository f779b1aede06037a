#pragma once
// Element types of the AMD GPU suite: the native matrix-core kernels take half and bfloat16.
#include <Kokkos_Core.hpp>

#include <tuple>
#include <vector>

#include "harness.hpp"

namespace kfa::test {

using HipMatrixCoreCases = std::tuple<Case<Kokkos::HIP, half>, Case<Kokkos::HIP, bhalf>>;
using HipAllCases = std::tuple<Case<Kokkos::HIP, float>, Case<Kokkos::HIP, double>, Case<Kokkos::HIP, half>,
                               Case<Kokkos::HIP, bhalf>>;

/// What the native-forward suite (tests/common/native_forward_suite.hpp) sweeps and forces.
inline std::vector<std::int64_t> native_head_dims() { return {32, 64, 96, 128, 256}; }
inline Backend native_for(std::int64_t) { return Backend::native; }

}  // namespace kfa::test
