#pragma once
// The Hopper backward (sm_90a): the main kernel's shell and its launcher. One block of 1 + 2
// warpgroups per (key tile of BK keys, kv head, batch or packed sequence): warpgroup 0 loads
// (producer.cuh: thread 0 the TMA loads, warp 2 the row statistics, thread 96 the walk) and adds dQ into the
// fp32 accumulator (warp 1, Sm90BwdDqWriter: TMA reductions through the accumulator's tensor map);
// the two consumers compute (mainloop.cuh), each owning 64 of the keys. Thread 0 first writes the
// block's record (walk.cuh), which every role reads. The grid puts the (batch, kv head)
// pairs fastest, so the first wave takes key tile 0 of every head: under a causal mask the key
// tiles with the most visible queries start first. The preprocess (D = rowsum(dO * O), zeroed dQ
// accumulator) and the dQ conversion are the mma.sync backward's (sm80/backward/prepost_kernels.cuh);
// the launcher (launch/backward.cu) runs them around this kernel.
// The dense instance takes causal / window masks, GQA and any lengths; the Featured instance also
// packed sequences, block masks, softcap, ALiBi and dropout (one kernel, the feature branches compiled
// in). Both add dQ by TMA reductions: in any order, or in deterministic mode in the order of the
// key tiles (the dQ writer, mainloop.cuh).
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
#include "sm90/backward/walk.cuh"

namespace kfa::cuda::hopper {

template <int D, class T, bool Featured>
__global__ void __launch_bounds__(Sm90BwdShape<D, Featured>::threads, 1)
    backward_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                         const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap do_map,
                         const __grid_constant__ CUtensorMap dq_map, const __grid_constant__ bwd::KernelParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // wgmma and setmaxnreg exist on sm_90a only
  using F = Sm90BwdShape<D, Featured>;
  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t raw = ptx::smem_addr(smem_raw);
  const std::uint32_t base = (raw + 1023) & ~1023u;  // 128-byte swizzle atoms are 1024-byte aligned
  const Sm90BwdSmem<D, Featured> smem{base, smem_raw + (base - raw)};
  const Sm90BwdBarriers<D, Featured> bar = smem.barriers();
  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / static_cast<int>(p.shape.heads_kv), hk = bh % static_cast<int>(p.shape.heads_kv);
  const int n0 = static_cast<int>(blockIdx.y) * F::block_k;
  const int wg = threadIdx.x / 128;
  Sm90BwdBlock& blk = *static_cast<Sm90BwdBlock*>(smem.block());
  if (threadIdx.x == 0) {
    bar.init();
    blk = make_bwd_block<F::block_k, F::block_q, Featured>(p, b, hk, n0);
  }
  __syncthreads();
  if (blk.keys <= 0) return;  // a key tile past its packed sequence's end: nothing to write
  if (wg == 0) {
    regs_release<F::producer_regs>();
    const int warp = threadIdx.x / 32;
    if (threadIdx.x == 0) Sm90BwdProducer<D, Featured>::run(&q_map, &k_map, &v_map, &do_map, p, b, hk, n0, smem, bar, blk);
    if (warp == 1) Sm90BwdDqWriter<D, Featured>::run(&dq_map, p, b, n0, smem, blk, threadIdx.x % 32);
    if (warp == 2) Sm90BwdStats<D, Featured>::run(p, b, smem, bar, blk, threadIdx.x % 32);
    if (threadIdx.x == 96) Sm90BwdWalker<D, Featured>::run(p, smem, bar, blk);
    return;
  }
  regs_claim<F::consumer_regs>();
  Sm90BwdMainloop<D, T, Featured> mainloop;
  mainloop.run(p, b, n0, wg - 1, smem, bar, blk);
  mainloop.store(p, b, hk, n0, wg - 1, blk);
#endif
}

template <int D, class T, bool Featured>
void launch_backward_sm90_variant(const bwd::KernelParams& p, detail::DType dtype, cudaStream_t stream) {
  using F = Sm90BwdShape<D, Featured>;
  const auto& s = p.shape;
  // Packed sequences: the maps cover the packed rows as one batch (make_tensor_map: batch stride 0),
  // and the accumulator's rows are (packed query, head) pairs (sm80/backward/params.cuh, row_map).
  std::int64_t rows_q = s.seqlen_q, rows_k = s.seqlen_k;
  if (p.varlen.enabled()) {
    rows_q = p.varlen.total_q > 0 ? p.varlen.total_q : packed_rows(p.varlen.cu_seqlens_q, s.batch, stream);
    rows_k = p.varlen.total_k > 0 ? p.varlen.total_k : packed_rows(p.varlen.cu_seqlens_k, s.batch, stream);
    if (rows_k == 0) return;  // every sequence without keys: no dK, dV rows
  }
  // No query at all: no step is taken (the blocks write zero dK, dV); k stands in for the maps' address.
  const detail::Tensor4& q = rows_q > 0 ? p.q : p.k;
  const detail::Tensor4& dout = rows_q > 0 ? p.dout : p.k;
  rows_q = rows_q > 0 ? rows_q : 1;
  const CUtensorMap q_map = make_tensor_map(q, dtype, s.batch, rows_q, s.heads, D, F::block_q);
  const CUtensorMap do_map = make_tensor_map(dout, dtype, s.batch, rows_q, s.heads, D, F::block_q);
  const CUtensorMap k_map = make_tensor_map(p.k, dtype, s.batch, rows_k, s.heads_kv, D, F::block_k);
  const CUtensorMap v_map = make_tensor_map(p.v, dtype, s.batch, rows_k, s.heads_kv, D, F::block_k);
  const CUtensorMap dq_map =
      p.varlen.enabled() ? make_accum_map(p.dq_accum, s.heads, rows_q, D, s.heads * D, D, F::dq_rows)
                         : make_accum_map(p.dq_accum, s.batch * s.heads, s.seqlen_q, D, D, s.seqlen_q * D, F::dq_rows);
  const dim3 grid(static_cast<unsigned>(s.batch * s.heads_kv), static_cast<unsigned>((s.seqlen_k + F::block_k - 1) / F::block_k));
  auto kernel = backward_sm90_kernel<D, T, Featured>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<grid, F::threads, F::smem_bytes, stream>>>(q_map, k_map, v_map, do_map, dq_map, p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw LaunchError(std::string("CUDA Hopper backward kernel launch failed: ") + cudaGetErrorString(err));
}

template <int D, class T>
void launch_backward_sm90(const bwd::KernelParams& p, detail::DType dtype, bool featured, cudaStream_t stream) {
  if (featured) launch_backward_sm90_variant<D, T, true>(p, dtype, stream);
  else launch_backward_sm90_variant<D, T, false>(p, dtype, stream);
}

}  // namespace kfa::cuda::hopper

#define KFA_SM90_INSTANTIATE_BACKWARD(DIM, TYPE)                                                       \
  template void kfa::cuda::hopper::launch_backward_sm90<DIM, TYPE>(const kfa::cuda::bwd::KernelParams&, \
                                                                   kfa::detail::DType, bool, cudaStream_t);
