#pragma once
// FlashAttention-2 backward on CDNA matrix cores, as two deterministic kernels (no atomics, no
// workspace): dK/dV walks query tiles for a block of keys, dQ walks key tiles for a block of
// queries. Both recompute P from the saved LSE and use delta = rowsum(dO * O). As in the forward,
// each product is oriented so that a score accumulator is the next product's B operand
// (frag::dkv, frag::dq). Grouped-query heads: the dK/dV workgroup of a K/V head sums over its group.
// Features as in the forward (feature_tiles.hpp): per-sequence bounds and masks, block-skipped tiles
// never loaded, element bits on partial tiles, and dropout with Z = keep * keep_scale:
// dV = (P Z)^T dO, dP = Z (dO V^T), dS = P (dP - D); keys that no query sees get dK = dV = 0.
#include <hip/hip_runtime.h>

#include <cstdint>

#include "forward_kernel.hpp"

namespace kfa::hip {

template <int D>
struct BackwardTiles {
  static_assert(D % mfma::tile_n == 0 && D <= 128, "head_dim 32..128, multiple of 32");
  static constexpr int rows = mfma::tile_n;           // the walked side, per LDS stage (32)
  static constexpr int ld = D + lds_pad;              // row-major [rows][D]
  static constexpr int ld_t = rows + lds_pad;         // transposed [D][rows]
  static constexpr int k_steps = D / mfma::tile_k;
  static constexpr int d_blocks = D / mfma::tile_m;
  static constexpr int p_steps = rows / mfma::tile_k; // depth steps of the products over the walked side
};

/// exp2 argument offset of a row from its natural-log LSE; rows that saw no key (or padding rows)
/// get +inf so that their probabilities are exp2(-inf) = 0.
__device__ inline float lse_offset(float lse) { return lse == -INFINITY ? INFINITY : lse * common::log2e; }

/// Gradient of one score: returns dL/d(dot) / scale, and sets p to the probability as dV uses it
/// (P Z under dropout). `dp` is (dO V^T) of the element, `visible` its mask answer, z its dropout
/// factor (keep_scale or 0; 1 without dropout).
__device__ inline float score_gradient(float dot, float dp, float lse_off, float delta, const detail::ScoreMod& mod,
                                       std::int64_t query, std::int64_t key, const detail::Shape& s, bool visible,
                                       float z, float sl2, float& p) {
  const detail::ModifiedScore m = detail::modify_score(dot, mod, query, key, s, visible);
  const float prob = visible ? exp2f(m.x * sl2 - lse_off) : 0.0f;
  p = prob * z;
  return prob * (z * dp - delta) * m.dx_ddot;
}

template <detail::DType DT, int D>
__global__ __launch_bounds__(group_threads) void backward_dkdv_kernel(detail::BackwardArgs a) {
  using E = Elem<DT>;
  using T = BackwardTiles<D>;
  __shared__ __attribute__((aligned(16))) u16 q_lds[T::rows * T::ld];
  __shared__ __attribute__((aligned(16))) u16 do_lds[T::rows * T::ld];
  __shared__ __attribute__((aligned(16))) u16 qt_lds[D * T::ld_t];
  __shared__ __attribute__((aligned(16))) u16 dot_lds[D * T::ld_t];
  __shared__ float lse_lds[T::rows], delta_lds[T::rows];

  const detail::ScoreSpec& sc = a.score;
  const int lane = threadIdx.x % mfma::wave_size, wave = threadIdx.x / mfma::wave_size;
  const std::int64_t batch = blockIdx.z, head_kv = blockIdx.y, group = a.shape.heads / a.shape.heads_kv;
  const features::Sequence seq = features::sequence(a.shape, a.varlen, batch);
  const detail::Shape& s = seq.shape;
  const std::int64_t k0 = static_cast<std::int64_t>(blockIdx.x) * group_rows;
  if (k0 >= s.seqlen_k) return;  // the key tile starts past this sequence's end (uniform)
  const std::int64_t qb = seq.bounds.q_begin, kb = seq.bounds.k_begin;
  const std::int64_t k_end = k0 + group_rows < s.seqlen_k ? k0 + group_rows : s.seqlen_k;
  const std::int64_t wk0 = k0 + wave * wave_rows;
  const std::int64_t wk_end = wk0 + wave_rows < s.seqlen_k ? wk0 + wave_rows : s.seqlen_k;
  const bool wave_active = wk0 < s.seqlen_k;

  const u16* kp = static_cast<const u16*>(a.k.data) + features::offset(a.k, batch, kb, head_kv);
  const u16* vp = static_cast<const u16*>(a.v.data) + features::offset(a.v, batch, kb, head_kv);
  u16x4 kf[T::k_steps], vf[T::k_steps];  // K^T and V^T as B operands of S and dP
#pragma unroll
  for (int kk = 0; kk < T::k_steps; ++kk) {
    const mfma::Coord c = frag::dkv::k_operand(lane, kk, 0);  // {key, dim}
    const bool ok = wk0 + c.row < s.seqlen_k;
    kf[kk] = load4(kp + (wk0 + c.row) * a.k.stride_s + c.col, ok);
    vf[kk] = load4(vp + (wk0 + c.row) * a.v.stride_s + c.col, ok);
  }
  f32x16 dk[T::d_blocks], dv[T::d_blocks];
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b) dk[b] = dv[b] = zero_acc();

