#pragma once
// FlashAttention-2 forward on CDNA matrix cores. A workgroup of 4 wavefronts owns 128 queries of one
// (batch, head); each wavefront keeps 32 queries' Q fragments and O accumulators in registers and
// walks the visible key tiles, staged in LDS (K row-major, V transposed) and shared by the 4 waves.
// Per 32-key sub-tile a wave computes S^T = K Q^T, so that each lane owns one query's column: the
// softmax statistics of that query live in the lane (and its column partner, lane ^ 32), and the
// score accumulator is directly the B operand of O^T += V^T P^T (frag::fwd, mfma::acc_reg_as_b).
// Features through the shared policy (kfa/detail/feature_policy.hpp, feature_tiles.hpp): packed
// sequences (the workgroup's sequence bounds and shape; tiles past its length exit), block masks
// (skipped key tiles are never loaded; partial ones apply the element bits), dropout (the dropped
// probabilities are zeroed after the row sums, O is scaled by keep_scale at the end, LSE undropped).
#include <hip/hip_runtime.h>

#include <cstdint>

#include "../../common/online_softmax.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "../../common/tile_scheduler.hpp"
#include "attention_fragments.hpp"
#include "feature_tiles.hpp"
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

  const detail::ScoreSpec& sc = a.score;
  const int lane = threadIdx.x % mfma::wave_size, wave = threadIdx.x / mfma::wave_size;
  const common::TileCoord tc = common::schedule_tile(blockIdx.x, n_qtiles, a.shape, sc);
  // the workgroup's sequence: masks align to its lengths, rows and keys are positions within it
  const features::Sequence seq = features::sequence(a.shape, a.varlen, tc.batch);
  const detail::Shape& s = seq.shape;
  const std::int64_t q0 = tc.q_tile * group_rows;
  if (q0 >= s.seqlen_q) return;  // the tile starts past this sequence's end (uniform: no barrier skipped)
  const std::int64_t q_end = q0 + group_rows < s.seqlen_q ? q0 + group_rows : s.seqlen_q;
  const std::int64_t wq0 = q0 + wave * wave_rows;
  const std::int64_t wq_end = wq0 + wave_rows < s.seqlen_q ? wq0 + wave_rows : s.seqlen_q;
  const bool wave_active = wq0 < s.seqlen_q;

  // row 0 of the sequence: element (b, r) of a tensor is at data + b * stride_b + (begin + r) * stride_s + h * stride_h
  const std::int64_t qb = seq.bounds.q_begin, kb = seq.bounds.k_begin;
  const u16* qp = static_cast<const u16*>(a.q.data) + features::offset(a.q, tc.batch, qb, tc.head);
  const u16* kp = static_cast<const u16*>(a.k.data) + features::offset(a.k, tc.batch, kb, tc.head_kv);
  const u16* vp = static_cast<const u16*>(a.v.data) + features::offset(a.v, tc.batch, kb, tc.head_kv);
  u16* op = static_cast<u16*>(a.o.data) + features::offset(a.o, tc.batch, qb, tc.head);

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
  const detail::DropoutPolicy drop = detail::make_dropout(sc);
  const std::int64_t lane_query = wq0 + frag::fwd::query_of_lane(lane);
  const detail::BlockRow brow = features::block_row(sc, tc.batch, tc.head, lane_query);

  // the workgroup's walk (the union of its waves' tiles; block-skipped tiles are never loaded) and
  // each wave's own: window / causal / block skips and which tiles need element masks
  const detail::KeyTrip tiles = detail::key_trip(q0, q_end, T::keys, s, sc);
  const detail::KeyTrip wave_tiles = wave_active ? detail::key_trip(wq0, wq_end, T::keys, s, sc) : detail::KeyTrip{};

  for (std::int64_t t = detail::next_key_tile(tiles, tiles.begin, T::keys, q0, q_end, tc.batch, tc.head, s, sc);
       t < tiles.end; t = detail::next_key_tile(tiles, t + 1, T::keys, q0, q_end, tc.batch, tc.head, s, sc)) {
    const std::int64_t k0 = t * T::keys;
    __syncthreads();  // the previous tile's LDS reads are done
    copy_rows<T::keys, D, T::ld_k>(k_lds, kp + k0 * a.k.stride_s, a.k.stride_s, s.seqlen_k - k0);
    copy_rows_transposed<T::keys, D, T::ld_vt>(vt_lds, vp + k0 * a.v.stride_s, a.v.stride_s, s.seqlen_k - k0);
    __syncthreads();
    const detail::KeyTileWork work =
        detail::key_tile_work(wave_tiles, t, T::keys, wq0, wq_end, tc.batch, tc.head, s, sc);
    if (!work.visit) continue;  // causal / window / block skip (per wave)

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
    for (int n = 0; n < T::subtiles; ++n) {
      const std::int64_t n0 = k0 + n * mfma::tile_n;
      // the element answers (window / sequence end, block bits) of the lane's 16 scores
      const std::uint32_t visible = !work.masked() ? ~0u : features::lane_bits<mfma::acc_regs>([&](int r) {
        return detail::element_visible(lane_query, n0 + frag::fwd::score(lane, r).row, s, sc, brow);
      });
#pragma unroll
      for (int r = 0; r < mfma::acc_regs; ++r) {
        const mfma::Coord c = frag::fwd::score(lane, r);  // {key, query}
        const std::int64_t key = n0 + c.row, query = wq0 + c.col;
        st[n][r] = detail::modify_score(st[n][r], mod, query, key, s, (visible >> r) & 1u).x;
        tile_max = fmaxf(tile_max, st[n][r]);
      }
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
    if (drop.on)  // after the row sums: the dropped probabilities take no part in P V
#pragma unroll
      for (int n = 0; n < T::subtiles; ++n) {
        const std::uint32_t keep = features::subtile_keep(drop, tc.batch, tc.head, lane_query, k0 + n * mfma::tile_n);
#pragma unroll
        for (int r = 0; r < mfma::acc_regs; ++r)
          if (!((keep >> frag::fwd::score(lane, r).row) & 1u)) st[n][r] = 0.0f;
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
  const float inv = common::inverse_sum(row_sum) * drop.keep_scale;  // keep_scale 1 without dropout
  const std::int64_t query = lane_query;
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
    lse[features::offset(a.lse, tc.batch, qb + query, tc.head)] =
        common::row_lse(row_max, row_sum, sc.scale);
  }
}

}  // namespace kfa::hip
