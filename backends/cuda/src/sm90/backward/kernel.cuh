#pragma once
// The Hopper backward (sm_90a): the main kernel's shell and its launcher. One block of 1 + 2
// warpgroups per (key tile of BK keys, kv head, batch): warpgroup 0 loads (producer.cuh, one thread)
// and adds dQ into the fp32 accumulator (warp 1, Sm90BwdDqWriter: TMA reductions through the
// accumulator's tensor map); the two consumers compute (mainloop.cuh), each owning 64 of the keys. The grid puts the (batch, kv head)
// pairs fastest, so the first wave takes key tile 0 of every head: under a causal mask the key
// tiles with the most visible queries start first. The preprocess (D = rowsum(dO * O), zeroed dQ
// accumulator) and the dQ conversion are the mma.sync backward's (sm80/backward/prepost_kernels.cuh);
// the launcher (launch/backward.cu) runs them around this kernel.
// This kernel takes the dense cases (causal / window masks, GQA, any lengths) with the atomic dQ;
// the featured and deterministic cases run the mma.sync kernels.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

#include "arch/ptx.cuh"
#include "arch/sm90_ptx.cuh"
#include "arch/tensor_map.hpp"
#include "kfa/error.hpp"
#include "sm80/backward/params.cuh"
#include "sm90/backward/mainloop.cuh"
#include "sm90/backward/producer.cuh"
#include "sm90/backward/launch.hpp"
#include "sm90/backward/shape.cuh"

namespace kfa::cuda::hopper {

template <int D, class T>
__global__ void __launch_bounds__(Sm90BwdShape<D>::threads, 1)
    backward_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                         const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap do_map,
                         const __grid_constant__ CUtensorMap dq_map, const __grid_constant__ bwd::KernelParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma and setmaxnreg exist on sm_90a only
  using F = Sm90BwdShape<D>;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const std::uint32_t base = (raw + 1023) & ~1023u;  // 128-byte swizzle atoms are 1024-byte aligned
  const Sm90BwdSmem<D> smem{base, smem_raw + (base - raw)};
  const Sm90BwdBarriers<D> bar = smem.barriers();
  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / static_cast<int>(p.shape.heads_kv), hk = bh % static_cast<int>(p.shape.heads_kv);
  const int n0 = static_cast<int>(blockIdx.y) * F::block_k;
  const int wg = threadIdx.x / 128;
  if (threadIdx.x == 0) bar.init();
  __syncthreads();
  if (wg == 0) {
    regs_release<F::producer_regs>();
    if (threadIdx.x == 0) Sm90BwdProducer<D>::run(&q_map, &k_map, &v_map, &do_map, p, b, hk, n0, smem, bar);
    if (threadIdx.x / 32 == 1) Sm90BwdDqWriter<D>::run(&dq_map, p, b, hk, n0, smem, threadIdx.x % 32);
    return;
  }
  regs_claim<F::consumer_regs>();
  Sm90BwdMainloop<D, T> mainloop;
  mainloop.run(p, b, hk, n0, wg - 1, smem, bar);
  mainloop.store(p, b, hk, n0, wg - 1);
#endif
}

template <int D, class T>
void launch_backward_sm90(const bwd::KernelParams& p, detail::DType dtype, cudaStream_t stream) {
  using F = Sm90BwdShape<D>;
  const auto& s = p.shape;
  const CUtensorMap q_map = make_tensor_map(p.q, dtype, s.batch, s.seqlen_q, s.heads, D, F::block_q);
  const CUtensorMap do_map = make_tensor_map(p.dout, dtype, s.batch, s.seqlen_q, s.heads, D, F::block_q);
  const CUtensorMap k_map = make_tensor_map(p.k, dtype, s.batch, s.seqlen_k, s.heads_kv, D, F::block_k);
  const CUtensorMap v_map = make_tensor_map(p.v, dtype, s.batch, s.seqlen_k, s.heads_kv, D, F::block_k);
  const CUtensorMap dq_map = make_accum_map(p.dq_accum, s.batch * s.heads, s.seqlen_q, D, F::block_q);
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads_kv), static_cast<unsigned>((s.seqlen_k + F::block_k - 1) / F::block_k));
  auto kernel = backward_sm90_kernel<D, T>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<grid, F::threads, F::smem_bytes, stream>>>(q_map, k_map, v_map, do_map, dq_map, p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw LaunchError(std::string("CUDA Hopper backward kernel launch failed: ") + cudaGetErrorString(err));
}

}  // namespace kfa::cuda::hopper

#define KFA_SM90_INSTANTIATE_BACKWARD(DIM, TYPE)                                                       \
  template void kfa::cuda::hopper::launch_backward_sm90<DIM, TYPE>(const kfa::cuda::bwd::KernelParams&, \
                                                                   kfa::detail::DType, cudaStream_t);
