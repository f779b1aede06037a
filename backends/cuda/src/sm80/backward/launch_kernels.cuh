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
/// KC is its key columns per register strip (smaller for the wide head_dims, whose dQ accumulator
/// takes a quarter of the register file at 128 and half at 256). Head_dim 256 takes 64 keys per dK/dV
/// CTA: its K, V and double-buffered Q, dO tiles are 192 KiB of shared memory at 64 x 64.
/// KFA_CUDA_BWD_BQ_D64 is a tuning knob.
#ifndef KFA_CUDA_BWD_BQ_D64
#define KFA_CUDA_BWD_BQ_D64 128
#endif
template <int D>
struct Tiles {
  static constexpr int kDkdvBQ = D <= 64 ? KFA_CUDA_BWD_BQ_D64 : 64, kDkdvBK = D > 128 ? 64 : 128;
  static constexpr int kDqBQ = 64, kDqBK = 64, kDqKC = D > 128 ? 16 : (D == 128 ? 32 : 64);
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
/// kFeat instantiations; dense calls run kernels compiled without any of them. Head_dim 256 runs the
/// featured kernels for every call: with its 128 dK/dV floats per thread, their 32-bit positions and
/// constants kept in shared memory are what keeps the atomic dK/dV kernel free of spills (the dense
/// one spilled 156 bytes on sm_90), and the dense kernels are not compiled for it.
template <class T, int DS>
void launch_main_kernels(const KernelParams& p, bool deterministic, bool featured, cudaStream_t stream) {
  constexpr int D = SwizzledTile<DS>::stride;  // the head dim computed: DS, or 128 for 96 (steps.cuh)
  using Tl = Tiles<D>;
  constexpr bool kDenseKernels = D <= 128;
  const auto& s = p.shape;
  {
    using Cfg = DkdvConfig<D, Tl::kDkdvBQ, Tl::kDkdvBK>;
    const dim3 grid(static_cast<unsigned>((s.seqlen_k + Tl::kDkdvBK - 1) / Tl::kDkdvBK),
                    static_cast<unsigned>(s.batch * s.heads_kv));
    auto* kernel = deterministic ? dkdv_feat_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, false, DS>
                                 : dkdv_feat_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, true, DS>;
    if constexpr (kDenseKernels)
      if (!featured)
        kernel = deterministic ? dkdv_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, false, DS>
                               : dkdv_kernel<T, D, Tl::kDkdvBQ, Tl::kDkdvBK, true, DS>;
    set_smem(kernel, Cfg::kSmemBytes);
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
    check_launch("dK/dV kernel");
  }
  if (deterministic) {
    using Cfg = DqConfig<D, Tl::kDqBQ, Tl::kDqBK>;
    const dim3 grid(static_cast<unsigned>((s.seqlen_q + Tl::kDqBQ - 1) / Tl::kDqBQ),
                    static_cast<unsigned>(s.batch * s.heads));
    auto* kernel = dq_feat_kernel<T, D, Tl::kDqBQ, Tl::kDqBK, Tl::kDqKC, DS>;
    if constexpr (kDenseKernels)
      if (!featured) kernel = dq_kernel<T, D, Tl::kDqBQ, Tl::kDqBK, Tl::kDqKC, DS>;
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
