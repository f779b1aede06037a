#pragma once
// Row bookkeeping of the online softmax, shared by the native kernels (CUDA, HIP). A row keeps the
// running maximum m of its raw scores and the running sum l of exp(scale * (s - m)); the output
// accumulator is rescaled by exp(scale * (m_old - m_new)) whenever m grows. Exponentials are base 2
// with log2(e) folded into the scale (one FFMA + EX2 per score, as the hardware prefers).
#include <cmath>

#include "kfa/detail/macros.hpp"

namespace kfa::common {

constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

/// The softmax scale converted for exp2: exp(scale * x) == exp2(scale_log2 * x).
KFA_HD float scale_log2(double scale) { return static_cast<float>(scale * 1.4426950408889634); }

/// The maximum used as the exponent's offset: a row that has seen only masked scores (-inf) uses 0,
/// so its masked scores give exp2(-inf) = 0 instead of NaN.
KFA_HD float offset_max(float row_max) { return row_max == -INFINITY ? 0.0f : row_max; }

/// Factor that carries the accumulator and the sum from max `old_max` to `new_max` (>= old_max).
/// 0 when the row had seen nothing yet (old_max = -inf), where the accumulator is 0 anyway.
KFA_HD float rescale_factor(float old_max, float new_max, float scale_log2) {
  return old_max == -INFINITY ? 0.0f : exp2f((old_max - new_max) * scale_log2);
}

/// 1 / l for the final normalization; rows that saw no key (l = 0) give 0, so their output is 0.
KFA_HD float inverse_sum(float row_sum) { return row_sum > 0.0f ? 1.0f / row_sum : 0.0f; }

/// Natural-log LSE of the row, scale * m + ln(l); -inf for rows that saw no key.
KFA_HD float row_lse(float row_max, float row_sum, double scale) {
  return row_sum > 0.0f ? static_cast<float>(scale) * row_max + logf(row_sum) : -INFINITY;
}

}  // namespace kfa::common
