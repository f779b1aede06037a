// The driver's cuTensorMapEncodeTiled, reached through the runtime's entry-point query so that kfa
// needs no link against libcuda.
#include "arch/tensor_map.hpp"

#include <cuda_runtime_api.h>

#include <mutex>
#include <string>

#include "kfa/error.hpp"

namespace kfa::cuda::hopper {
namespace {

using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                 const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

EncodeTiled encode_tiled() {
  static EncodeTiled fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &status) ==
            cudaSuccess &&
        status == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiled>(p);
  });
  if (fn == nullptr) throw Error("the CUDA driver has no cuTensorMapEncodeTiled (needs CUDA 12 or later)");
  return fn;
}

bool aligned16(std::int64_t elements) { return elements % 8 == 0; }  // 16-bit elements

}  // namespace

bool tensor_map_possible(const detail::Tensor4& t, std::int64_t /*batch*/) {
  // A batch stride of 0 (packed varlen tensors, or one tensor shared by the batches) is mapped as one
  // batch, which the Featured kernel addresses at batch coordinate 0 (forward_sm90.cuh, map_batch).
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.stride_s > 0 && t.stride_h > 0 &&
         aligned16(t.stride_s) && aligned16(t.stride_h) && aligned16(t.stride_b) && t.stride_b >= 0;
}

CUtensorMap make_tensor_map(const detail::Tensor4& t, detail::DType dtype, std::int64_t batch, std::int64_t seq,
                            std::int64_t heads, std::int64_t dim, int box_rows) {
  // Without a batch stride the tensor is one batch (packed sequences: `seq` is then the packed rows).
  if (t.stride_b == 0) batch = 1;
  const cuuint64_t extent[4] = {cuuint64_t(dim), cuuint64_t(seq), cuuint64_t(heads), cuuint64_t(batch)};
  // Byte strides of dims 1..3; a single batch's stride is never used, but must be valid.
  const cuuint64_t stride[3] = {cuuint64_t(t.stride_s) * 2, cuuint64_t(t.stride_h) * 2,
                                cuuint64_t(t.stride_b > 0 ? t.stride_b : t.stride_s) * 2};
  const cuuint32_t box[4] = {64, cuuint32_t(box_rows), 1, 1};
  const cuuint32_t unit[4] = {1, 1, 1, 1};
  CUtensorMap map{};
  const CUresult r = encode_tiled()(
      &map, dtype == detail::DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      t.data, extent, stride, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw Error("cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)));
  return map;
}

CUtensorMap make_accum_map(float* data, std::int64_t slices, std::int64_t rows, std::int64_t dim,
                           std::int64_t row_stride, std::int64_t slice_stride, int box_rows) {
  const cuuint64_t extent[3] = {cuuint64_t(dim), cuuint64_t(rows), cuuint64_t(slices)};
  const cuuint64_t stride[2] = {cuuint64_t(row_stride) * 4, cuuint64_t(slice_stride) * 4};
  const cuuint32_t box[3] = {32, cuuint32_t(box_rows), 1};
  const cuuint32_t unit[3] = {1, 1, 1};
  CUtensorMap map{};
  const CUresult r = encode_tiled()(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, data, extent, stride, box, unit,
                                    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) throw Error("cuTensorMapEncodeTiled (accumulator) failed with CUresult " + std::to_string(int(r)));
  return map;
}

std::int64_t packed_rows(const std::int32_t* cu_seqlens, std::int64_t batch, cudaStream_t stream) {
  std::int32_t total = 0;
  cudaError_t err = cudaMemcpyAsync(&total, cu_seqlens + batch, sizeof total, cudaMemcpyDeviceToHost, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) throw LaunchError(std::string("CUDA: reading cu_seqlens failed: ") + cudaGetErrorString(err));
  return total;
}

}  // namespace kfa::cuda::hopper
