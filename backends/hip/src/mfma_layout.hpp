#pragma once
// Where the elements of a CDNA matrix-core operation live in a 64-lane wavefront.
// Plain constexpr C++ (no HIP headers) so the host tests can run the same index functions as the
// kernels. Every instruction the kernels use belongs to one family with one register layout:
//   v_mfma_f32_32x32x8f16       (gfx90a: CDNA2; gfx940/942: CDNA3, spelled v_mfma_f32_32x32x8_f16)
//   v_mfma_f32_32x32x8bf16_1k   (gfx90a; CDNA3 spelling v_mfma_f32_32x32x8_bf16)
// D[32x32] (fp32) = A[32x8] * B[8x32] + C[32x32]; each lane holds 4 A values, 4 B values and 16
// accumulators.
#include "kfa/detail/macros.hpp"

namespace kfa::hip::mfma {

constexpr int wave_size = 64;
constexpr int tile_m = 32, tile_n = 32, tile_k = 8;
constexpr int operand_elems = 4;  // 16-bit A (or B) values per lane: two VGPRs
constexpr int acc_regs = 16;      // fp32 accumulators per lane

struct Coord {
  int row, col;
};

/// A operand (M x K): lane l, element i holds A[l % 32][4 * (l / 32) + i].
KFA_HD constexpr Coord a_coord(int lane, int i) { return {lane % 32, 4 * (lane / 32) + i}; }

/// B operand (K x N): lane l, element i holds B[4 * (l / 32) + i][l % 32].
KFA_HD constexpr Coord b_coord(int lane, int i) { return {4 * (lane / 32) + i, lane % 32}; }

/// Accumulator (M x N): lane l, register r holds D[8 * (r / 4) + 4 * (l / 32) + r % 4][l % 32].
KFA_HD constexpr Coord acc_coord(int lane, int r) { return {8 * (r / 4) + 4 * (lane / 32) + r % 4, lane % 32}; }

/// The chaining identity the attention kernels rely on: for a fixed lane, accumulator registers
/// 4k .. 4k+3 hold column l % 32 at rows 8k + 4 (l / 32) + 0..3, which are exactly the (row, col)
/// slots that B operand step k (rows 8k .. 8k+7 of a 32-deep product) asks of that lane. So an
/// accumulator tile becomes the B operand of the next product with no data movement.
KFA_HD constexpr int acc_reg_as_b(int k_step, int i) { return 4 * k_step + i; }

/// A lane's 16 accumulators cover half of its column; the other half is in lane ^ column_partner_xor.
constexpr int column_partner_xor = 32;

}  // namespace kfa::hip::mfma
