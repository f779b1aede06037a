#pragma once
// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// counter-based generator of kfa's dropout. A random word is a pure function of its coordinates,
// so the backward regenerates the forward's mask without storing it, and the mask does not depend
// on tiling, thread count or backend. Plain integer arithmetic: usable from every compiler kfa
// supports (host, nvcc, hipcc, Kokkos kernels).
//
// The dropout mask of one call:
//   key   = derive_key(seed, offset)                       (one Philox block of (offset, seed))
//   words = Philox4x32-10(counter = (col / 4, row, head, batch), key)
//   element (batch, head, row, col) is dropped when words[col % 4] < threshold(p)
// with threshold(p) = floor(p * 2^32), so the keep probability is 1 - threshold / 2^32 (p up to 2^-32).
#include <cstdint>

#include "kfa/detail/macros.hpp"

namespace kfa::detail {

struct Philox4 {
  std::uint32_t w[4];
};

KFA_HD void mulhilo32(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

/// The ten-round Philox 4x32 bijection of `ctr` under `key` (Random123's philox4x32_10).
KFA_HD Philox4 philox4x32_10(Philox4 ctr, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(m0, ctr.w[0], hi0, lo0);
    mulhilo32(m1, ctr.w[2], hi1, lo1);
    ctr = Philox4{{hi1 ^ ctr.w[1] ^ k0, lo1, hi0 ^ ctr.w[3] ^ k1, lo0}};
    k0 += w0;
    k1 += w1;
  }
  return ctr;
}

/// The key of one dropout call: (seed, offset) hashed through one Philox block, so that distinct
/// (seed, offset) pairs give unrelated streams and every counter below stays free for coordinates.
struct DropoutKey {
  std::uint32_t k0 = 0, k1 = 0;
};

KFA_HD DropoutKey derive_dropout_key(std::uint64_t seed, std::uint64_t offset) {
  const Philox4 r = philox4x32_10(
      Philox4{{static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(offset >> 32), 0x6B666144u, 0u}},
      static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  return {r.w[0], r.w[1]};
}

/// Drop when a random word is below this: floor(p * 2^32) for p in [0, 1).
KFA_HD std::uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t <= 0.0 ? 0u : (t >= 4294967295.0 ? 4294967295u : static_cast<std::uint32_t>(t));
}

/// The four random words of columns [4 * (col / 4), 4 * (col / 4) + 4) of one row.
KFA_HD Philox4 dropout_words(DropoutKey key, std::int64_t batch, std::int64_t head, std::int64_t row,
                             std::int64_t col) {
  return philox4x32_10(Philox4{{static_cast<std::uint32_t>(col >> 2), static_cast<std::uint32_t>(row),
                                static_cast<std::uint32_t>(head), static_cast<std::uint32_t>(batch)}},
                       key.k0, key.k1);
}

/// True when element (batch, head, row, col) is kept (one Philox block per call; the kernels use
/// dropout_words to share a block between four columns).
KFA_HD bool dropout_keep(DropoutKey key, std::uint32_t threshold, std::int64_t batch, std::int64_t head,
                         std::int64_t row, std::int64_t col) {
  return dropout_words(key, batch, head, row, col).w[col & 3] >= threshold;
}

}  // namespace kfa::detail
