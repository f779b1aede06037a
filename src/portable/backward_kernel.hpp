#pragma once
// The portable FlashAttention-2 backward, main pass: one team per (batch, KV head, key tile). The
// team keeps its K and V tiles and its dK, dV accumulators in scratch and walks, for every query
// head sharing the KV head (GQA/MQA sum there, without atomics), the query tiles that can see its
// keys. For each it recomputes S^T = K Q^T and P^T = exp(S^T * scale - LSE) and forms
//   dV += P^T dO,   dS^T = P^T * (V dO^T - D),   dK += dS^T Q,   dQ += dS K (atomics, unless deterministic).
// Tiles are kept transposed (keys as rows) so that every product is a plain tile_gemm.
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
struct BackwardKernel {
  using Acc = acc_t<T>;
  using Member = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  using B = Block<ExecSpace>;

  detail::BackwardArgs a;
  TileConfig tc;  // tc.br: keys per team tile, tc.bc: queries per step
  std::int64_t n_ktiles = 0;
  const Acc* delta = nullptr;  // D, [batch, heads, seqlen_q]
  Acc* dq_acc = nullptr;       // [batch, heads, seqlen_q, head_dim]; nullptr when dQ has its own pass

  static std::size_t scratch_bytes(int bk, int bq, int dp) {
    const std::size_t elems = std::size_t(bk) * dp * 5    // K, K^T, V, dK, dV
                              + std::size_t(bq) * dp * 4  // Q, Q^T, dO, dO^T
                              + std::size_t(bk) * bq * 2  // S^T then P^T, dP^T then dS^T
                              + 2 * std::size_t(bq);      // LSE, D
    return elems * sizeof(Acc) + 16 * 64;                 // alignment slack
  }

  KOKKOS_FUNCTION void operator()(const Member& team) const {
    // Consecutive teams share a KV head; under a causal mask the first key tiles see the most queries
    // and start first.
    const std::int64_t idx = team.league_rank();
    const std::int64_t kt = idx % n_ktiles;
    const std::int64_t b = (idx / n_ktiles) / a.shape.heads_kv, hk = (idx / n_ktiles) % a.shape.heads_kv;
    if (!a.varlen.enabled()) return k_tile(team, b, hk, kt);
    BackwardKernel one = *this;  // packed sequences: sequence b alone, as batch 0 (see sequence.hpp)
    one.a = sequence_args<T, Acc>(a, b);
    const std::int64_t q0 = a.varlen.cu_seqlens_q[b];
    one.delta = delta + q0 * a.shape.heads;
    if (dq_acc != nullptr) one.dq_acc = dq_acc + q0 * a.shape.heads * a.shape.head_dim;
    if (kt * tc.br < one.a.shape.seqlen_k) one.k_tile(team, 0, hk, kt);
  }

