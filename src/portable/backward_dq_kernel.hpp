#pragma once
// The backward's dQ pass for params.deterministic: one team per (batch, head, query tile) owns its
// dQ rows and walks the key tiles they see in a fixed order, recomputing S = Q K^T, P and
// dS = P * (dO V^T - D), and accumulating dQ += dS K in scratch. No atomics, so the bits do not
// depend on scheduling or thread count; the price is a second computation of Q K^T and dO V^T
// (7 tile products per tile pair instead of 5).
#include <Kokkos_Core.hpp>

#include "kfa/detail/args.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "portable/backward_scores.hpp"
#include "portable/dropout.hpp"
#include "portable/kv_tile_walk.hpp"
#include "portable/math.hpp"
#include "portable/sequence.hpp"
#include "portable/tile_config.hpp"
#include "portable/tile_gemm.hpp"
#include "portable/tile_io.hpp"

namespace kfa::portable {

template <class ExecSpace, class T>
struct BackwardDqKernel {
  using Acc = acc_t<T>;
  using Member = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  using B = Block<ExecSpace>;

  detail::BackwardArgs a;
  TileConfig tc;  // tc.br: queries per team tile, tc.bc: keys per step
  std::int64_t n_qtiles = 0;
  const Acc* delta = nullptr;  // D, [batch, heads, seqlen_q]

  static std::size_t scratch_bytes(int bq, int bk, int dp) {
    const std::size_t elems = std::size_t(bq) * dp * 3    // Q, dO, dQ
                              + std::size_t(bk) * dp * 3  // K^T, V^T, K
                              + std::size_t(bq) * bk * 2  // S then P, dP then dS
                              + 2 * std::size_t(bq);      // LSE, D
    return elems * sizeof(Acc) + 12 * 64;                 // alignment slack
  }

  KOKKOS_FUNCTION void operator()(const Member& team) const {
    const std::int64_t idx = team.league_rank();
    const std::int64_t qt = n_qtiles - 1 - idx % n_qtiles;  // the longest (last, under causal) tiles first
    const std::int64_t bh = idx / n_qtiles;
    const std::int64_t b = bh / a.shape.heads, h = bh % a.shape.heads;
    if (!a.varlen.enabled()) return q_tile(team, b, h, qt);
    BackwardDqKernel one = *this;  // packed sequences: sequence b alone, as batch 0 (see sequence.hpp)
    one.a = sequence_args<T, Acc>(a, b);
    one.delta = delta + a.varlen.cu_seqlens_q[b] * a.shape.heads;
    if (qt * tc.br < one.a.shape.seqlen_q) one.q_tile(team, 0, h, qt);
  }

  KOKKOS_FUNCTION void q_tile(const Member& team, std::int64_t b, std::int64_t h, std::int64_t qt) const {
    const detail::Shape& s = a.shape;
    const int bq = tc.br, bk = tc.bc, dp = tc.dpad, d = static_cast<int>(s.head_dim);
    const std::int64_t hk = h / (s.heads / s.heads_kv);
    const std::int64_t row0 = qt * bq;
    const int rows = static_cast<int>(Kokkos::min<std::int64_t>(bq, s.seqlen_q - row0));

    ScratchArena arena(team, tc.scratch_level);
    Acc* qs = arena.template take<Acc>(bq * dp);
    Acc* dos = arena.template take<Acc>(bq * dp);
    Acc* dqs = arena.template take<Acc>(bq * dp);
    Acc* kts = arena.template take<Acc>(dp * bk);
    Acc* vts = arena.template take<Acc>(dp * bk);
    Acc* ks = arena.template take<Acc>(bk * dp);
    Acc* ss = arena.template take<Acc>(bq * bk);
    Acc* dps = arena.template take<Acc>(bq * bk);
    Acc* lse_s = arena.template take<Acc>(bq);
    Acc* d_s = arena.template take<Acc>(bq);

    load_rows<T>(team, a.q, b, h, row0, rows, d, qs, bq, dp, Acc(1));
    load_rows<T>(team, a.dout, b, h, row0, rows, d, dos, bq, dp, Acc(1));
    load_row_stats(team, a, delta, b, h, row0, rows, bq, lse_s, d_s);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, bq * dp), [&](int e) { dqs[e] = Acc(0); });

    const ScoreGrad<Acc> grad{s, a.score};
    const detail::VisibleRange keys = detail::visible_keys(row0, row0 + rows, s, a.score);
    const Dropout dropout(a.score);
    TileWalk walk = TileWalk::rows(a.score.blocks, b + a.score.batch_base, h, row0, keys, bk);
    for (TileStep tile; walk.next(tile);) {
      const std::int64_t kt = tile.index;
      const std::int64_t col0 = kt * bk;
      const int cols = static_cast<int>(Kokkos::min<std::int64_t>(bk, s.seqlen_k - col0));
      team.team_barrier();  // the previous dQ product is done with ks / dps
      load_rows_transposed<T>(team, a.k, b, hk, col0, cols, d, kts, bk, dp);
      load_rows_transposed<T>(team, a.v, b, hk, col0, cols, d, vts, bk, dp);
      load_rows<T>(team, a.k, b, hk, col0, cols, d, ks, bk, dp, Acc(1));
      team.team_barrier();
      tile_gemm<B::rm, B::rn, false>(team, bq, bk, dp, qs, dp, kts, bk, ss, bk);    // S = Q K^T
      tile_gemm<B::rm, B::rn, false>(team, bq, bk, dp, dos, dp, vts, bk, dps, bk);  // dP = dO V^T
      team.team_barrier();
      const bool masked = tile.bits || !detail::tile_fully_visible(row0, row0 + rows, col0, col0 + bk, s, a.score);
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, bq), [&](int r) {
        const std::int64_t i = row0 + r;
        int lo = 0, hi = bk;
        if (masked) {
          if (i < s.seqlen_q) clamp_to_tile(detail::visible_keys(i, s, a.score), col0, bk, lo, hi);
          else lo = hi = 0;
        }
        if (dropout.on) dropout.scale_row(dps + r * bk, bk, b, h, i, col0);  // dP of the undropped P
        grad.template line<false>(ss + r * bk, dps + r * bk, bk, lo, hi, i, col0, h, lse_s + r, d_s + r);
        if (tile.bits) zero_outside_bits<false>(a.score.blocks, tile.bits, ss + r * bk, dps + r * bk, bk, i, col0);
      });
      team.team_barrier();
      tile_gemm<B::rm, B::rn, true>(team, bq, dp, bk, dps, bk, ks, dp, dqs, dp);  // dQ += dS K
    }
    team.team_barrier();
    T* dq = static_cast<T*>(a.dq.data);
    const Acc scale = static_cast<Acc>(a.score.scale);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows * d), [&](int e) {
      const int r = e / d, c = e % d;
      dq[offset(a.dq, b, row0 + r, h) + c] = static_cast<T>(scale * dqs[r * dp + c]);
    });
  }
};

}  // namespace kfa::portable
