#pragma once
// Fused dropout of the portable kernels: zeroes the dropped probabilities of one score row with the
// Philox mask of kfa/detail/philox.hpp (one Philox block per four columns). The keep-scale
// 1 / (1 - p) is applied once per row when the output is normalized.
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
    keep_scale = 1.0 / (1.0 - static_cast<double>(s.dropout_p));
  }

  /// p[c] = 0 for the dropped columns col0 + c, c < n. col0 must be a multiple of 4.
  template <class Acc>
  KOKKOS_INLINE_FUNCTION void apply(Acc* p, int n, std::int64_t b, std::int64_t h, std::int64_t row,
                                    std::int64_t col0) const {
    for (int c = 0; c < n; c += 4) {
      const detail::Philox4 r = detail::dropout_words(key, b + batch_base, h, row, col0 + c);
      for (int l = 0; l < 4 && c + l < n; ++l)
        if (r.w[l] < threshold) p[c + l] = Acc(0);
    }
  }

  /// x[c] *= Z(row, col0 + c) with Z = 1 / (1 - p) when kept, 0 when dropped. col0 a multiple of 4.
  template <class Acc>
  KOKKOS_INLINE_FUNCTION void scale_row(Acc* x, int n, std::int64_t b, std::int64_t h, std::int64_t row,
                                        std::int64_t col0) const {
    const Acc z = static_cast<Acc>(keep_scale);
    for (int c = 0; c < n; c += 4) {
      const detail::Philox4 r = detail::dropout_words(key, b + batch_base, h, row, col0 + c);
      for (int l = 0; l < 4 && c + l < n; ++l) x[c + l] = r.w[l] < threshold ? Acc(0) : x[c + l] * z;
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
