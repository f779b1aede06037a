#pragma once
// A score as the online softmax of backends/common/online_softmax.hpp wants it: in "raw" units x
// with softmax weight exp(scale * x), after soft-capping, ALiBi and the mask. Shared by native
// kernels that support the score modifiers (forward and backward), so they agree on one formula.
// Needs scale > 0 (a native backend declines other scales; the portable path handles them).
#include <cmath>
#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/macros.hpp"
#include "kfa/detail/tile_rules.hpp"

namespace kfa::common {

/// Per-(row, head) constants of the modifiers, computed once per tile walk.
struct ScoreMod {
  float scale = 1.0f;     // softmax scale
  float softcap = 0.0f;   // 0 = off
  float alibi_slope = 0;  // 0 = off (the head's slope)
};

KFA_HD ScoreMod make_score_mod(const detail::ScoreSpec& sc, std::int64_t head) {
  ScoreMod m;
  m.scale = static_cast<float>(sc.scale);
  m.softcap = sc.softcap;
  m.alibi_slope = sc.alibi_slopes != nullptr ? sc.alibi_slopes[head] : 0.0f;
  return m;
}

/// Result of modifying one dot product q.k.
struct ModifiedScore {
  float x;          // raw-unit score: softmax weight is exp(scale * x); -inf when masked
  float dx_ddot;    // d x / d dot, for the backward (1 without softcap)
};

/// Soft-capping: scale * x = softcap * tanh(scale * dot / softcap); ALiBi adds bias / scale.
/// `visible` is the mask decision of (row, col) (kfa/detail/tile_rules.hpp).
KFA_HD ModifiedScore modify_score(float dot, const ScoreMod& m, std::int64_t row, std::int64_t col,
                                  const detail::Shape& s, bool visible) {
  ModifiedScore r{dot, 1.0f};
  if (!visible) {
    r.x = -INFINITY;
    return r;
  }
  if (m.softcap != 0.0f) {
    const float t = tanhf(dot * m.scale / m.softcap);
    r.x = m.softcap * t / m.scale;
    r.dx_ddot = 1.0f - t * t;
  }
  if (m.alibi_slope != 0.0f) r.x += detail::alibi_bias(m.alibi_slope, row, col, s) / m.scale;
  return r;
}

}  // namespace kfa::common
