// kfa::cuda::supports_kvcache / forward_kvcache: which KV-cache calls the split-KV decode kernel takes,
// how many splits a call gets, its fp32 workspace for the partial states, and the dispatch from
// (head_dim, dtype) to the instance in its own translation unit.
//
// Splits: a block streams the keys of one split of one (sequence, KV head, packed row tile). With too
// few such tiles to fill the device, the keys are split so that the grid's waves are nearly full (the
// rule of FlashAttention's num_splits_heuristic: the smallest split count whose wave efficiency is
// within 85% of the best), never below one key tile per split. A wave is one block per SM, not the
// two that fit: on an H200 one streaming block per SM already reads at the copy bandwidth, and
// fewer, longer splits pay the per-block start and the merge less often (docs/performance-decode.md:
// batch 1 x 131072 read 3715 GB/s with 16 splits against 3394 with 33; 8 x 65536 4295 with 2 against
// 4122 with 4).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>

#include "arch/device_attribute.hpp"
#include "decode/decode_config.hpp"
#include "kfa/error.hpp"
#include "kfa_cuda/launch.hpp"
#include "kfa_cuda_instances.hpp"
#include "launch/alignment.hpp"

namespace kfa::cuda {
namespace decode {
template <int D, class T>
void launch_decode(const DecodeParams& p, cudaStream_t stream);
}  // namespace decode

namespace {

/// Shared memory of the decode kernel for head_dim d (0 when no instance exists for d).
int decode_smem_bytes(std::int64_t d) {
  switch (d) {
#define KFA_CASE(D) \
  case D: return decode::DecodeShape<D>::smem_bytes;
    KFA_CUDA_DECODE_DIMS(KFA_CASE)
#undef KFA_CASE
    default: return 0;
  }
}

/// Splits of each sequence's keys for `tiles` blocks' worth of (sequence, KV head, row tile) work of
/// `key_tiles` key tiles each.
int choose_splits(std::int64_t tiles, std::int64_t key_tiles) {
  const std::int64_t slots = std::max(1, device_attribute<cudaDevAttrMultiProcessorCount>());
  if (tiles >= slots * 8 / 10 || key_tiles <= 1) return 1;
  const int max_splits = static_cast<int>(std::min<std::int64_t>({128, key_tiles, (2 * slots + tiles - 1) / tiles}));
  auto efficiency = [&](int s) {
    const double waves = double(tiles * s) / double(slots);
    return waves / std::ceil(waves);
  };
  double best = 0;
  for (int s = 1; s <= max_splits; ++s) best = std::max(best, efficiency(s));
  for (int s = 1; s <= max_splits; ++s) {
    // splits that leave the same tiles per split as a smaller count only add merge work
    if (s > 1 && (key_tiles + s - 1) / s == (key_tiles + s - 2) / (s - 1)) continue;
    if (efficiency(s) >= 0.85 * best) return s;
  }
  return 1;
}

/// kfa's own stream-ordered pool per device (not the device's default pool, which belongs to the
/// application), keeping its memory between calls so a decode step allocates without a sync.
cudaMemPool_t workspace_pool() {
  static std::mutex lock;
  static cudaMemPool_t pools[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) throw LaunchError("kfa decode: no current CUDA device");
  std::lock_guard<std::mutex> guard(lock);
  if (pools[dev] == nullptr) {
    cudaMemPoolProps props = {};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    cudaMemPool_t pool = nullptr;
    if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) throw LaunchError("kfa decode: cudaMemPoolCreate failed");
    std::uint64_t keep = ~std::uint64_t(0);
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    pools[dev] = pool;
  }
  return pools[dev];
}

template <class T>
void launch_for_dim(const decode::DecodeParams& p, cudaStream_t stream) {
  switch (p.a.shape.head_dim) {
#define KFA_CASE(D)                                  \
  case D: decode::launch_decode<D, T>(p, stream); \
    break;
    KFA_CUDA_DECODE_DIMS(KFA_CASE)
#undef KFA_CASE
    default: break;
  }
}

}  // namespace

bool supports_kvcache(const detail::KvCacheArgs& k) {
  const detail::ForwardArgs& a = k.attn;
  if (a.dtype != detail::DType::f16 && a.dtype != detail::DType::bf16) return false;
  if (!a.kv.enabled() || a.varlen.enabled() || a.score.blocks.enabled() || a.score.dropout_p > 0.0f) return false;
  const int smem = decode_smem_bytes(a.shape.head_dim);
  if (smem == 0 || smem > device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>()) return false;
  if (!(a.score.scale > 0.0)) return false;  // the online softmax tracks the maximum of the raw scores
  if (a.shape.seqlen_k >= (std::int64_t(1) << 30) || a.shape.seqlen_q >= (std::int64_t(1) << 24)) return false;
  const std::int64_t group = a.shape.heads / a.shape.heads_kv, rows = group * a.shape.seqlen_q;
  const std::int64_t tiles = a.shape.batch * a.shape.heads_kv * ((rows + 15) / 16);
  if (rows >= (std::int64_t(1) << 30) || tiles * 128 >= (std::int64_t(1) << 31)) return false;
  return rows_aligned(a.q) && rows_aligned(a.k) && rows_aligned(a.v) && rows_aligned(a.o);
}

void forward_kvcache(const detail::KvCacheArgs& k, cudaStream_t stream) {
  decode::DecodeParams p;
  p.a = k.attn;
  const detail::Shape& s = p.a.shape;
  p.group = static_cast<int>(s.heads / s.heads_kv);
  p.packed_rows = static_cast<int>(p.group * s.seqlen_q);
  p.row_tiles = (p.packed_rows + 15) / 16;
  p.scale_log2 = static_cast<float>(p.a.score.scale * 1.4426950408889634);
  const std::int64_t tiles = s.batch * s.heads_kv * p.row_tiles;
  const std::int64_t key_tiles = (s.seqlen_k + 63) / 64;
  p.splits = k.num_splits > 0 ? static_cast<int>(std::min<std::int64_t>(k.num_splits, std::max<std::int64_t>(key_tiles, 1)))
                              : choose_splits(tiles, key_tiles);
  p.splits = std::max(1, std::min(p.splits, 1024));
  void* ws = nullptr;
  if (p.splits > 1) {
    const std::int64_t rows = std::int64_t(p.splits) * tiles * 16;
    const std::size_t bytes = std::size_t(rows) * (s.head_dim + 1) * sizeof(float);
    if (cudaMallocFromPoolAsync(&ws, bytes, workspace_pool(), stream) != cudaSuccess)
      throw LaunchError("kfa decode: cannot allocate " + std::to_string(bytes) + " bytes of split-KV workspace");
    p.o_part = static_cast<float*>(ws);
    p.lse_part = p.o_part + rows * s.head_dim;
  }
  if (p.a.dtype == detail::DType::bf16)
    launch_for_dim<__nv_bfloat16>(p, stream);
  else
    launch_for_dim<__half>(p, stream);
  if (ws != nullptr) cudaFreeAsync(ws, stream);
}

}  // namespace kfa::cuda
