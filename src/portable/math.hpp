#pragma once
// Numeric helpers of the portable path: the accumulation type and a vectorizable exp.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

namespace kfa::portable {

/// Math runs in float for float/half/bfloat16 inputs and in double for double inputs.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

/// a * b + c with one rounding where the hardware has FMA. Every dot product of kfa (the fused
/// kernels and the unfused reference) accumulates through this in the same order, so that the
/// two differ only in what the fused algorithm changes, not in how the compiler contracted them.
template <class Acc>
KOKKOS_FORCEINLINE_FUNCTION Acc madd(Acc a, Acc b, Acc c) {
#if defined(__FMA__) || defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__) || defined(__aarch64__)
  return Kokkos::fma(a, b, c);
#else
  return a * b + c;
#endif
}

/// e^x for x <= 0 (softmax arguments are never positive). Returns exactly 0 below 2^-126,
/// including for -inf. On hosts it is branch-free so loops over a score row vectorize: Cody-Waite
/// reduction x = r ln2 + f with |f| <= ln2/2, then a degree-7 Taylor series (truncation < 1e-8),
/// about as accurate as libm's expf. On GPUs it is the hardware exp.
KOKKOS_INLINE_FUNCTION float exp_nonpositive(float x) {
  KOKKOS_IF_ON_DEVICE((return ::expf(x);))
  KOKKOS_IF_ON_HOST((
    const float xc = x < -88.0f ? -88.0f : x;
    const float r = __builtin_rintf(xc * 1.44269504088896341f);
    const float f = (xc - r * 0.693145751953125f) - r * 1.428606765330187e-06f;
    const float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.66666667e-1f + f * (4.16666667e-2f +
                    f * (8.33333333e-3f + f * (1.38888889e-3f + f * 1.98412698e-4f))))));
    // 2^r by building the exponent; r = -127 (x = -88) gives 0
    const std::int32_t bits = x < -87.0f ? 0 : (static_cast<std::int32_t>(r) + 127) << 23;
    return p * Kokkos::bit_cast<float>(bits);
  ))
}

KOKKOS_INLINE_FUNCTION double exp_nonpositive(double x) { return Kokkos::exp(x); }


}  // namespace kfa::portable
