#pragma once
// The portable FlashAttention-2 forward: one team per (batch, head, query tile). K/V tiles are
// staged in team scratch, scores of one tile live in scratch, the softmax is online with an
// unnormalized accumulator that is rescaled once at the end. Tiles no query of the team can see
// are never visited; only tiles that straddle a mask edge pay for element masking.
#include <Kokkos_Core.hpp>

#include "kfa/detail/args.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "portable/dropout.hpp"
#include "portable/forward_device.hpp"
#include "portable/kv_tile_walk.hpp"
#include "portable/math.hpp"
#include "portable/sequence.hpp"
#include "portable/tile_config.hpp"
#include "portable/tile_gemm.hpp"
#include "portable/tile_io.hpp"

namespace kfa::portable {

template <class ExecSpace, class T>
struct ForwardKernel {
  using Acc = acc_t<T>;
  using Member = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  using B = Block<ExecSpace>;

  detail::ForwardArgs a;
  TileConfig tc;
  std::int64_t n_qtiles;

  static std::size_t scratch_bytes(int br, int bc, int dpad) {
    const std::size_t elems = std::size_t(br) * dpad * 2    // Q, O accumulator
                              + std::size_t(dpad) * bc * 2  // K^T, V
                              + std::size_t(br) * bc        // S / P
                              + 2 * std::size_t(br);        // row max, row sum
    return elems * sizeof(Acc) + 8 * 64;                    // alignment slack
  }

  KOKKOS_FUNCTION void operator()(const Member& team) const { for_query_tile<T>(*this, team, tc.br); }