  KOKKOS_FUNCTION void k_tile(const Member& team, std::int64_t b, std::int64_t hk, std::int64_t kt) const {
    const detail::Shape& s = a.shape;
    const int bk = tc.br, bq = tc.bc, dp = tc.dpad, d = static_cast<int>(s.head_dim);
    const std::int64_t group = s.heads / s.heads_kv;
    const std::int64_t col0 = kt * bk;
    const int cols = static_cast<int>(Kokkos::min<std::int64_t>(bk, s.seqlen_k - col0));

    ScratchArena arena(team, tc.scratch_level);
    Acc* ks = arena.template take<Acc>(bk * dp);
    Acc* kts = arena.template take<Acc>(dp * bk);
    Acc* vs = arena.template take<Acc>(bk * dp);
    Acc* dks = arena.template take<Acc>(bk * dp);
    Acc* dvs = arena.template take<Acc>(bk * dp);
    Acc* qs = arena.template take<Acc>(bq * dp);
    Acc* qts = arena.template take<Acc>(dp * bq);  // also receives dQ^T of the step
    Acc* dos = arena.template take<Acc>(bq * dp);
    Acc* dots = arena.template take<Acc>(dp * bq);
    Acc* st = arena.template take<Acc>(bk * bq);
    Acc* dpt = arena.template take<Acc>(bk * bq);
    Acc* lse_s = arena.template take<Acc>(bq);
    Acc* d_s = arena.template take<Acc>(bq);

    load_rows<T>(team, a.k, b, hk, col0, cols, d, ks, bk, dp, Acc(1));
    load_rows_transposed<T>(team, a.k, b, hk, col0, cols, d, kts, bk, dp);
    load_rows<T>(team, a.v, b, hk, col0, cols, d, vs, bk, dp, Acc(1));
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, bk * dp), [&](int e) {
      dks[e] = Acc(0);
      dvs[e] = Acc(0);
    });

    const ScoreGrad<Acc> grad{s, a.score};
    const detail::VisibleRange queries = detail::visible_queries(col0, col0 + cols, s, a.score);
    const Dropout dropout(a.score);
    for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h) {
      TileWalk walk = TileWalk::columns(a.score.blocks, b + a.score.batch_base, h, col0, queries, bq);
      for (TileStep tile; walk.next(tile);) {
        const std::int64_t qt = tile.index;
        const std::int64_t row0 = qt * bq;
        const int rows = static_cast<int>(Kokkos::min<std::int64_t>(bq, s.seqlen_q - row0));
        team.team_barrier();  // the previous step is done with the query-side tiles
        load_rows<T>(team, a.q, b, h, row0, rows, d, qs, bq, dp, Acc(1));
        load_rows_transposed<T>(team, a.q, b, h, row0, rows, d, qts, bq, dp);
        load_rows<T>(team, a.dout, b, h, row0, rows, d, dos, bq, dp, Acc(1));
        load_rows_transposed<T>(team, a.dout, b, h, row0, rows, d, dots, bq, dp);
        load_row_stats(team, a, delta, b, h, row0, rows, bq, lse_s, d_s);
        team.team_barrier();
        tile_gemm<B::rm, B::rn, false>(team, bk, bq, dp, ks, dp, qts, bq, st, bq);   // S^T = K Q^T
        tile_gemm<B::rm, B::rn, false>(team, bk, bq, dp, vs, dp, dots, bq, dpt, bq); // dP^T = V dO^T
        team.team_barrier();
        const bool masked = tile.bits || !detail::tile_fully_visible(row0, row0 + rows, col0, col0 + bk, s, a.score);
        Kokkos::parallel_for(Kokkos::TeamThreadRange(team, bk), [&](int c) {
          const std::int64_t j = col0 + c;
          int lo = 0, hi = bq;
          if (masked) {
            if (j < s.seqlen_k) clamp_to_tile(detail::visible_queries(j, j + 1, s, a.score), row0, bq, lo, hi);
            else lo = hi = 0;
          }
          if (dropout.on) dropout.scale_column(dpt + c * bq, bq, b, h, row0, j);  // dP of the undropped P
          grad.template line<true>(st + c * bq, dpt + c * bq, bq, lo, hi, row0, j, h, lse_s, d_s);
          if (dropout.on) dropout.scale_column(st + c * bq, bq, b, h, row0, j);   // dV takes the dropped P
          if (tile.bits) zero_outside_bits<true>(a.score.blocks, tile.bits, st + c * bq, dpt + c * bq, bq, row0, j);
        });
        team.team_barrier();
        tile_gemm<B::rm, B::rn, true>(team, bk, dp, bq, st, bq, dos, dp, dvs, dp);   // dV += P^T dO
        tile_gemm<B::rm, B::rn, true>(team, bk, dp, bq, dpt, bq, qs, dp, dks, dp);   // dK += dS^T Q
        if (dq_acc != nullptr) {
          tile_gemm<B::rm, B::rn, false>(team, dp, bq, bk, kts, bk, dpt, bq, qts, bq);  // dQ^T = K^T dS^T
          team.team_barrier();
          Acc* dst = dq_acc + ((b * s.heads + h) * s.seqlen_q + row0) * d;
          Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows * d), [&](int e) {
            Kokkos::atomic_add(&dst[e], qts[(e % d) * bq + e / d]);
          });
        }
      }
    }
    team.team_barrier();
    store_kv_grads(team, b, hk, col0, cols, d, dp, dks, dvs);
  }

  /// dK = scale * acc (the softmax scale was left out of dS), dV = acc; zero for keys no query sees.
  KOKKOS_INLINE_FUNCTION void store_kv_grads(const Member& team, std::int64_t b, std::int64_t hk, std::int64_t col0,
                                             int cols, int d, int dp, const Acc* dks, const Acc* dvs) const {
    T* dk = static_cast<T*>(a.dk.data);
    T* dv = static_cast<T*>(a.dv.data);
    const Acc scale = static_cast<Acc>(a.score.scale);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, cols * d), [&](int e) {
      const int r = e / d, c = e % d;
      dk[offset(a.dk, b, col0 + r, hk) + c] = static_cast<T>(scale * dks[r * dp + c]);
      dv[offset(a.dv, b, col0 + r, hk) + c] = static_cast<T>(dvs[r * dp + c]);
    });
  }
};

}  // namespace kfa::portable
