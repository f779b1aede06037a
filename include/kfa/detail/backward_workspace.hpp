#pragma once
// Where the backward pass keeps its O(N * d) intermediates inside one workspace allocation. The
// public size query and the dispatcher both use this, so the size a caller is told is the size used.
#include <cstddef>
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::detail {

struct BackwardWorkspaceLayout {
  static constexpr std::size_t align = 256;  // every piece starts on a 256-byte boundary
  std::size_t delta = 0;   // D = rowsum(dO * O), [batch, heads, seqlen_q] of the accumulation type
  std::size_t dq_acc = 0;  // dQ accumulator [batch, heads, seqlen_q, head_dim] of the accumulation type
  // Deterministic mode: per (batch, head, 64-row query block) an int32 count of the key tiles whose dQ
  // additions are in, so that a native kernel that accumulates dQ adds in one fixed order (the Hopper
  // backward); the other paths compute dQ in a pass of their own and use neither buffer.
  std::size_t dq_order = 0;
  std::size_t slopes = 0;  // ALiBi slopes [heads] of float; absent without ALiBi
  std::size_t total = 0;   // bytes
  bool has_dq_acc = false;    // dQ is accumulated by atomic additions (not deterministic)
  bool has_dq_order = false;  // deterministic: the accumulator and the counts for ordered additions
  bool has_slopes = false;
};

/// 64-row query blocks per (batch, head) in the counts of deterministic mode.
inline std::int64_t dq_order_blocks(const Shape& s) { return (s.seqlen_q + 63) / 64; }

inline std::size_t align_up(std::size_t x, std::size_t a) { return (x + a - 1) / a * a; }

/// The accumulation type is double for double inputs and float otherwise.
inline std::size_t acc_bytes(DType t) { return t == DType::f64 ? 8 : 4; }

inline BackwardWorkspaceLayout backward_workspace_layout(DType t, const Shape& s, bool deterministic, bool alibi) {
  BackwardWorkspaceLayout w;
  const std::size_t a = BackwardWorkspaceLayout::align;
  const std::size_t rows = static_cast<std::size_t>(s.batch) * s.heads * s.seqlen_q;
  std::size_t at = 0;
  w.delta = at;
  at = align_up(at + rows * acc_bytes(t), a);
  w.has_dq_acc = !deterministic;
  w.has_dq_order = deterministic;
  w.dq_acc = at;
  at = align_up(at + rows * static_cast<std::size_t>(s.head_dim) * acc_bytes(t), a);
  if (w.has_dq_order) {
    w.dq_order = at;
    at = align_up(at + static_cast<std::size_t>(s.batch * s.heads * dq_order_blocks(s)) * sizeof(std::int32_t), a);
  }
  w.has_slopes = alibi;
  if (w.has_slopes) {
    w.slopes = at;
    at = align_up(at + static_cast<std::size_t>(s.heads) * sizeof(float), a);
  }
  w.total = at;
  return w;
}

}  // namespace kfa::detail