  const float sl2 = common::scale_log2(sc.scale);
  const detail::DropoutPolicy drop = detail::make_dropout(sc);
  const detail::QueryTrip qtiles = detail::query_trip(k0, k_end, T::rows, s, sc);
  const detail::VisibleRange wave_queries =
      wave_active ? detail::visible_queries(wk0, wk_end, s, sc) : detail::VisibleRange{0, 0};

  for (std::int64_t g = 0; g < group; ++g) {
    const std::int64_t head = head_kv * group + g;
    const detail::ScoreMod mod = detail::make_score_mod(sc, head);
    const u16* qp = static_cast<const u16*>(a.q.data) + features::offset(a.q, batch, qb, head);
    const u16* dop = static_cast<const u16*>(a.dout.data) + features::offset(a.dout, batch, qb, head);
    const u16* op = static_cast<const u16*>(a.o.data) + features::offset(a.o, batch, qb, head);
    const float* lsep = static_cast<const float*>(a.lse.data) + features::offset(a.lse, batch, qb, head);

    for (std::int64_t qt = qtiles.begin; qt < qtiles.end; ++qt) {
      const std::int64_t q0 = qt * T::rows;
      const std::int64_t valid = s.seqlen_q - q0;
      const std::int64_t q_end = q0 + T::rows < s.seqlen_q ? q0 + T::rows : s.seqlen_q;
      // block mask: a query tile no key of the workgroup needs is never loaded (uniform decision)
      if (features::tile_kind(sc, batch, head, q0, q_end, k0, k_end) == detail::BlockKind::skipped) continue;
      __syncthreads();
      copy_rows<T::rows, D, T::ld>(q_lds, qp + q0 * a.q.stride_s, a.q.stride_s, valid);
      copy_rows<T::rows, D, T::ld>(do_lds, dop + q0 * a.dout.stride_s, a.dout.stride_s, valid);
      copy_rows_transposed<T::rows, D, T::ld_t>(qt_lds, qp + q0 * a.q.stride_s, a.q.stride_s, valid);
      copy_rows_transposed<T::rows, D, T::ld_t>(dot_lds, dop + q0 * a.dout.stride_s, a.dout.stride_s, valid);
      {  // delta = rowsum(dO * O): 8 threads per query, combined by shuffles inside the wavefront
        constexpr int parts = group_threads / T::rows;
        const int r = threadIdx.x / parts, part = threadIdx.x % parts;
        float acc = 0.0f;
        if (r < valid)
          for (int c = part; c < D; c += parts)
            acc += E::to_float(dop[(q0 + r) * a.dout.stride_s + c]) * E::to_float(op[(q0 + r) * a.o.stride_s + c]);
#pragma unroll
        for (int m = 1; m < parts; m *= 2) acc += __shfl_xor(acc, m);
        if (part == 0) {
          delta_lds[r] = acc;
          lse_lds[r] = r < valid ? lse_offset(lsep[(q0 + r) * a.lse.stride_s]) : INFINITY;
        }
      }
      __syncthreads();
      if (wave_queries.begin >= q0 + T::rows || wave_queries.end <= q0) continue;
      const detail::BlockKind kind = features::tile_kind(sc, batch, head, q0, q_end, wk0, wk_end);
      if (kind == detail::BlockKind::skipped) continue;  // this wave's keys (per wave)
      const bool window_mask = !detail::tile_fully_visible(q0, q_end, wk0, wk0 + wave_rows, s, sc);
      const bool bits = kind == detail::BlockKind::partial;

      f32x16 st = zero_acc(), dpt = zero_acc();  // S[query][key], dP[query][key]
#pragma unroll
      for (int kk = 0; kk < T::k_steps; ++kk) {
        const mfma::Coord c = frag::dkv::q_operand(lane, kk, 0);  // {query, dim}
        st = E::mma(load_operand(q_lds, T::ld, c), kf[kk], st);
        dpt = E::mma(load_operand(do_lds, T::ld, c), vf[kk], dpt);
      }
      // the lane's 16 scores (one key, 16 queries): element answers and dropout keep bits, one
      // block-mask row and one Philox block per score
      const std::uint32_t visible = !(window_mask || bits) ? ~0u : features::lane_bits<mfma::acc_regs>([&](int r) {
        const mfma::Coord c = frag::dkv::score(lane, r);
        return detail::element_visible(q0 + c.row, wk0 + c.col, s, sc, features::block_row(sc, batch, head, q0 + c.row));
      });
      const std::uint32_t keep = !drop.on ? ~0u : features::lane_bits<mfma::acc_regs>([&](int r) {
        const mfma::Coord c = frag::dkv::score(lane, r);
        return features::kept(drop, batch, head, q0 + c.row, wk0 + c.col);
      });
#pragma unroll
      for (int r = 0; r < mfma::acc_regs; ++r) {
        const mfma::Coord c = frag::dkv::score(lane, r);  // {query, key}
        const std::int64_t query = q0 + c.row, key = wk0 + c.col;
        const float z = (keep >> r) & 1u ? drop.keep_scale : 0.0f;  // keep_scale 1 without dropout
        float p;
        dpt[r] = score_gradient(st[r], dpt[r], lse_lds[c.row], delta_lds[c.row], mod, query, key, s,
                                (visible >> r) & 1u, z, sl2, p);
        st[r] = p;
      }
      // dV^T += dO^T P and dK^T += Q^T dS, P and dS as B operands 8 queries at a time
#pragma unroll
      for (int kk = 0; kk < T::p_steps; ++kk) {
        const u16x4 p = acc_as_operand<DT>(st, kk), ds = acc_as_operand<DT>(dpt, kk);
#pragma unroll
        for (int b = 0; b < T::d_blocks; ++b) {
          const mfma::Coord at = frag::in_transposed_tile(frag::dkv::t_operand(lane, b, kk, 0));  // [dim][query]
          dv[b] = E::mma(load_operand(dot_lds, T::ld_t, at), p, dv[b]);
          dk[b] = E::mma(load_operand(qt_lds, T::ld_t, at), ds, dk[b]);
        }
      }
    }
  }

