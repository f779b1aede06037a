#pragma once
// Host model of the one CDNA matrix-core instruction family the HIP kernels issue:
//   v_mfma_f32_32x32x8f16 and v_mfma_f32_32x32x8bf16_1k (CDNA3: v_mfma_f32_32x32x8_f16 / _bf16),
//   D (32x32, fp32) = A (32x8) * B (8x32) + C, per 64-lane wavefront.
// Written from AMD's description of the register layout in the "matrix element -> (lane, item)"
// direction (as the CDNA ISA guides and AMD's matrix instruction calculator state it); the kernels'
// maps (backends/hip/src/mfma_layout.hpp) go the other way, so the tests compare two independent
// statements of the layout.
//   A[i][k]: lane i + 32 * (k / 4), 16-bit item k % 4 (of the lane's two VGPRs)
//   B[k][j]: lane j + 32 * (k / 4), item k % 4
//   D[i][j]: the 32 rows form 4 groups of 8; group i / 8 sits in accumulator VGPRs 4 (i / 8) ..
//            4 (i / 8) + 3, rows 0-3 of a group in lanes 0-31 and rows 4-7 in lanes 32-63, one row
//            per VGPR: lane j + 32 * ((i % 8) / 4), VGPR 4 (i / 8) + i % 4.
// Inputs are rounded to the 16-bit format; products and sums are exact here (fp64), which the
// hardware's fp32 accumulation matches on the small-integer data of the GEMM tests.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace kfa::test::mfma_model {

constexpr int lanes = 64, m = 32, n = 32, k = 8, items = 4, acc_regs = 16;

struct Slot {
  int lane, item;
  bool operator==(const Slot& o) const { return lane == o.lane && item == o.item; }
};

constexpr Slot a_slot(int i, int kk) { return {i + 32 * (kk / 4), kk % 4}; }
constexpr Slot b_slot(int kk, int j) { return {j + 32 * (kk / 4), kk % 4}; }
constexpr Slot d_slot(int i, int j) { return {j + 32 * ((i % 8) / 4), 4 * (i / 8) + i % 4}; }

enum class Input { f16, bf16 };

/// Round to the nearest bfloat16 (ties to even).
inline float round_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

/// Round to the nearest IEEE half (ties to even), normal and subnormal range.
inline float round_f16(float x) {
  if (x == 0.0f || !std::isfinite(x)) return x;
  int e;
  std::frexp(x, &e);                      // |x| = f * 2^e, f in [0.5, 1)
  const int exp = std::max(e - 1, -14);   // half: 10 fraction bits, minimum normal exponent -14
  const double q = std::ldexp(1.0, exp - 10);
  return static_cast<float>(std::nearbyint(x / q) * q);
}

inline float round_input(float x, Input t) { return t == Input::f16 ? round_f16(x) : round_bf16(x); }

/// One wavefront's registers for one operand / one accumulator tile.
struct Operand {
  std::array<std::array<float, items>, lanes> v{};
};
struct Accum {
  std::array<std::array<float, acc_regs>, lanes> v{};
};

/// C <- A * B + C as the instruction computes it. `inputs_exact`: the caller guarantees the operand
/// values are already values of the 16-bit format (skips the rounding; the emulator's case).
inline void mfma_32x32x8(Input t, const Operand& a, const Operand& b, Accum& c, bool inputs_exact = false) {
  // the operands as matrices, gathered through the layout
  double am[m][k], bm[k][n];
  for (int i = 0; i < m; ++i)
    for (int kk = 0; kk < k; ++kk) {
      const Slot s = a_slot(i, kk);
      am[i][kk] = inputs_exact ? a.v[s.lane][s.item] : round_input(a.v[s.lane][s.item], t);
    }
  for (int kk = 0; kk < k; ++kk)
    for (int j = 0; j < n; ++j) {
      const Slot s = b_slot(kk, j);
      bm[kk][j] = inputs_exact ? b.v[s.lane][s.item] : round_input(b.v[s.lane][s.item], t);
    }
  Accum d;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      const Slot ds = d_slot(i, j);
      double sum = c.v[ds.lane][ds.item];
      for (int kk = 0; kk < k; ++kk) sum += am[i][kk] * bm[kk][j];
      d.v[ds.lane][ds.item] = static_cast<float>(sum);
    }
  c = d;
}

}  // namespace kfa::test::mfma_model
