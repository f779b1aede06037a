#pragma once
// The execution spaces a suite runs on: every host backend Kokkos was built with.
#include <Kokkos_Core.hpp>

#include <tuple>

#include "harness.hpp"

namespace kfa::test {

template <class Space>
using AllTypes = std::tuple<Case<Space, float>, Case<Space, double>, Case<Space, half>, Case<Space, bhalf>>;

#ifdef KOKKOS_ENABLE_SERIAL
using SerialCases = AllTypes<Kokkos::Serial>;
#else
using SerialCases = std::tuple<>;
#endif
#ifdef KOKKOS_ENABLE_OPENMP
using OpenMPCases = AllTypes<Kokkos::OpenMP>;
#else
using OpenMPCases = std::tuple<>;
#endif

/// Every (host space, element type) pair.
using HostCases = decltype(std::tuple_cat(SerialCases{}, OpenMPCases{}));

}  // namespace kfa::test
