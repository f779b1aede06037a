#pragma once
// The alignment every CUDA kernel of the backend needs of a [batch, seq, head, dim] tensor: cp.async
// and the epilogues move 16-byte row chunks, so rows start 16-byte aligned (8 elements of 16 bits).
#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::cuda {

inline bool rows_aligned(const detail::Tensor4& t) {
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.stride_b % 8 == 0 && t.stride_s % 8 == 0 &&
         t.stride_h % 8 == 0;
}

}  // namespace kfa::cuda
