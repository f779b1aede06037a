#pragma once
// TMA descriptors (CUtensorMap) of the [batch, seq, head, dim] tensors of the launcher contract.
#include <cuda.h>
#include <cuda_runtime_api.h>

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

/// Descriptor of an fp32 accumulator of `slices` x `rows` rows of `dim` contiguous elements, row r of
/// slice i starting at element i * slice_stride + r * row_stride, added into in boxes of 32 elements x
/// `box_rows` rows of one slice with the 128-byte swizzle. The backward's dQ: a padded batch has
/// slices = (batch, head) pairs and rows = queries (row_stride dim, slice_stride rows * dim); packed
/// sequences have slices = heads and rows = the packed queries (row_stride heads * dim, slice_stride
/// dim). Throws kfa::Error when the driver rejects it.
CUtensorMap make_accum_map(float* data, std::int64_t slices, std::int64_t rows, std::int64_t dim,
                           std::int64_t row_stride, std::int64_t slice_stride, int box_rows);

/// Rows of a packed tensor, cu_seqlens[batch], read back from device memory on `stream` (for a
/// launcher call that did not pass the packed extents). Throws kfa::LaunchError on a CUDA error.
std::int64_t packed_rows(const std::int32_t* cu_seqlens, std::int64_t batch, cudaStream_t stream);

}  // namespace kfa::cuda::hopper
