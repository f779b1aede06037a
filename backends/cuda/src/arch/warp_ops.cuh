#pragma once
// The warp-level instructions of the backward kernels, as the backward names them: the wrappers of
// ../ptx.cuh (cp.async, ldmatrix, mma.sync m16n8k16 with fp32 accumulation, ex2) plus the element
// unpacking only the backward needs. Fragment layouts follow the PTX ISA:
//   A 16x16 (row): 4 regs; B 16x8 (col): 2 regs; C 16x8 fp32: c0,c1 at (g, 2t..2t+1), c2,c3 at (g+8, ..)
// with g = lane / 4, t = lane % 4.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "arch/ptx.cuh"

namespace kfa::cuda {

using ptx::cp_async_commit;
using ptx::cp_async_wait;
using ptx::ldmatrix_x4;
using ptx::ldmatrix_x4_trans;

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) { return ptx::smem_addr(p); }

/// 16-byte asynchronous copy; src_bytes = 0 fills the destination with zeros (out-of-range rows).
__device__ __forceinline__ void cp_async16(std::uint32_t dst, const void* src, int src_bytes) {
  ptx::cp_async_16(dst, src, src_bytes != 0);
}

/// 2^x on the special-function unit; -inf gives +0 (masked or fully masked rows).
__device__ __forceinline__ float fast_exp2(float x) { return ptx::exp2_approx(x); }

/// Adds a pair of neighbouring floats to global memory (one vector reduction where the GPU has it;
/// `red` returns nothing, so no register waits for the old value as atomicAdd's would).
__device__ __forceinline__ void atomic_add2(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(dst), "f"(a), "f"(b) : "memory");
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

/// The element types differ only in the mma variant and in how two floats are packed.
template <class T>
struct ElemOps;

template <>
struct ElemOps<__nv_bfloat16> {
  __device__ __forceinline__ static std::uint32_t pack(float lo, float hi) { return ptx::pack2<__nv_bfloat16>(lo, hi); }
  __device__ __forceinline__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  /// Element `hi` (0: low, 1: high) of a packed pair, as float.
  __device__ __forceinline__ static float unpack(std::uint32_t v, int hi) {
    return __uint_as_float(hi ? (v & 0xffff0000u) : (v << 16));
  }
  __device__ __forceinline__ static void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    ptx::mma_16816<__nv_bfloat16>(c, a, b0, b1);
  }
};

template <>
struct ElemOps<__half> {
  __device__ __forceinline__ static std::uint32_t pack(float lo, float hi) { return ptx::pack2<__half>(lo, hi); }
  __device__ __forceinline__ static float to_float(__half x) { return __half2float(x); }
  __device__ __forceinline__ static float unpack(std::uint32_t v, int hi) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(hi ? v >> 16 : v & 0xffffu)));
  }
  __device__ __forceinline__ static void mma(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    ptx::mma_16816<__half>(c, a, b0, b1);
  }
};

}  // namespace kfa::cuda
