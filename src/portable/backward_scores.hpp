#pragma once
// The backward's recomputation of one line of a score tile: from the raw dot products q.k and
// dO.v it rebuilds P = exp(score - LSE) and the score gradient dS = P * (dP - D) * d(score)/d(x),
// where x = scale * q.k and score = softcap(x) + ALiBi. Shared by the K-tile pass and the
// deterministic dQ pass, which walk their tiles in transposed orders.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "portable/math.hpp"

namespace kfa::portable {

template <class Acc>
struct ScoreGrad {
  detail::Shape shape;
  detail::ScoreSpec score;

  /// Entries e in [0, n) of one tile line. With QueryInner the line runs over queries i0 + e at key
  /// j0 (lse / delta indexed by e); otherwise over keys j0 + e at query i0 (lse[0], delta[0]).
  /// s: q.k in, P out. dp: dO.v in, dS out, without the softmax scale (the caller applies it once
  /// to dQ and dK). Entries outside [lo, hi) are masked: P = dS = 0. An LSE of +inf gives P = 0.
  template <bool QueryInner>
  KOKKOS_INLINE_FUNCTION void line(Acc* s, Acc* dp, int n, int lo, int hi, std::int64_t i0, std::int64_t j0,
                                   std::int64_t h, const Acc* lse, const Acc* delta) const {
    const Acc scale = static_cast<Acc>(score.scale);
    if (score.softcap == 0.0f && score.alibi_slopes == nullptr) {
#pragma omp simd
      for (int e = 0; e < n; ++e) {
        const Acc l = QueryInner ? lse[e] : lse[0];
        const Acc dd = QueryInner ? delta[e] : delta[0];
        const Acc p = exp_nonpositive(madd(s[e], scale, -l));  // one rounding before the exp
        const Acc pm = (e >= lo && e < hi) ? p : Acc(0);
        s[e] = pm;
        dp[e] = pm * (dp[e] - dd);
      }
      return;
    }
    const Acc cap = static_cast<Acc>(score.softcap);
    const float slope = score.alibi_slopes ? score.alibi_slopes[h] : 0.0f;
    for (int e = 0; e < n; ++e) {
      Acc x = s[e] * scale, dfac = Acc(1);
      if (cap != Acc(0)) {
        const Acc t = Kokkos::tanh(x / cap);
        x = cap * t;
        dfac = Acc(1) - t * t;  // d/dx of cap * tanh(x / cap)
      }
      const std::int64_t i = QueryInner ? i0 + e : i0, j = QueryInner ? j0 : j0 + e;
      if (score.alibi_slopes) x += detail::alibi_bias<Acc>(slope, i, j, shape);  // constant in q and k
      const Acc l = QueryInner ? lse[e] : lse[0];
      const Acc dd = QueryInner ? delta[e] : delta[0];
      const Acc p = (e >= lo && e < hi) ? exp_nonpositive(x - l) : Acc(0);
      s[e] = p;
      dp[e] = p * (dp[e] - dd) * dfac;
    }
  }
};

/// LSE and D of the query rows [row0, row0 + rows) of head h in scratch, padded to tile_rows.
/// Rows that see no key (LSE = -inf) and padding rows get LSE = +inf, so that their P is 0.
template <class Member, class Acc>
KOKKOS_INLINE_FUNCTION void load_row_stats(const Member& team, const detail::BackwardArgs& a, const Acc* delta,
                                           std::int64_t b, std::int64_t h, std::int64_t row0, int rows,
                                           int tile_rows, Acc* lse_s, Acc* d_s) {
  const Acc* lse = static_cast<const Acc*>(a.lse.data);
  const Acc* drow = delta + (b * a.shape.heads + h) * a.shape.seqlen_q + row0;
  constexpr Acc inf = Kokkos::Experimental::infinity_v<Acc>;
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, tile_rows), [&](int r) {
    if (r < rows) {
      const Acc l = lse[b * a.lse.stride_b + h * a.lse.stride_h + (row0 + r) * a.lse.stride_s];
      lse_s[r] = l == -inf ? inf : l;
      d_s[r] = drow[r];
    } else {
      lse_s[r] = inf;
      d_s[r] = Acc(0);
    }
  });
}

/// Clamps a visible range [begin, end) to the tile positions [0, n) starting at first.
KOKKOS_INLINE_FUNCTION void clamp_to_tile(const detail::VisibleRange& v, std::int64_t first, int n, int& lo,
                                          int& hi) {
  const std::int64_t b = v.begin - first, e = v.end - first;
  lo = static_cast<int>(b < 0 ? 0 : (b > n ? n : b));
  hi = static_cast<int>(e < 0 ? 0 : (e > n ? n : e));
  if (hi < lo) hi = lo;
}

}  // namespace kfa::portable
