#pragma once
// Which (query, key, dim) element every register of every lane holds in the HIP attention kernels.
// Each kernel keeps one wavefront on 32 rows (queries, or keys in the dK/dV kernel) and walks the
// other side in 32-wide sub-tiles. The products are arranged so that each score accumulator can be
// fed straight back as the B operand of the next product (mfma::acc_reg_as_b), and so that every
// 4-element operand load is 4 contiguous elements of a row-major tile in LDS or registers.
// Host-callable: tests/hip runs these maps through a model of the instruction.
#include "mfma_layout.hpp"

namespace kfa::hip::frag {

using mfma::Coord;

/// (n, depth) element of a row-major [n][depth] tile read by a lane as an A operand, k-step kk:
/// n = lane % 32, depth = 8 kk + 4 (lane / 32) + i. The same slots serve as the B operand of X^T.
KFA_HD constexpr Coord rows_operand(int lane, int kk, int i) {
  const Coord a = mfma::a_coord(lane, i);
  return {a.row, mfma::tile_k * kk + a.col};
}

/// (n, depth) element of a row-major [n][depth] tile read as the A operand of X^T, where X^T's
/// rows are columns 32 blk .. 32 blk + 31 of X: A[row = d][k = n] = X[n][d]; the four elements of
/// a lane are 4 consecutive n (contiguous when the tile is stored transposed, [depth][n]).
KFA_HD constexpr Coord transposed_operand(int lane, int blk, int kk, int i) {
  const Coord a = mfma::a_coord(lane, i);  // a.row: row of X^T = column of X, a.col: k = row of X
  return {mfma::tile_k * kk + a.col, mfma::tile_m * blk + a.row};
}

/// Accumulator of a product whose rows are 32 blk .. 32 blk + 31 of a wide dimension (head dim):
/// returns {column, row} = {the wave's own row index (lane % 32), the wide index}.
KFA_HD constexpr Coord wide_acc(int lane, int blk, int r) {
  const Coord c = mfma::acc_coord(lane, r);
  return {c.col, mfma::tile_m * blk + c.row};
}

/// Position of element {n, wide} of X in an LDS tile that stores X transposed, [wide][n].
KFA_HD constexpr Coord in_transposed_tile(Coord c) { return {c.col, c.row}; }

/// The same element in a tile whose first dimension starts `rows` earlier (sub-tile n of a stage).
KFA_HD constexpr Coord shift_rows(Coord c, int rows) { return {c.row + rows, c.col}; }

// ---- forward (one wave: 32 queries; a key sub-tile: 32 keys) ----
// S^T[key][query] = K Q^T            A = K (LDS, row-major), B = Q^T (registers)
// O^T[dim][query] += V^T P^T          A = V^T (LDS, stored transposed), B = P^T (the S^T accumulator)
namespace fwd {
/// {query, dim} of B operand element i, k-step kk (Q lives in registers for the whole kernel).
KFA_HD constexpr Coord q_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }
/// {key, dim} of A operand element i, k-step kk.
KFA_HD constexpr Coord k_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }
/// {key, query} of score register r.
KFA_HD constexpr Coord score(int lane, int r) { return mfma::acc_coord(lane, r); }
/// {key, dim} of A operand element i of V^T, head-dim block blk, k-step kk (kk over 8 keys).
KFA_HD constexpr Coord v_operand(int lane, int blk, int kk, int i) { return transposed_operand(lane, blk, kk, i); }
/// {query, dim} of output accumulator r of head-dim block blk.
KFA_HD constexpr Coord out(int lane, int blk, int r) { return wide_acc(lane, blk, r); }
/// The one query whose softmax statistics a lane keeps.
KFA_HD constexpr int query_of_lane(int lane) { return lane % 32; }
}  // namespace fwd

// ---- backward, dK/dV kernel (one wave: 32 keys; a query sub-tile: 32 queries) ----
// S[query][key]  = Q K^T        A = Q (LDS),  B = K^T (registers)
// dP[query][key] = dO V^T       A = dO (LDS), B = V^T (registers)
// dV^T[dim][key] += dO^T P      A = dO^T (LDS, transposed), B = P  (the S accumulator)
// dK^T[dim][key] += Q^T dS      A = Q^T (LDS, transposed),  B = dS (the dP accumulator)
namespace dkv {
KFA_HD constexpr Coord q_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }   // {query, dim}
KFA_HD constexpr Coord k_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }   // {key, dim}
KFA_HD constexpr Coord score(int lane, int r) { return mfma::acc_coord(lane, r); }                // {query, key}
/// {query, dim} of the A operand of dO^T (or Q^T), head-dim block blk, k-step kk (over queries).
KFA_HD constexpr Coord t_operand(int lane, int blk, int kk, int i) { return transposed_operand(lane, blk, kk, i); }
/// {key, dim} of gradient accumulator r of head-dim block blk.
KFA_HD constexpr Coord grad(int lane, int blk, int r) { return wide_acc(lane, blk, r); }
KFA_HD constexpr int key_of_lane(int lane) { return lane % 32; }
}  // namespace dkv

// ---- backward, dQ kernel (one wave: 32 queries; a key sub-tile: 32 keys) ----
// S^T[key][query]  = K Q^T      A = K (LDS), B = Q^T (registers)
// dP^T[key][query] = V dO^T     A = V (LDS), B = dO^T (registers)
// dQ^T[dim][query] += K^T dS^T  A = K^T (LDS, transposed), B = dS^T (the dP^T accumulator)
namespace dq {
KFA_HD constexpr Coord q_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }   // {query, dim}
KFA_HD constexpr Coord k_operand(int lane, int kk, int i) { return rows_operand(lane, kk, i); }   // {key, dim}
KFA_HD constexpr Coord score(int lane, int r) { return mfma::acc_coord(lane, r); }                // {key, query}
KFA_HD constexpr Coord kt_operand(int lane, int blk, int kk, int i) { return transposed_operand(lane, blk, kk, i); }  // {key, dim}
KFA_HD constexpr Coord grad(int lane, int blk, int r) { return wide_acc(lane, blk, r); }        // {query, dim}
KFA_HD constexpr int query_of_lane(int lane) { return lane % 32; }
}  // namespace dq

}  // namespace kfa::hip::frag