  KOKKOS_FUNCTION void q_tile(const Member& team, std::int64_t b, std::int64_t h, std::int64_t qt) const {
    const detail::Shape& s = a.shape;
    const int br = tc.br, bc = tc.bc, dp = tc.dpad, d = static_cast<int>(s.head_dim);
    const std::int64_t hk = h / (s.heads / s.heads_kv);
    const std::int64_t row0 = qt * br;
    const int rows = static_cast<int>(Kokkos::min<std::int64_t>(br, s.seqlen_q - row0));

    ScratchArena arena(team, tc.scratch_level);
    Acc* qs = arena.template take<Acc>(br * dp);
    Acc* os = arena.template take<Acc>(br * dp);
    Acc* kts = arena.template take<Acc>(dp * bc);
    Acc* vs = arena.template take<Acc>(bc * dp);
    Acc* ss = arena.template take<Acc>(br * bc);
    Acc* row_max = arena.template take<Acc>(br);
    Acc* row_sum = arena.template take<Acc>(br);

    // Scores stay in natural units until the max is subtracted (exactly, for the entries that
    // matter), so the exponent's rounding error is that of a plain attention.
    const bool plain = a.score.softcap == 0.0f && a.score.alibi_slopes == nullptr;
    load_rows<T>(team, a.q, b, h, row0, rows, d, qs, br, dp, Acc(1));
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, br * dp), [&](int e) { os[e] = Acc(0); });
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, br), [&](int r) {
      row_max[r] = -Kokkos::Experimental::infinity_v<Acc>;
      row_sum[r] = Acc(0);
    });

    const detail::VisibleRange keys = detail::visible_keys(row0, row0 + rows, s, a.score);
    const Dropout dropout(a.score);
    TileWalk walk = TileWalk::rows(a.score.blocks, b, h, row0, keys, bc);
    for (TileStep tile; walk.next(tile);) {
      const std::int64_t kt = tile.index;
      const std::int64_t col0 = kt * bc;
      const int cols = static_cast<int>(Kokkos::min<std::int64_t>(bc, s.seqlen_k - col0));
      team.team_barrier();  // previous P V product is done with kts / vs / ss
      const detail::KvCache* kv = a.kv.enabled() ? &a.kv : nullptr;
      load_rows_transposed<T>(team, a.k, b, hk, col0, cols, d, kts, bc, dp, kv);
      load_rows<T>(team, a.v, b, hk, col0, cols, d, vs, bc, dp, Acc(1), kv);
      team.team_barrier();
      tile_gemm<B::rm, B::rn, false>(team, br, bc, dp, qs, dp, kts, bc, ss, bc);
      team.team_barrier();
      const bool masked = tile.bits || !detail::tile_fully_visible(row0, row0 + rows, col0, col0 + bc, s, a.score);
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows), [&](int r) {
        Acc* srow = ss + r * bc;
        if (plain) {
          const Acc scale = static_cast<Acc>(a.score.scale);
#pragma omp simd
          for (int c = 0; c < bc; ++c) srow[c] *= scale;
        } else {
          modify_scores(srow, row0 + r, col0, cols, h);
        }
        if (masked) mask_scores(srow, row0 + r, col0, bc, tile.bits);
        Acc mx = row_max[r];
#pragma omp simd reduction(max : mx)
        for (int c = 0; c < bc; ++c) mx = srow[c] > mx ? srow[c] : mx;
        if (mx == -Kokkos::Experimental::infinity_v<Acc>) {  // nothing visible yet in this row
          for (int c = 0; c < bc; ++c) srow[c] = Acc(0);
          return;
        }
        const Acc alpha = exp_nonpositive(row_max[r] - mx);
        Acc sum = Acc(0);
#pragma omp simd reduction(+ : sum)
        for (int c = 0; c < bc; ++c) {
          const Acc p = exp_nonpositive(srow[c] - mx);
          srow[c] = p;
          sum += p;
        }
        if (dropout.on) dropout.apply(srow, bc, b, h, row0 + r, col0);  // after the sum: dropout acts on P V only
        row_sum[r] = row_sum[r] * alpha + sum;
        row_max[r] = mx;
        Acc* orow = os + r * dp;
#pragma omp simd
        for (int c = 0; c < dp; ++c) orow[c] *= alpha;
      });
      team.team_barrier();
      tile_gemm<B::rm, B::rn, true>(team, br, dp, bc, ss, bc, vs, dp, os, dp);
    }
    team.team_barrier();
    store_output(team, b, h, row0, rows, d, os, dp, row_max, row_sum);
  }

  /// Scale, softcap and ALiBi on one score row.
  KOKKOS_INLINE_FUNCTION void modify_scores(Acc* srow, std::int64_t row, std::int64_t col0, int cols,
                                            std::int64_t h) const {
    const Acc cap = static_cast<Acc>(a.score.softcap);
    const float slope = a.score.alibi_slopes ? a.score.alibi_slopes[h] : 0.0f;
    for (int c = 0; c < cols; ++c) {
      Acc x = srow[c] * static_cast<Acc>(a.score.scale);
      if (cap != Acc(0)) x = cap * Kokkos::tanh(x / cap);
      if (a.score.alibi_slopes) x += detail::alibi_bias<Acc>(slope, row, col0 + c, a.shape);
      srow[c] = x;
    }
  }

  KOKKOS_INLINE_FUNCTION void mask_scores(Acc* srow, std::int64_t row, std::int64_t col0, int bc,
                                          const std::uint32_t* block_bits) const {
    const detail::VisibleRange vis = detail::visible_keys(row, a.shape, a.score);
    for (int c = 0; c < bc; ++c) {
      const std::int64_t j = col0 + c;
      if (j < vis.begin || j >= vis.end) srow[c] = -Kokkos::Experimental::infinity_v<Acc>;
    }
    if (block_bits)  // partial block of a block mask: its element bitmask
      for (int c = 0; c < bc; ++c)
        if (!detail::partial_bit(a.score.blocks, block_bits, row, col0 + c)) srow[c] = -Kokkos::Experimental::infinity_v<Acc>;
  }

  /// O = acc / rowsum (0 for rows that see no key) and LSE = ln(sum) + max (-inf likewise).
  KOKKOS_INLINE_FUNCTION void store_output(const Member& team, std::int64_t b, std::int64_t h,
                                           std::int64_t row0, int rows, int d, const Acc* os, int dp,
                                           const Acc* row_max, const Acc* row_sum) const {
    T* o = static_cast<T*>(a.o.data);
    const Acc keep_scale = static_cast<Acc>(Dropout(a.score).keep_scale);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows * d), [&](int e) {
      const int r = e / d, c = e % d;
      const Acc l = row_sum[r];
      const Acc inv = l > Acc(0) ? keep_scale / l : Acc(0);
      o[b * a.o.stride_b + (row0 + r) * a.o.stride_s + h * a.o.stride_h + c] = static_cast<T>(os[r * dp + c] * inv);
    });
    using L = acc_t<T>;
    L* lse = static_cast<L*>(a.lse.data);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, rows), [&](int r) {
      const Acc l = row_sum[r];
      lse[b * a.lse.stride_b + h * a.lse.stride_h + (row0 + r) * a.lse.stride_s] =
          l > Acc(0) ? static_cast<L>(row_max[r] + Kokkos::log(l))
                     : -Kokkos::Experimental::infinity_v<L>;
    });
  }
};

/// DeviceTiles: the GPU kernel (forward_device.hpp); tests also run it on host spaces.
template <class ExecSpace, class T, bool DeviceTiles = device_forward_kernel<ExecSpace>>
void run_forward(const ExecSpace& exec, const detail::ForwardArgs& args) {
  if constexpr (DeviceTiles) {
    run_device_forward<ExecSpace, T>(exec, args);
  } else {
    using K = ForwardKernel<ExecSpace, T>;
    K kernel{args, choose_tiles(exec, args.shape.head_dim, args.shape.seqlen_q, &K::scratch_bytes), 0};
    fit_tiles_to_block_mask(kernel.tc.br, kernel.tc.bc, args.score.blocks);
    kernel.n_qtiles = (args.shape.seqlen_q + kernel.tc.br - 1) / kernel.tc.br;
    const std::int64_t league = args.shape.batch * args.shape.heads * kernel.n_qtiles;
    Kokkos::TeamPolicy<ExecSpace, Kokkos::Schedule<Kokkos::Dynamic>> policy(exec, league, kernel.tc.team_size);
    policy.set_scratch_size(kernel.tc.scratch_level, Kokkos::PerTeam(kernel.tc.scratch_bytes));
    Kokkos::parallel_for("kfa::forward", policy, kernel);
  }
}

}  // namespace kfa::portable
