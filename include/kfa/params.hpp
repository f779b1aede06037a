#pragma once
#include <cstdint>
#include <optional>
#include <vector>

namespace kfa {

class BlockMask;  // block-sparse layout (kfa/block_mask.hpp)

/// Which implementation runs a call. `automatic` picks the native kernel of the execution
/// space when one is built and supports the case, else the portable Kokkos algorithm.
/// The environment variable KFA_BACKEND=portable|native overrides `automatic` (tests, benchmarks).
enum class Backend { automatic, portable, native };

/// Options of an attention call. Defaults give plain softmax(Q K^T / sqrt(d)) V.
struct Params {
  /// Multiplies Q K^T before the softmax; unset means 1/sqrt(head_dim).
  std::optional<double> softmax_scale;
  /// Causal mask aligned to the bottom-right corner: query i sees keys j <= i + (seqlen_k - seqlen_q).
  bool causal = false;
  /// Sliding window, in keys left/right of the (bottom-right aligned) diagonal; -1 = unbounded.
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  /// Tanh soft-capping of the scaled scores, s -> softcap * tanh(s / softcap); 0 = off.
  double softcap = 0.0;
  /// ALiBi: per-head slopes (size heads), bias = -slope * |i + seqlen_k - seqlen_q - j|; empty = off.
  std::vector<float> alibi_slopes;
  /// Dropout on the attention probabilities (Philox counter RNG keyed by seed/offset); 0 = off.
  /// Realized with 8-bit resolution: p_eff = round(256 p) / 256, kept values scaled by 1 / (1 - p_eff).
  double dropout_p = 0.0;
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  /// Backward: bitwise reproducible gradients, independent of thread count (may be slower).
  bool deterministic = false;
  /// Block-sparse layout; nullptr = dense.
  const BlockMask* block_mask = nullptr;
  Backend backend = Backend::automatic;
};

}  // namespace kfa
