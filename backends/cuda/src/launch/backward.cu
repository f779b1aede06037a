// Native CUDA backward: what it supports, its workspace, and the launch sequence
//   preprocess (D = rowsum(dO*O), zeroed dQ accumulator)
//   -> main kernel: the Hopper dK/dV + dQ accumulation kernel (sm_90 device; its dense or Featured
//      instance; deterministic: its dQ additions in key-tile order, except under a block mask)
//      or the mma.sync dK/dV kernel (+ atomic dQ)  or  its dK/dV kernel + deterministic dQ kernel
//   -> dQ conversion (when dQ was accumulated).
// KFA_CUDA_BACKWARD=mma or =wgmma forces one main kernel (tests and benchmarks compare them); wgmma
// still needs a case the Hopper kernel takes and falls back to mma.sync otherwise.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "kfa_cuda_instances.hpp"
#include "launch/alignment.hpp"
#include "sm80/backward/launch_kernels.cuh"
#include "sm80/backward/params.cuh"
#include "sm80/backward/prepost_kernels.cuh"
#include "kfa/detail/backward_workspace.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/error.hpp"
#include "kfa_cuda/backward.hpp"
#include "kfa_cuda/launch.hpp"  // the dispatcher's declarations must match these definitions
#ifdef KFA_CUDA_HAS_SM90
#include "arch/device_attribute.hpp"
#include "arch/tensor_map.hpp"
#include "sm90/backward/launch.hpp"
#endif

namespace kfa::cuda {
namespace {

using kfa::detail::BackwardArgs;
using kfa::detail::DType;
using kfa::detail::Shape;
using kfa::detail::Tensor4;

// The layout of kfa::detail::backward_workspace_layout (D at offset 0, then the fp32 dQ accumulator,
// then when deterministic the counts of ordered additions; ALiBi slopes, which the dispatcher keeps
// after them, are not touched). The offsets do not depend on the element type among half / bfloat16
// or on ALiBi.
kfa::detail::BackwardWorkspaceLayout workspace_layout(const Shape& s, bool deterministic) {
  return kfa::detail::backward_workspace_layout(DType::bf16, s, deterministic, false);
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw kfa::LaunchError(std::string("cuda backward: ") + what + ": " + cudaGetErrorString(e));
}

bool featured(const BackwardArgs& a) {
  return a.score.softcap != 0.0f || a.score.alibi_slopes != nullptr || a.score.dropout_p != 0.0f ||
         a.score.blocks.enabled() || a.varlen.enabled();
}

/// True when the Hopper main kernel takes the call: an sm_90 device, a head dim of its instance table,
/// TMA-addressable Q, K, V and dO (packed sequences without a batch stride). Every feature
/// supports_backward accepts runs on its Featured instance; deterministic mode too, except under a
/// block mask (its key tiles of one query tile are not a contiguous range, walk.cuh dq_add_rank).
bool use_sm90(const BackwardArgs& a) {
#ifdef KFA_CUDA_HAS_SM90
  static const bool forced_mma = [] {
    const char* e = std::getenv("KFA_CUDA_BACKWARD");
    return e != nullptr && std::strcmp(e, "mma") == 0;
  }();
  if (forced_mma || (a.deterministic && a.score.blocks.enabled())) return false;
  bool dim_ok = false;
#define KFA_CASE(D) dim_ok = dim_ok || a.shape.head_dim == D;
  KFA_CUDA_BACKWARD_SM90_DIMS(KFA_CASE)
#undef KFA_CASE
  if (!dim_ok) return false;
  if (device_attribute<cudaDevAttrComputeCapabilityMajor>() != 9 ||
      device_attribute<cudaDevAttrComputeCapabilityMinor>() != 0)
    return false;
  const Shape& s = a.shape;
  // 32-bit positions in the kernel: sequences and packed tensors shorter than 2^30 rows
  const std::int64_t lim = std::int64_t(1) << 30;
  if (s.seqlen_q >= lim || s.seqlen_k >= lim || a.varlen.total_q >= lim || a.varlen.total_k >= lim) return false;
  if ((s.seqlen_k + hopper::kSm90BwdBlockK - 1) / hopper::kSm90BwdBlockK > 65535) return false;  // grid y
  for (const Tensor4* t : {&a.q, &a.k, &a.v, &a.dout})
    if ((t->stride_b == 0 && s.batch > 1 && !a.varlen.enabled()) || !hopper::tensor_map_possible(*t, s.batch))
      return false;
  // The dQ accumulator is reduced into through a tensor map: a caller's workspace must be 16-byte aligned.
  return reinterpret_cast<std::uintptr_t>(a.workspace) % 16 == 0;
#else
  (void)a;
  return false;
#endif
}

template <class T>
void run_typed(const bwd::KernelParams& p, bool deterministic, bool feat, bool sm90, cudaStream_t stream) {
  const auto& s = p.shape;
  constexpr int kWarpsPerBlock = 8;
  const std::int64_t pre_warps = s.batch * s.heads * s.seqlen_q;
  bwd::preprocess_kernel<T><<<static_cast<unsigned>((pre_warps + kWarpsPerBlock - 1) / kWarpsPerBlock),
                              kWarpsPerBlock * 32, 0, stream>>>(p, p.dq_accum != nullptr);
  bwd::check_launch("preprocess kernel");
#ifdef KFA_CUDA_HAS_SM90
  if (sm90) {
    constexpr DType dtype = std::is_same_v<T, __nv_bfloat16> ? DType::bf16 : DType::f16;
    switch (s.head_dim) {
#define KFA_CASE(D)                                                   \
  case D: hopper::launch_backward_sm90<D, T>(p, dtype, feat, stream); \
    break;
      KFA_CUDA_BACKWARD_SM90_DIMS(KFA_CASE)
#undef KFA_CASE
      default: break;
    }
  }
#else
  (void)sm90;
#endif
  if (!sm90) switch (s.head_dim) {
#define KFA_CASE(D)                                                   \
  case D: bwd::launch_main_kernels<T, D>(p, deterministic, feat, stream); \
    break;
    KFA_CUDA_BACKWARD_SM80_DIMS(KFA_CASE)
#undef KFA_CASE
    default: break;
  }
  if (p.dq_accum != nullptr) {
    const std::int64_t warps = s.batch * s.heads * s.seqlen_q;
    bwd::dq_convert_kernel<T><<<static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock),
                                kWarpsPerBlock * 32, 0, stream>>>(p);
    bwd::check_launch("dQ conversion kernel");
  }
}

}  // namespace

