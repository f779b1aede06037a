#pragma once
// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// counter-based generator of kfa's dropout. A random word is a pure function of its coordinates,
// so the backward regenerates the forward's mask without storing it, and the mask does not depend
// on tiling, thread count or backend. Plain integer arithmetic: usable from every compiler kfa
// supports (host, nvcc, hipcc, Kokkos kernels).
//
// The dropout mask of one call:
//   key   = derive_dropout_key(seed, offset)                   (one Philox block of (offset, seed))
//   words = Philox4x32-10(counter = (col / 16, row, head, batch), key): 16 random bytes for the 16
//           columns [16 * (col / 16), +16) of one row
//   byte of column c = col % 16: byte (c % 2) + 2 * (c / 8) of word (c % 8) / 2
//   element (batch, head, row, col) is dropped when its byte < threshold(p) = round(256 p)
// so the drop probability is p rounded to a multiple of 1/256 (at most 255/256), and a kept
// element is scaled by 1 / (1 - threshold / 256), which keeps the expectation exact. One Philox
// block serves 16 columns; the byte order puts the four columns a Tensor Core fragment gives one
// thread (2t, 2t + 1, 2t + 8, 2t + 9) into one word, so a thread needs one word of the block.
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

/// Drop when a column's random byte is below this: round(p * 256) for p in [0, 1), at most 255.
KFA_HD std::uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 256.0 + 0.5;
  return t < 1.0 ? 0u : (t >= 255.0 ? 255u : static_cast<std::uint32_t>(t));
}

/// The drop probability the threshold realizes (p rounded to a multiple of 1/256).
KFA_HD double dropout_effective_p(float p) { return dropout_threshold(p) / 256.0; }

/// Scale of a kept element, 1 / (1 - effective p): the expectation of the dropped P is P.
KFA_HD double dropout_keep_scale(float p) { return 1.0 / (1.0 - dropout_effective_p(p)); }

/// The Philox block of columns [16 * (col / 16), +16) of one row.
KFA_HD Philox4 dropout_words(DropoutKey key, std::int64_t batch, std::int64_t head, std::int64_t row,
                             std::int64_t col) {
  return philox4x32_10(Philox4{{static_cast<std::uint32_t>(col >> 4), static_cast<std::uint32_t>(row),
                                static_cast<std::uint32_t>(head), static_cast<std::uint32_t>(batch)}},
                       key.k0, key.k1);
}

/// Word of the block that holds column c (0..15) of the group, and the byte of c within it.
KFA_HD int dropout_word_of(int c) { return (c & 7) >> 1; }
KFA_HD int dropout_byte_of(int c) { return (c & 1) | ((c >> 3) << 1); }

/// The random byte of column c (0..15) of a group from its block.
KFA_HD std::uint32_t dropout_byte(const Philox4& r, int c) {
  return (r.w[dropout_word_of(c)] >> (8 * dropout_byte_of(c))) & 0xffu;
}

/// True when element (batch, head, row, col) is kept (one Philox block per call; the kernels share
/// a block between the 16 columns of a group).
KFA_HD bool dropout_keep(DropoutKey key, std::uint32_t threshold, std::int64_t batch, std::int64_t head,
                         std::int64_t row, std::int64_t col) {
  return dropout_byte(dropout_words(key, batch, head, row, col), static_cast<int>(col & 15)) >= threshold;
}

}  // namespace kfa::detail