  const std::int64_t key = wk0 + frag::dkv::key_of_lane(lane);
  if (!wave_active || key >= s.seqlen_k) return;
  u16* dkp = static_cast<u16*>(a.dk.data) + features::offset(a.dk, batch, kb + key, head_kv);
  u16* dvp = static_cast<u16*>(a.dv.data) + features::offset(a.dv, batch, kb + key, head_kv);
  const float scale = static_cast<float>(sc.scale);
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b)
#pragma unroll
    for (int g = 0; g < mfma::acc_regs / 4; ++g) {
      const mfma::Coord c = frag::dkv::grad(lane, b, 4 * g);  // {key, dim}
      u16x4 k4, v4;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        k4[i] = E::from_float(dk[b][4 * g + i] * scale);
        v4[i] = E::from_float(dv[b][4 * g + i]);
      }
      store4(dkp + c.col, k4);
      store4(dvp + c.col, v4);
    }
}

template <detail::DType DT, int D>
__global__ __launch_bounds__(group_threads) void backward_dq_kernel(detail::BackwardArgs a, std::int64_t n_qtiles) {
  using E = Elem<DT>;
  using T = BackwardTiles<D>;
  __shared__ __attribute__((aligned(16))) u16 k_lds[T::rows * T::ld];
  __shared__ __attribute__((aligned(16))) u16 v_lds[T::rows * T::ld];
  __shared__ __attribute__((aligned(16))) u16 kt_lds[D * T::ld_t];

  const detail::ScoreSpec& sc = a.score;
  const int lane = threadIdx.x % mfma::wave_size, wave = threadIdx.x / mfma::wave_size;
  const common::TileCoord tc = common::schedule_tile(blockIdx.x, n_qtiles, a.shape, sc);
  const features::Sequence seq = features::sequence(a.shape, a.varlen, tc.batch);
  const detail::Shape& s = seq.shape;
  const std::int64_t q0 = tc.q_tile * group_rows;
  if (q0 >= s.seqlen_q) return;  // uniform
  const std::int64_t q_end = q0 + group_rows < s.seqlen_q ? q0 + group_rows : s.seqlen_q;
  const std::int64_t qb = seq.bounds.q_begin, kb = seq.bounds.k_begin;
  const std::int64_t wq0 = q0 + wave * wave_rows;
  const std::int64_t wq_end = wq0 + wave_rows < s.seqlen_q ? wq0 + wave_rows : s.seqlen_q;
  const bool wave_active = wq0 < s.seqlen_q;

  const u16* qp = static_cast<const u16*>(a.q.data) + features::offset(a.q, tc.batch, qb, tc.head);
  const u16* dop = static_cast<const u16*>(a.dout.data) + features::offset(a.dout, tc.batch, qb, tc.head);
  const u16* op = static_cast<const u16*>(a.o.data) + features::offset(a.o, tc.batch, qb, tc.head);
  const u16* kp = static_cast<const u16*>(a.k.data) + features::offset(a.k, tc.batch, kb, tc.head_kv);
  const u16* vp = static_cast<const u16*>(a.v.data) + features::offset(a.v, tc.batch, kb, tc.head_kv);

  // Q^T and dO^T as B operands; delta of the lane's query from the same slots of dO and O
  const std::int64_t query = wq0 + frag::dq::query_of_lane(lane);
  const bool query_ok = query < s.seqlen_q;
  u16x4 qf[T::k_steps], dof[T::k_steps];
  float delta = 0.0f;
#pragma unroll
  for (int kk = 0; kk < T::k_steps; ++kk) {
    const mfma::Coord c = frag::dq::q_operand(lane, kk, 0);  // {query, dim}
    qf[kk] = load4(qp + query * a.q.stride_s + c.col, query_ok);
    dof[kk] = load4(dop + query * a.dout.stride_s + c.col, query_ok);
    const u16x4 o4 = load4(op + query * a.o.stride_s + c.col, query_ok);
#pragma unroll
    for (int i = 0; i < 4; ++i) delta += E::to_float(dof[kk][i]) * E::to_float(o4[i]);
  }
  delta = column_sum(delta);  // the partner lane holds the other half of the head dims
  const float* lsep = static_cast<const float*>(a.lse.data) + features::offset(a.lse, tc.batch, qb, tc.head);
  const float lse_off = query_ok ? lse_offset(lsep[query * a.lse.stride_s]) : INFINITY;

  f32x16 dq[T::d_blocks];
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b) dq[b] = zero_acc();
  const float sl2 = common::scale_log2(sc.scale);
  const detail::ScoreMod mod = detail::make_score_mod(sc, tc.head);
  const detail::DropoutPolicy drop = detail::make_dropout(sc);
  const detail::BlockRow brow = features::block_row(sc, tc.batch, tc.head, query);
  const detail::KeyTrip tiles = detail::key_trip(q0, q_end, T::rows, s, sc);
  const detail::KeyTrip wave_tiles = wave_active ? detail::key_trip(wq0, wq_end, T::rows, s, sc) : detail::KeyTrip{};

  for (std::int64_t t = tiles.begin;; ++t) {
    t = detail::next_key_tile(tiles, t, T::rows, q0, q_end, tc.batch, tc.head, s, sc);  // the next visited tile
    if (t >= tiles.end) break;
    const std::int64_t k0 = t * T::rows;
    __syncthreads();
    copy_rows<T::rows, D, T::ld>(k_lds, kp + k0 * a.k.stride_s, a.k.stride_s, s.seqlen_k - k0);
    copy_rows<T::rows, D, T::ld>(v_lds, vp + k0 * a.v.stride_s, a.v.stride_s, s.seqlen_k - k0);
    copy_rows_transposed<T::rows, D, T::ld_t>(kt_lds, kp + k0 * a.k.stride_s, a.k.stride_s, s.seqlen_k - k0);
    __syncthreads();
    const detail::KeyTileWork work =
        detail::key_tile_work(wave_tiles, t, T::rows, wq0, wq_end, tc.batch, tc.head, s, sc);
    if (!work.visit) continue;  // causal / window / block skip (per wave)
    // the lane's 16 scores (one query, 16 keys): element answers and dropout keep bits (bit c: key k0 + c)
    const std::uint32_t visible = !work.masked() ? ~0u : features::lane_bits<mfma::acc_regs>([&](int r) {
      return detail::element_visible(query, k0 + frag::dq::score(lane, r).row, s, sc, brow);
    });
    const std::uint32_t keep = drop.on ? features::subtile_keep(drop, tc.batch, tc.head, query, k0) : ~0u;

    f32x16 st = zero_acc(), dpt = zero_acc();  // S^T[key][query], dP^T[key][query]
#pragma unroll
    for (int kk = 0; kk < T::k_steps; ++kk) {
      const mfma::Coord c = frag::dq::k_operand(lane, kk, 0);  // {key, dim}
      st = E::mma(load_operand(k_lds, T::ld, c), qf[kk], st);
      dpt = E::mma(load_operand(v_lds, T::ld, c), dof[kk], dpt);
    }
#pragma unroll
    for (int r = 0; r < mfma::acc_regs; ++r) {
      const mfma::Coord c = frag::dq::score(lane, r);  // {key, query}; c.col is the lane's query
      const float z = (keep >> c.row) & 1u ? drop.keep_scale : 0.0f;
      float p;
      dpt[r] = score_gradient(st[r], dpt[r], lse_off, delta, mod, query, k0 + c.row, s, (visible >> r) & 1u, z, sl2,
                              p);
    }
    // dQ^T += K^T dS^T, dS^T as B operands 8 keys at a time
#pragma unroll
    for (int kk = 0; kk < T::p_steps; ++kk) {
      const u16x4 ds = acc_as_operand<DT>(dpt, kk);
#pragma unroll
      for (int b = 0; b < T::d_blocks; ++b) {
        const mfma::Coord at = frag::in_transposed_tile(frag::dq::kt_operand(lane, b, kk, 0));  // [dim][key]
        dq[b] = E::mma(load_operand(kt_lds, T::ld_t, at), ds, dq[b]);
      }
    }
  }

  if (!wave_active || !query_ok) return;
  u16* dqp = static_cast<u16*>(a.dq.data) + features::offset(a.dq, tc.batch, qb + query, tc.head);
  const float scale = static_cast<float>(sc.scale);
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b)
#pragma unroll
    for (int g = 0; g < mfma::acc_regs / 4; ++g) {
      const mfma::Coord c = frag::dq::grad(lane, b, 4 * g);  // {query, dim}
      u16x4 v;
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = E::from_float(dq[b][4 * g + i] * scale);
      store4(dqp + c.col, v);
    }
}

}  // namespace kfa::hip
