#pragma once
// FlashAttention-2 forward on CDNA matrix cores. A workgroup of 4 wavefronts owns 128 queries of one
// (batch, head); each wavefront keeps 32 queries' Q fragments and O accumulators in registers and
// walks the visible key tiles, staged in LDS (K row-major, V transposed) and shared by the 4 waves.
// Per 32-key sub-tile a wave computes S^T = K Q^T, so that each lane owns one query's column: the
// softmax statistics of that query live in the lane (and its column partner, lane ^ 32), and the
// score accumulator is directly the B operand of O^T += V^T P^T (frag::fwd, mfma::acc_reg_as_b).
#include <hip/hip_runtime.h>

#include <cstdint>

#include "../../common/online_softmax.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "../../common/tile_scheduler.hpp"
#include "attention_fragments.hpp"
#include "kfa/detail/args.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "mfma_fragment.hpp"
#include "tile_copy.hpp"

namespace kfa::hip {

constexpr int waves_per_group = 4;
constexpr int group_threads = waves_per_group * mfma::wave_size;
constexpr int wave_rows = mfma::tile_m;                       // queries (or keys) per wavefront
constexpr int group_rows = waves_per_group * wave_rows;       // per workgroup
constexpr int lds_pad = 8;                                    // keeps rows 16-byte aligned, spreads banks

template <int D>
struct ForwardTiles {
  static_assert(D % mfma::tile_n == 0, "head_dim must be a multiple of 32");
  static constexpr int keys = D <= 128 ? 64 : 32;  // keys per LDS stage (LDS: K + V^T <= 38 KiB)
  static constexpr int subtiles = keys / mfma::tile_n;
  static constexpr int ld_k = D + lds_pad;         // K tile [keys][D]
  static constexpr int ld_vt = keys + lds_pad;     // V^T tile [D][keys]
  static constexpr int k_steps = D / mfma::tile_k; // depth steps of S^T = K Q^T
  static constexpr int d_blocks = D / mfma::tile_m;
};

template <detail::DType DT, int D>
__global__ __launch_bounds__(group_threads) void forward_kernel(detail::ForwardArgs a, std::int64_t n_qtiles) {
  using E = Elem<DT>;
  using T = ForwardTiles<D>;
  __shared__ __attribute__((aligned(16))) u16 k_lds[T::keys * T::ld_k];
  __shared__ __attribute__((aligned(16))) u16 vt_lds[D * T::ld_vt];

  const detail::Shape& s = a.shape;
  const detail::ScoreSpec& sc = a.score;
  const int lane = threadIdx.x % mfma::wave_size, wave = threadIdx.x / mfma::wave_size;
  const common::TileCoord tc = common::schedule_tile(blockIdx.x, n_qtiles, s, sc);
  const std::int64_t q0 = tc.q_tile * group_rows, q_end = q0 + group_rows < s.seqlen_q ? q0 + group_rows : s.seqlen_q;
  const std::int64_t wq0 = q0 + wave * wave_rows;
  const std::int64_t wq_end = wq0 + wave_rows < s.seqlen_q ? wq0 + wave_rows : s.seqlen_q;
  const bool wave_active = wq0 < s.seqlen_q;

  const u16* qp = static_cast<const u16*>(a.q.data) + tc.batch * a.q.stride_b + tc.head * a.q.stride_h;
  const u16* kp = static_cast<const u16*>(a.k.data) + tc.batch * a.k.stride_b + tc.head_kv * a.k.stride_h;
  const u16* vp = static_cast<const u16*>(a.v.data) + tc.batch * a.v.stride_b + tc.head_kv * a.v.stride_h;
  u16* op = static_cast<u16*>(a.o.data) + tc.batch * a.o.stride_b + tc.head * a.o.stride_h;

  // Q^T as B operands, for the whole walk
  u16x4 qf[T::k_steps];
#pragma unroll
  for (int kk = 0; kk < T::k_steps; ++kk) {
    const mfma::Coord c = frag::fwd::q_operand(lane, kk, 0);  // {query, dim}
    qf[kk] = load4(qp + (wq0 + c.row) * a.q.stride_s + c.col, wq0 + c.row < s.seqlen_q);
  }

  f32x16 o[T::d_blocks];
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b) o[b] = zero_acc();
  float row_max = -INFINITY, lane_sum = 0.0f;  // this lane's query; the sum covers the lane's keys only
  const float sl2 = common::scale_log2(sc.scale);
  const detail::ScoreMod mod = detail::make_score_mod(sc, tc.head);

