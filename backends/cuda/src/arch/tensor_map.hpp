#pragma once
// TMA descriptors (CUtensorMap) of the [batch, seq, head, dim] tensors of the launcher contract.
#include <cuda.h>

#include <cstdint>

#include "kfa/detail/args.hpp"

namespace kfa::cuda::hopper {

/// True when TMA can address the tensor: 16-byte aligned base and 16-byte multiple strides. A batch
/// stride of 0 (packed sequences, or a tensor shared by the batches) is fine for any batch count: the
/// map is then built as one batch (`batch` is not needed any more; kept for the callers).
bool tensor_map_possible(const detail::Tensor4& t, std::int64_t batch);

/// Descriptor of a tensor of 16-bit `dtype` elements, extents (dim, seq, heads, batch) innermost
/// first, read and written in boxes of 64 elements x `box_rows` rows of one head with the 128-byte
/// swizzle. A tensor with batch stride 0 gets one batch (`batch` ignored; `seq`: all its rows).
/// Throws kfa::Error when the driver rejects it.
CUtensorMap make_tensor_map(const detail::Tensor4& t, detail::DType dtype, std::int64_t batch, std::int64_t seq,
                            std::int64_t heads, std::int64_t dim, int box_rows);

/// Descriptor of an fp32 accumulator [slices][rows][dim] (contiguous), added into in boxes of 32
/// elements x `box_rows` rows of one slice with the 128-byte swizzle (the backward's dQ: slices are
/// the (batch, head) pairs, rows the queries). Throws kfa::Error when the driver rejects it.
CUtensorMap make_accum_map(float* data, std::int64_t slices, std::int64_t rows, std::int64_t dim, int box_rows);

}  // namespace kfa::cuda::hopper
