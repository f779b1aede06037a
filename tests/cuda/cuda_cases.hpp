#pragma once
// Element types of the GPU suites: the native kernels take half and bfloat16.
#include <Kokkos_Core.hpp>

#include <tuple>

#include "harness.hpp"

namespace kfa::test {

using CudaTensorCoreCases = std::tuple<Case<Kokkos::Cuda, half>, Case<Kokkos::Cuda, bhalf>>;
using CudaAllCases = std::tuple<Case<Kokkos::Cuda, float>, Case<Kokkos::Cuda, double>, Case<Kokkos::Cuda, half>,
                                Case<Kokkos::Cuda, bhalf>>;

}  // namespace kfa::test
