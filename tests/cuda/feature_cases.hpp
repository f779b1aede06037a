#pragma once
// What the GPU feature suites (forward: test_native_features.cpp, backward: test_backward_features.cpp)
// share: the backend generator, ALiBi slopes, and a block mask with skipped, full and partial blocks.
#include <catch2/generators/catch_generators.hpp>

#include <cstdint>
#include <vector>

#include "feature_reference.hpp"
#include "kfa/block_mask.hpp"

namespace kfa::test {

/// Backend::native (the native kernel must take the case, or the dispatcher throws) and the
/// automatic choice (which must pick it).
inline kfa::Backend which() { return GENERATE(kfa::Backend::native, kfa::Backend::automatic); }

/// ALiBi slopes 0.5, 0.25, ... of `heads` heads (repeating after eight).
inline std::vector<float> slopes(std::int64_t heads) {
  std::vector<float> s;
  for (std::int64_t h = 0; h < heads; ++h) s.push_back(0.5f / static_cast<float>(1 << (h % 8)));
  return s;
}

/// A block mask with skipped, full and partial blocks (a pseudo-random element pattern inside the
/// partial ones), built by BlockMask::from_element_mask; x.allowed restates it for the fp64 reference.
inline kfa::BlockMask mixed_mask(std::int64_t sq, std::int64_t sk, std::int64_t bq, std::int64_t bk,
                                 std::int64_t heads, FeatureOptions& x) {
  auto allowed = [bq, bk](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
    const std::int64_t r = (i / bq * 7 + j / bk * 3 + h) % 4;
    if (r == 0) return false;                         // skipped block
    if (r == 1) return (i * 5 + j * 3 + h) % 7 != 0;  // partial block
    return true;                                      // full block
  };
  x.allowed = allowed;
  return kfa::BlockMask::from_element_mask({sq, sk, bq, bk, 1, heads}, allowed);
}

}  // namespace kfa::test