bool supports_backward(const BackwardArgs& a) {
  const Shape& s = a.shape;
  if (a.dtype != DType::bf16 && a.dtype != DType::f16) return false;
  bool dim_ok = false;  // an instance exists for the head_dim (the table in CMakeLists.txt)
#define KFA_CASE(D) dim_ok = dim_ok || s.head_dim == D;
  KFA_CUDA_BACKWARD_SM80_DIMS(KFA_CASE)
#undef KFA_CASE
  if (!dim_ok) return false;
  // softcap and ALiBi work in raw score units x (weight exp(scale * x)), which needs scale > 0
  if ((a.score.softcap != 0.0f || a.score.alibi_slopes != nullptr) && !(a.score.scale > 0.0)) return false;
  if (!(a.score.softcap >= 0.0f) || !(a.score.dropout_p >= 0.0f && a.score.dropout_p < 1.0f)) return false;
  if (!kfa::detail::native_block_sizes(a.score.blocks)) return false;
  if (a.varlen.enabled() && a.varlen.cu_seqlens_k == nullptr) return false;
  if (s.batch < 1 || s.seqlen_q < 1 || s.seqlen_k < 1 || s.heads < 1 || s.heads_kv < 1) return false;
  if (s.heads % s.heads_kv != 0) return false;
  if (s.batch * s.heads > 65535) return false;  // grid y
  for (const Tensor4* t : {&a.q, &a.k, &a.v, &a.o, &a.dout, &a.dq, &a.dk, &a.dv})
    if (!rows_aligned(*t)) return false;
  return true;
}

std::size_t backward_workspace_bytes(const Shape& shape, bool deterministic) {
  return workspace_layout(shape, deterministic).total;
}

void backward(const BackwardArgs& a, cudaStream_t stream) {
  if (!supports_backward(a)) throw kfa::Error("cuda backward: unsupported case (check supports_backward first)");
  const kfa::detail::BackwardWorkspaceLayout w = workspace_layout(a.shape, a.deterministic);
  void* ws = a.workspace;
  if (ws == nullptr) check(cudaMallocAsync(&ws, w.total, stream), "workspace allocation");

  bwd::KernelParams p;
  p.shape = a.shape;
  p.score = a.score;
  p.varlen = a.varlen;
  p.dropout = kfa::detail::make_dropout(a.score);
  p.q = a.q, p.k = a.k, p.v = a.v, p.o = a.o, p.dout = a.dout, p.dq = a.dq, p.dk = a.dk, p.dv = a.dv;
  p.lse = a.lse;
  p.scale = static_cast<float>(a.score.scale);
  p.scale_log2 = static_cast<float>(a.score.scale * 1.4426950408889634);
  const auto bound = [](std::int64_t w) { return w < 0 || w > bwd::kWindowUnbounded ? bwd::kWindowUnbounded : w; };
  p.win_lo = static_cast<int>(-bound(a.score.window_left));
  p.win_hi = static_cast<int>(bound(a.score.window_right));
  auto* base = static_cast<unsigned char*>(ws);
  p.dsum = reinterpret_cast<float*>(base + w.delta);
  const bool feat = featured(a);
  const bool sm90 = use_sm90(a);
  // dQ accumulated: always by the Hopper kernel (deterministic: in order), by the mma.sync kernels
  // unless deterministic (then their dQ kernel writes dQ).
  p.dq_accum = sm90 || !a.deterministic ? reinterpret_cast<float*>(base + w.dq_acc) : nullptr;
  if (sm90 && a.deterministic) {
    p.dq_order = reinterpret_cast<int*>(base + w.dq_order);
    p.dq_order_blocks = static_cast<int>(kfa::detail::dq_order_blocks(a.shape));
  }

  try {
    if (a.dtype == DType::bf16) run_typed<__nv_bfloat16>(p, a.deterministic, feat, sm90, stream);
    else run_typed<__half>(p, a.deterministic, feat, sm90, stream);
  } catch (...) {
    if (a.workspace == nullptr) cudaFreeAsync(ws, stream);
    throw;
  }
  if (a.workspace == nullptr) check(cudaFreeAsync(ws, stream), "workspace release");
}

}  // namespace kfa::cuda
