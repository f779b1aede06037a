// Native CUDA backward: what it supports, its workspace, and the launch sequence
//   preprocess (D = rowsum(dO*O), zeroed dQ accumulator)
//   -> dK/dV kernel (+ atomic dQ)  or  dK/dV kernel + deterministic dQ kernel
//   -> dQ conversion (atomic path only).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "backward/launch_kernels.cuh"
#include "backward/params.cuh"
#include "backward/prepost_kernels.cuh"
#include "kfa_cuda/backward.hpp"
#include "kfa_cuda/launch.hpp"  // the dispatcher's declarations must match these definitions

namespace kfa::cuda {
namespace {

using kfa::detail::BackwardArgs;
using kfa::detail::DType;
using kfa::detail::Shape;
using kfa::detail::Tensor4;

constexpr std::size_t kAlign = 256;

std::size_t round_up(std::size_t x, std::size_t a) { return (x + a - 1) / a * a; }

bool aligned16(const Tensor4& t) {
  return reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0 && t.stride_b % 8 == 0 && t.stride_s % 8 == 0 &&
         t.stride_h % 8 == 0;
}

// The same layout as kfa::detail::backward_workspace_layout (without ALiBi slopes, which this
// backend does not take): D at offset 0, then the fp32 dQ accumulator unless deterministic.
struct WorkspaceLayout {
  std::size_t dsum_off = 0, dq_off = 0, total = 0;
};

WorkspaceLayout workspace_layout(const Shape& s, bool deterministic) {
  const std::size_t rows = static_cast<std::size_t>(s.batch * s.heads * s.seqlen_q);
  WorkspaceLayout w;
  w.dsum_off = 0;
  w.dq_off = round_up(rows * sizeof(float), kAlign);
  w.total = w.dq_off + (deterministic ? 0 : round_up(rows * static_cast<std::size_t>(s.head_dim) * sizeof(float), kAlign));
  return w;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("kfa cuda backward: ") + what + ": " + cudaGetErrorString(e));
}

template <class T>
void run_typed(const bwd::KernelParams& p, bool deterministic, cudaStream_t stream) {
  const auto& s = p.shape;
  constexpr int kWarpsPerBlock = 8;
  const std::int64_t pre_warps = s.batch * s.heads * s.seqlen_q;
  bwd::preprocess_kernel<T><<<static_cast<unsigned>((pre_warps + kWarpsPerBlock - 1) / kWarpsPerBlock),
                              kWarpsPerBlock * 32, 0, stream>>>(p, !deterministic);
  bwd::check_launch("preprocess kernel");
  if (s.head_dim == 64) bwd::launch_main_kernels<T, 64>(p, deterministic, stream);
  else bwd::launch_main_kernels<T, 128>(p, deterministic, stream);
  if (!deterministic) {
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
  if (s.head_dim != 64 && s.head_dim != 128) return false;
  if (a.score.softcap != 0.0f || a.score.alibi_slopes != nullptr || a.score.dropout_p != 0.0f) return false;
  if (a.score.blocks.enabled() || a.varlen.enabled()) return false;
  if (s.batch < 1 || s.seqlen_q < 1 || s.seqlen_k < 1 || s.heads < 1 || s.heads_kv < 1) return false;
  if (s.heads % s.heads_kv != 0) return false;
  if (s.batch * s.heads > 65535) return false;  // grid y
  for (const Tensor4* t : {&a.q, &a.k, &a.v, &a.o, &a.dout, &a.dq, &a.dk, &a.dv})
    if (!aligned16(*t)) return false;
  return true;
}

std::size_t backward_workspace_bytes(const Shape& shape, bool deterministic) {
  return workspace_layout(shape, deterministic).total;
}

void backward(const BackwardArgs& a, cudaStream_t stream) {
  if (!supports_backward(a)) throw std::invalid_argument("kfa cuda backward: unsupported case (check supports_backward first)");
  const WorkspaceLayout w = workspace_layout(a.shape, a.deterministic);
  void* ws = a.workspace;
  if (ws == nullptr) check(cudaMallocAsync(&ws, w.total, stream), "workspace allocation");

  bwd::KernelParams p;
  p.shape = a.shape;
  p.score = a.score;
  p.q = a.q, p.k = a.k, p.v = a.v, p.o = a.o, p.dout = a.dout, p.dq = a.dq, p.dk = a.dk, p.dv = a.dv;
  p.lse = a.lse;
  p.scale = static_cast<float>(a.score.scale);
  p.scale_log2 = static_cast<float>(a.score.scale * 1.4426950408889634);
  const auto bound = [](std::int64_t w) { return w < 0 || w > bwd::kWindowUnbounded ? bwd::kWindowUnbounded : w; };
  p.win_lo = static_cast<int>(-bound(a.score.window_left));
  p.win_hi = static_cast<int>(bound(a.score.window_right));
  auto* base = static_cast<unsigned char*>(ws);
  p.dsum = reinterpret_cast<float*>(base + w.dsum_off);
  p.dq_accum = a.deterministic ? nullptr : reinterpret_cast<float*>(base + w.dq_off);

  try {
    if (a.dtype == DType::bf16) run_typed<__nv_bfloat16>(p, a.deterministic, stream);
    else run_typed<__half>(p, a.deterministic, stream);
  } catch (...) {
    if (a.workspace == nullptr) cudaFreeAsync(ws, stream);
    throw;
  }
  if (a.workspace == nullptr) check(cudaFreeAsync(ws, stream), "workspace release");
}

}  // namespace kfa::cuda
