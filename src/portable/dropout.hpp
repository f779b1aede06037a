#pragma once
// Fused dropout of the portable kernels: zeroes the dropped probabilities of one score row with the
// Philox mask of kfa/detail/philox.hpp (one Philox block per 16 columns). The keep-scale
// 1 / (1 - p) (p as the threshold realizes it) is applied once per row when the output is normalized.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/philox.hpp"

namespace kfa::portable {

struct Dropout {
  bool on = false;
  detail::DropoutKey key;
  std::uint32_t threshold = 0;
  double keep_scale = 1.0;  // 1 / (1 - p)
  std::int64_t batch_base = 0;

  KOKKOS_INLINE_FUNCTION explicit Dropout(const detail::ScoreSpec& s) {
    on = s.dropout_p > 0.0f;
    batch_base = s.batch_base;
    if (!on) return;
    key = detail::derive_dropout_key(s.seed, s.offset);
    threshold = detail::dropout_threshold(s.dropout_p);
    keep_scale = detail::dropout_keep_scale(s.dropout_p);
  }

  /// p[c] = 0 for the dropped columns col0 + c, c < n (one Philox block per 16-column group).
  template <class Acc>
  KOKKOS_INLINE_FUNCTION void apply(Acc* p, int n, std::int64_t b, std::int64_t h, std::int64_t row,
                                    std::int64_t col0) const {
    for_groups(n, col0, b, h, row, [&](int c, std::uint32_t byte) {
      if (byte < threshold) p[c] = Acc(0);
    });
  }

  /// x[c] *= Z(row, col0 + c) with Z = 1 / (1 - p) when kept, 0 when dropped.
  template <class Acc>
  KOKKOS_INLINE_FUNCTION void scale_row(Acc* x, int n, std::int64_t b, std::int64_t h, std::int64_t row,
                                        std::int64_t col0) const {
    const Acc z = static_cast<Acc>(keep_scale);
    for_groups(n, col0, b, h, row, [&](int c, std::uint32_t byte) { x[c] = byte < threshold ? Acc(0) : x[c] * z; });
  }

  /// f(c, random byte of column col0 + c) for c < n, one Philox block per 16-column group.
  template <class F>
  KOKKOS_INLINE_FUNCTION void for_groups(int n, std::int64_t col0, std::int64_t b, std::int64_t h, std::int64_t row,
                                         const F& f) const {
    int c = 0;
    while (c < n) {
      const std::int64_t col = col0 + c;
      const detail::Philox4 r = detail::dropout_words(key, b + batch_base, h, row, col);
      const int first = static_cast<int>(col & 15);
      for (int l = first; l < 16 && c < n; ++l, ++c) f(c, detail::dropout_byte(r, l));
    }
  }

  /// x[e] *= Z(row0 + e, col): the same along a column (one Philox block per element).
  template <class Acc>
  KOKKOS_INLINE_FUNCTION void scale_column(Acc* x, int n, std::int64_t b, std::int64_t h, std::int64_t row0,
                                           std::int64_t col) const {
    const Acc z = static_cast<Acc>(keep_scale);
    for (int e = 0; e < n; ++e) x[e] = keeps(b, h, row0 + e, col) ? x[e] * z : Acc(0);
  }

  /// True when element (b, h, row, col) is kept.
  KOKKOS_INLINE_FUNCTION bool keeps(std::int64_t b, std::int64_t h, std::int64_t row, std::int64_t col) const {
    return !on || detail::dropout_keep(key, threshold, b + batch_base, h, row, col);
  }
};

}  // namespace kfa::portable