  const detail::KeyTrip tiles = detail::key_trip(q0, q_end, T::keys, s, sc);
  const detail::VisibleRange wave_keys =
      wave_active ? detail::visible_keys(wq0, wq_end, s, sc) : detail::VisibleRange{0, 0};

  for (std::int64_t t = tiles.begin; t < tiles.end; ++t) {
    const std::int64_t k0 = t * T::keys;
    __syncthreads();  // the previous tile's LDS reads are done
    copy_rows<T::keys, D, T::ld_k>(k_lds, kp + k0 * a.k.stride_s, a.k.stride_s, s.seqlen_k - k0);
    copy_rows_transposed<T::keys, D, T::ld_vt>(vt_lds, vp + k0 * a.v.stride_s, a.v.stride_s, s.seqlen_k - k0);
    __syncthreads();
    if (wave_keys.begin >= k0 + T::keys || wave_keys.end <= k0) continue;  // causal/window skip (per wave)
    const bool full = detail::tile_fully_visible(wq0, wq_end, k0, k0 + T::keys, s, sc);

    f32x16 st[T::subtiles];  // S^T[key][query]
#pragma unroll
    for (int n = 0; n < T::subtiles; ++n) {
      st[n] = zero_acc();
#pragma unroll
      for (int kk = 0; kk < T::k_steps; ++kk) {
        const mfma::Coord c = frag::shift_rows(frag::fwd::k_operand(lane, kk, 0), n * mfma::tile_n);  // {key, dim}
        st[n] = E::mma(load_operand(k_lds, T::ld_k, c), qf[kk], st[n]);
      }
    }

    // modifiers, mask and this tile's maximum of the lane's query
    float tile_max = -INFINITY;
#pragma unroll
    for (int n = 0; n < T::subtiles; ++n)
#pragma unroll
      for (int r = 0; r < mfma::acc_regs; ++r) {
        const mfma::Coord c = frag::fwd::score(lane, r);  // {key, query}
        const std::int64_t key = k0 + n * mfma::tile_n + c.row, query = wq0 + c.col;
        const bool visible = full || detail::key_visible(query, key, s, sc);
        st[n][r] = detail::modify_score(st[n][r], mod, query, key, s, visible).x;
        tile_max = fmaxf(tile_max, st[n][r]);
      }
    tile_max = column_max(tile_max);

    const float new_max = fmaxf(row_max, tile_max);
    const float carry = common::rescale_factor(row_max, new_max, sl2);
    const float offset = common::offset_max(new_max) * sl2;
    row_max = new_max;
    lane_sum *= carry;
#pragma unroll
    for (int b = 0; b < T::d_blocks; ++b) o[b] *= carry;
#pragma unroll
    for (int n = 0; n < T::subtiles; ++n)
#pragma unroll
      for (int r = 0; r < mfma::acc_regs; ++r) {
        st[n][r] = exp2f(st[n][r] * sl2 - offset);
        lane_sum += st[n][r];
      }

    // O^T += V^T P^T, P^T taken from the score accumulators 8 keys at a time
#pragma unroll
    for (int n = 0; n < T::subtiles; ++n)
#pragma unroll
      for (int kk = 0; kk < mfma::tile_n / mfma::tile_k; ++kk) {
        const u16x4 p = acc_as_operand<DT>(st[n], kk);
#pragma unroll
        for (int b = 0; b < T::d_blocks; ++b) {
          const mfma::Coord c = frag::shift_rows(frag::fwd::v_operand(lane, b, kk, 0), n * mfma::tile_n);  // {key, dim}
          o[b] = E::mma(load_operand(vt_lds, T::ld_vt, frag::in_transposed_tile(c)), p, o[b]);
        }
      }
  }

  if (!wave_active) return;
  const float row_sum = column_sum(lane_sum);
  const float inv = common::inverse_sum(row_sum);
  const std::int64_t query = wq0 + frag::fwd::query_of_lane(lane);
  if (query >= s.seqlen_q) return;
#pragma unroll
  for (int b = 0; b < T::d_blocks; ++b)
#pragma unroll
    for (int g = 0; g < mfma::acc_regs / 4; ++g) {
      const mfma::Coord c = frag::fwd::out(lane, b, 4 * g);  // {query, dim}; registers 4g..4g+3: 4 dims
      u16x4 v;
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = E::from_float(o[b][4 * g + i] * inv);
      store4(op + query * a.o.stride_s + c.col, v);
    }
  if (lane < mfma::column_partner_xor) {
    float* lse = static_cast<float*>(a.lse.data);
    lse[tc.batch * a.lse.stride_b + tc.head * a.lse.stride_h + query * a.lse.stride_s] =
        common::row_lse(row_max, row_sum, sc.scale);
  }
}

}  // namespace kfa::hip
