#pragma once
// Grid shapes and head_dim dispatch of the kernels; instantiated per element type in
// forward_<dtype>.hip / backward_<dtype>.hip so that a build compiles them in parallel.
#include <hip/hip_runtime.h>

#include <stdexcept>
#include <string>

#include "backward_kernels.hpp"
#include "forward_kernel.hpp"

namespace kfa::hip {

inline void check_launch(const char* what) {
  const hipError_t e = hipGetLastError();
  if (e != hipSuccess) throw std::runtime_error(std::string("kfa: HIP ") + what + " launch failed: " + hipGetErrorString(e));
}

template <detail::DType DT, int D>
void launch_forward_d(const detail::ForwardArgs& a, hipStream_t stream) {
  const std::int64_t n_qtiles = common::tile_count(a.shape.seqlen_q, group_rows);
  const std::int64_t blocks = n_qtiles * a.shape.batch * a.shape.heads;
  hipLaunchKernelGGL((forward_kernel<DT, D>), dim3(static_cast<unsigned>(blocks)), dim3(group_threads), 0, stream, a,
                     n_qtiles);
  check_launch("forward");
}

template <detail::DType DT>
void launch_forward(const detail::ForwardArgs& a, hipStream_t stream) {
  switch (a.shape.head_dim) {
    case 32: launch_forward_d<DT, 32>(a, stream); break;
    case 64: launch_forward_d<DT, 64>(a, stream); break;
    case 96: launch_forward_d<DT, 96>(a, stream); break;
    case 128: launch_forward_d<DT, 128>(a, stream); break;
    case 256: launch_forward_d<DT, 256>(a, stream); break;
    default: throw std::logic_error("kfa: HIP forward called for an unsupported head_dim");
  }
}

template <detail::DType DT, int D>
void launch_backward_d(const detail::BackwardArgs& a, hipStream_t stream) {
  const detail::Shape& s = a.shape;
  const std::int64_t n_ktiles = common::tile_count(s.seqlen_k, group_rows);
  hipLaunchKernelGGL((backward_dkdv_kernel<DT, D>),
                     dim3(static_cast<unsigned>(n_ktiles), static_cast<unsigned>(s.heads_kv),
                          static_cast<unsigned>(s.batch)),
                     dim3(group_threads), 0, stream, a);
  check_launch("backward dK/dV");
  const std::int64_t n_qtiles = common::tile_count(s.seqlen_q, group_rows);
  hipLaunchKernelGGL((backward_dq_kernel<DT, D>), dim3(static_cast<unsigned>(n_qtiles * s.batch * s.heads)),
                     dim3(group_threads), 0, stream, a, n_qtiles);
  check_launch("backward dQ");
}

template <detail::DType DT>
void launch_backward(const detail::BackwardArgs& a, hipStream_t stream) {
  switch (a.shape.head_dim) {
    case 32: launch_backward_d<DT, 32>(a, stream); break;
    case 64: launch_backward_d<DT, 64>(a, stream); break;
    case 96: launch_backward_d<DT, 96>(a, stream); break;
    case 128: launch_backward_d<DT, 128>(a, stream); break;
    default: throw std::logic_error("kfa: HIP backward called for an unsupported head_dim");
  }
}

}  // namespace kfa::hip
