#pragma once
// Launches the Tensor Core kernels of one (element type, head_dim): the dK/dV kernel (with atomic dQ,
// or followed by the deterministic dQ kernel). Each backward_hd<D>_<type>.cu instantiates one pair,
// so the heavy templates compile in parallel.
#include <cuda_runtime.h>

#include <string>

#include "sm80/backward/dkdv_feat_kernel.cuh"
#include "sm80/backward/dkdv_kernel.cuh"
#include "sm80/backward/dq_feat_kernel.cuh"
#include "sm80/backward/dq_kernel.cuh"
#include "kfa/error.hpp"
#include "kfa_cuda_instances.hpp"
#include "sm80/backward/params.cuh"

namespace kfa::cuda::bwd {

/// Tile shapes per head_dim: BK keys per dK/dV CTA, BQ query rows per step; the dQ kernel's
/// KC is its key columns per register strip (smaller for the wide head_dim, whose dQ accumulator
/// already takes a quarter of the register file). KFA_CUDA_BWD_BQ_D64 is a tuning knob.
#ifndef KFA_CUDA_BWD_BQ_D64
#define KFA_CUDA_BWD_BQ_D64 128
#endif
template <int D>
struct Tiles {
  static constexpr int kDkdvBQ = D <= 64 ? KFA_CUDA_BWD_BQ_D64 : 64, kDkdvBK = 128;
  static constexpr int kDqBQ = 64, kDqBK = 64, kDqKC = D >= 128 ? 32 : 64;
};

inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw kfa::LaunchError(std::string("cuda backward: ") + what + ": " + cudaGetErrorString(e));
}

template <class Kernel>
void set_smem(Kernel* kernel, int bytes) {
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess)
    throw kfa::LaunchError(std::string("cuda backward: shared memory attribute: ") + cudaGetErrorString(e));
}

/// `featured`: the call uses packed sequences, softcap, ALiBi, dropout or a block mask, and runs the
/// kFeat instantiations; dense calls run kernels compiled without any of them.
template <class T, int D>
void launch_main_kernels(const KernelParams& p, bool deterministic, bool featured, cudaStream_t stream) {
  using Tl = Tiles<D>;
  const auto& s = p.shape;
  {
    using Cfg = DkdvConfig<D, Tl::kDkdvBQ, Tl::kDkdvBK>;
    const dim3 grid(static_cast<unsigned>((s.seqlen_k + Tl::kDkdvBK - 1) / Tl::kDkdvBK),
                    static_cast<unsigned>(s.batch * s.heads_kv));
    auto* kernel = featured ? (deterministic ? dkdv_feat_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, false>
                                             : dkdv_feat_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, true>)
                            : (deterministic ? dkdv_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, false>
                                             : dkdv_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, true>);
    set_smem(kernel, Cfg::kSmemBytes);
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
    check_launch("dK/dV kernel");
  }
  if (deterministic) {
    using Cfg = DqConfig<D, Tl::kDqBQ, Tl::kDqBK>;
    const dim3 grid(static_cast<unsigned>((s.seqlen_q + Tl::kDqBQ - 1) / Tl::kDqBQ),
                    static_cast<unsigned>(s.batch * s.heads));
    auto* kernel = featured ? dq_feat_kernel<T, D, Tl::kDqBQ, Tl::kDqBK, Tl::kDqKC>
                            : dq_kernel<T, D, Tl::kDqBQ, Tl::kDqBK, Tl::kDqKC>;
    set_smem(kernel, Cfg::kSmemBytes);
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
    check_launch("dQ kernel");
  }
}

#define KFA_CUDA_BWD_DECLARE(T, D) \
  extern template void launch_main_kernels<T, D>(const KernelParams&, bool, bool, cudaStream_t);
#define KFA_CUDA_BWD_INSTANTIATE(T, D) \
  template void launch_main_kernels<T, D>(const KernelParams&, bool, bool, cudaStream_t);

// One explicit instance per (element type, head_dim) of the instance table, each in its own generated
// translation unit (src/instances/backward_sm80.cu.in).
#define KFA_CUDA_BWD_DECLARE_DIM(D) KFA_CUDA_BWD_DECLARE(__nv_bfloat16, D) KFA_CUDA_BWD_DECLARE(__half, D)
KFA_CUDA_BACKWARD_SM80_DIMS(KFA_CUDA_BWD_DECLARE_DIM)
#undef KFA_CUDA_BWD_DECLARE_DIM

}  // namespace kfa::cuda::bwd
