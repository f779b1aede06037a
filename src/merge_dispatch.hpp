#pragma once
// merge_dispatch<ExecSpace>: the portable merge kernel for the call's element type. (A native backend
// would plug in here, taking the same kfa::detail::MergeArgs.)
#include <Kokkos_Core.hpp>

#include "kfa/merge.hpp"
#include "portable/merge_kernel.hpp"

namespace kfa::detail {

template <class ExecSpace>
void merge_dispatch(const ExecSpace& exec, const MergeArgs& a) {
  switch (a.dtype) {
    case DType::f32: portable::run_merge<ExecSpace, float>(exec, a); break;
    case DType::f64: portable::run_merge<ExecSpace, double>(exec, a); break;
    case DType::f16: portable::run_merge<ExecSpace, Kokkos::Experimental::half_t>(exec, a); break;
    case DType::bf16: portable::run_merge<ExecSpace, Kokkos::Experimental::bhalf_t>(exec, a); break;
  }
}

}  // namespace kfa::detail

#define KFA_INSTANTIATE_MERGE(SPACE) \
  template void kfa::detail::merge_dispatch<SPACE>(const SPACE&, const kfa::detail::MergeArgs&);
