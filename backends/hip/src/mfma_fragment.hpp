#pragma once
// The AMD matrix-fragment layer: 16-bit operand fragments, fp32 accumulators and the one MFMA
// family the kernels issue (mfma_layout.hpp gives its register layout; frag:: the kernels' maps).
#include <hip/hip_runtime.h>

#include "kfa/detail/args.hpp"
#include "mfma_layout.hpp"

namespace kfa::hip {

using u16 = unsigned short;
typedef u16 u16x4 __attribute__((ext_vector_type(4)));
typedef float f32x16 __attribute__((ext_vector_type(16)));
typedef _Float16 f16x4 __attribute__((ext_vector_type(4)));
typedef short i16x4 __attribute__((ext_vector_type(4)));

/// Element type traits: the matrix-core product and the fp32 <-> 16-bit conversions.
template <detail::DType>
struct Elem;

template <>
struct Elem<detail::DType::f16> {
  __device__ static f32x16 mma(u16x4 a, u16x4 b, f32x16 c) {
    return __builtin_amdgcn_mfma_f32_32x32x8f16(__builtin_bit_cast(f16x4, a), __builtin_bit_cast(f16x4, b), c, 0, 0, 0);
  }
  __device__ static u16 from_float(float x) { return __builtin_bit_cast(u16, static_cast<_Float16>(x)); }
  __device__ static float to_float(u16 x) { return static_cast<float>(__builtin_bit_cast(_Float16, x)); }
};

template <>
struct Elem<detail::DType::bf16> {
  // the "_1k" form takes 4 bf16 per lane (the CDNA1 form took 2); gfx90a and gfx94x have it
  __device__ static f32x16 mma(u16x4 a, u16x4 b, f32x16 c) {
    return __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(__builtin_bit_cast(i16x4, a), __builtin_bit_cast(i16x4, b), c, 0, 0,
                                                    0);
  }
  /// Round to nearest even; NaN stays NaN.
  __device__ static u16 from_float(float x) {
    const unsigned u = __builtin_bit_cast(unsigned, x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<u16>((u >> 16) | 0x40u);
    return static_cast<u16>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  __device__ static float to_float(u16 x) { return __builtin_bit_cast(float, static_cast<unsigned>(x) << 16); }
};

__device__ inline f32x16 zero_acc() {
  f32x16 z;
#pragma unroll
  for (int r = 0; r < mfma::acc_regs; ++r) z[r] = 0.0f;
  return z;
}

/// The 4 operand elements a lane reads start at `c` of a row-major tile with leading dimension
/// `ld` and run along the row (frag:: maps guarantee it), so one 8-byte LDS read fetches them.
__device__ inline u16x4 load_operand(const u16* tile, int ld, mfma::Coord c) {
  return *reinterpret_cast<const u16x4*>(tile + c.row * ld + c.col);
}

/// Accumulator registers 4 kk .. 4 kk + 3 rounded to 16 bits: B operand step kk of the next product.
template <detail::DType DT>
__device__ inline u16x4 acc_as_operand(const f32x16& acc, int kk) {
  u16x4 v;
#pragma unroll
  for (int i = 0; i < mfma::operand_elems; ++i) v[i] = Elem<DT>::from_float(acc[mfma::acc_reg_as_b(kk, i)]);
  return v;
}

/// A lane's partial value combined with its column partner's (the other 16 rows of its column).
__device__ inline float column_max(float v) { return fmaxf(v, __shfl_xor(v, mfma::column_partner_xor)); }
__device__ inline float column_sum(float v) { return v + __shfl_xor(v, mfma::column_partner_xor); }

}  // namespace kfa::hip
