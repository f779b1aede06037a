#pragma once
// The Tensor Core forward (FlashAttention-2 algorithm, mma.sync m16n8k16 with fp32 accumulation).
// One block per (batch, head, query tile); its warps split the query rows, share the K/V tiles.
// K and V tiles stream through a ring of `stages` shared buffers filled by cp.async, so the next
// tiles load while the current ones are multiplied: a slot holds either one K or V tile (K0, V0, K1,
// ...: two barriers per key tile) or a K and V pair (one barrier per key tile). S = Q K^T lives in
// registers, the online softmax runs on it there, and P is fed to P V straight from registers.
// Key tiles no row of the block sees are never visited; only tiles crossing a mask edge test
// elements (both from the shared tile rules). The Featured instance adds, through the feature policy
// (kfa/detail/feature_policy.hpp, policy/fragment_policy.cuh), packed sequences, block masks (skipped
// tiles are never loaded), softcap / ALiBi and dropout; the plain instance is the dense kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/online_softmax.hpp"
#include "common/tile_scheduler.hpp"
#include "sm80/forward_config.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/error.hpp"
#include "policy/fragment_policy.cuh"
#include "arch/ptx.cuh"
#include "arch/smem_tile.cuh"

namespace kfa::cuda {

/// The block shape of one instance. The Featured instance runs 16 query rows per warp (more warps per
/// block): its per-row policy state needs the registers that a second m16 fragment row would take.
template <int D, class T, bool Featured = false>
struct ForwardShape {
  using Cfg = ForwardConfig<D>;
  static constexpr int block_m = Cfg::block_m, block_n = Cfg::block_n, stages = Cfg::stages;
  static constexpr int warps = Featured && Cfg::block_m / 16 > Cfg::warps ? Cfg::block_m / 16 : Cfg::warps;
  static constexpr bool kv_together = Cfg::kv_together;
  static constexpr int threads = warps * 32;
  static constexpr int warp_rows = block_m / warps;
  static constexpr int m_tiles = warp_rows / 16;  // m16 fragments per warp
  static constexpr int s_tiles = block_n / 8;     // n8 fragments of a score row block
  static constexpr int o_tiles = D / 8;           // n8 fragments of an output row block
  using Tile = SwizzledTile<D>;
  static constexpr int q_bytes = Tile::bytes(block_m);
  static constexpr int kv_bytes = Tile::bytes(block_n);
  static constexpr int slot_bytes = (kv_together ? 2 : 1) * kv_bytes;
  static constexpr int smem_bytes = q_bytes + stages * slot_bytes;
  static_assert(warp_rows % 16 == 0 && block_n % 16 == 0 && D % 16 == 0, "fragment shapes");
  static_assert(stages >= 2, "the ring needs one tile in use and one loading");
  static_assert(smem_bytes == forward_smem_bytes<D>(), "forward_launch.cu checks this size against the device");
};

template <int D, class T, bool Featured>
__global__ void __launch_bounds__(ForwardShape<D, T, Featured>::threads)
    forward_kernel(const detail::ForwardArgs a, const std::int64_t n_qtiles, const float scale_log2) {
  using F = ForwardShape<D, T, Featured>;
  using Tile = typename F::Tile;
  constexpr int BM = F::block_m, BN = F::block_n, S = F::stages, MT = F::m_tiles, NT = F::s_tiles,
                DT = F::o_tiles;
  static_assert(!Featured || F::kv_together, "the feature walk loads a K and V pair per ring slot");
  extern __shared__ __align__(128) unsigned char smem[];
  const std::uint32_t q_s = ptx::smem_addr(smem);
  const std::uint32_t kv_s = q_s + F::q_bytes;

  const common::TileCoord tile = common::schedule_tile(blockIdx.x, n_qtiles, a.shape, a.score);
  // The tile's sequence: its rows within the packed tensors and its own lengths (the call's when padded).
  const detail::SequenceBounds seq =
      Featured ? detail::sequence_bounds(a.shape, a.varlen, tile.batch) : detail::SequenceBounds{};
  detail::Shape shape = a.shape;
  if constexpr (Featured) shape = detail::sequence_shape(a.shape, seq);
  const std::int64_t row0 = tile.q_tile * BM;
  if (Featured && row0 >= shape.seqlen_q) return;  // past this packed sequence's end
  const int rows_valid = static_cast<int>(shape.seqlen_q - row0 < BM ? shape.seqlen_q - row0 : BM);
  const T* q = static_cast<const T*>(a.q.data) + tile.batch * a.q.stride_b + (seq.q_begin + row0) * a.q.stride_s +
               tile.head * a.q.stride_h;
  const T* k = static_cast<const T*>(a.k.data) + tile.batch * a.k.stride_b + seq.k_begin * a.k.stride_s +
               tile.head_kv * a.k.stride_h;
  const T* v = static_cast<const T*>(a.v.data) + tile.batch * a.v.stride_b + seq.k_begin * a.v.stride_s +
               tile.head_kv * a.v.stride_h;
  const detail::KeyTrip trip = detail::key_trip(row0, row0 + rows_valid, BN, shape, a.score);
  const int n_tiles = static_cast<int>(
      Featured ? detail::visited_key_tiles(trip, BN, row0, row0 + rows_valid, tile.batch, tile.head, shape, a.score)
               : trip.end - trip.begin);
  // The next key tile to load and the next to compute: consecutive tiles, or with a block mask the
  // tiles it does not skip (both cursors walk the same list).
  auto next_tile = [&](std::int64_t t) {
    return Featured ? detail::next_key_tile(trip, t, BN, row0, row0 + rows_valid, tile.batch, tile.head, shape, a.score)
                    : t;
  };
  std::int64_t load_tile = next_tile(trip.begin), compute_tile = load_tile;
  constexpr bool KV = F::kv_together;
  const int units = KV ? n_tiles : 2 * n_tiles;  // (K0 V0), (K1 V1), ... or K0, V0, K1, V1, ...

  // Unit u goes to ring slot u % S.
  auto load_unit = [&](int u) {
    const std::int64_t col0 = (Featured ? load_tile : trip.begin + (KV ? u : u / 2)) * BN;
    if constexpr (Featured) load_tile = next_tile(load_tile + 1);
    const int valid = static_cast<int>(shape.seqlen_k - col0 < BN ? shape.seqlen_k - col0 : BN);
    const std::uint32_t slot = kv_s + (u % S) * F::slot_bytes;
    if (KV || !(u & 1)) load_tile_async<D, BN, F::threads>(slot, k + col0 * a.k.stride_s, a.k.stride_s, valid);
    if (KV || (u & 1))
      load_tile_async<D, BN, F::threads>(slot + (KV ? F::kv_bytes : 0), v + col0 * a.v.stride_s, a.v.stride_s, valid);
  };
  // Waits for unit u, then refills the slot every warp has just finished with.
  auto next_unit = [&](int u) {
    ptx::cp_async_wait<S - 2>();
    __syncthreads();  // unit u landed for every thread; every warp is done with slot (u - 1) % S
    if (u + S - 1 < units) load_unit(u + S - 1);
    ptx::cp_async_commit();
  };

  load_tile_async<D, BM, F::threads>(q_s, q, a.q.stride_s, rows_valid);
  if (units > 0) load_unit(0);
  ptx::cp_async_commit();
#pragma unroll
  for (int u = 1; u < S - 1; ++u) {
    if (u < units) load_unit(u);
    ptx::cp_async_commit();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // fragment row group and column pair of this lane
  const int wrow0 = warp * F::warp_rows;

  float acc_o[MT][DT][4];
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mi][dt][e] = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[mi][h] = -INFINITY;
      row_sum[mi][h] = 0.0f;
    }
  }

  // ldmatrix row/chunk of this lane inside a 16x16 operand block (see the fragment layouts of mma.m16n8k16).
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_chunk = lane >> 4;   // Q (A), V (B, transposed)
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_chunk = (lane >> 3) & 1;   // K (B)
  constexpr std::uint32_t RB = Tile::row_bytes;
  const std::uint32_t q_lane = q_s + (wrow0 + a_row) * RB, a_xor = Tile::lane_xor(a_row, a_chunk);
  const std::uint32_t k_lane = b_row * RB, b_xor = Tile::lane_xor(b_row, b_chunk);
  const std::uint32_t v_lane = a_row * RB;

  const detail::ScoreMod mod = detail::make_score_mod(a.score, tile.head);
  const detail::DropoutPolicy dropout = detail::make_dropout(a.score);
  for (int it = 0; it < n_tiles; ++it) {
    const int u = KV ? it : 2 * it;
    const std::int64_t key_tile = Featured ? compute_tile : trip.begin + it;
    if constexpr (Featured) compute_tile = next_tile(compute_tile + 1);
    // ---- S = Q K^T on ring slot u
    next_unit(u);
    const std::uint32_t k_s = kv_s + (u % S) * F::slot_bytes;
    float acc_s[MT][NT][4];
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_s[mi][nt][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t qa[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
        ptx::ldmatrix_x4(qa[mi], q_lane + mi * 16 * RB + ((ks * 32) ^ a_xor));
#pragma unroll
      for (int p = 0; p < NT / 2; ++p) {
        std::uint32_t kb[4];
        ptx::ldmatrix_x4(kb, k_s + k_lane + p * 16 * RB + ((ks * 32) ^ b_xor));
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          ptx::mma_16816<T>(acc_s[mi][2 * p], qa[mi], kb[0], kb[1]);
          ptx::mma_16816<T>(acc_s[mi][2 * p + 1], qa[mi], kb[2], kb[3]);
        }
      }
    }

    // ---- score modifiers and element masks (only tiles crossing a mask edge, the end of the keys or a
    // partial mask block test elements), then the online softmax
    const std::int64_t col0 = key_tile * BN;
    if constexpr (Featured) {
      const detail::KeyTileWork work =
          detail::key_tile_work(trip, key_tile, BN, row0, row0 + rows_valid, tile.batch, tile.head, shape, a.score);
      if (work.masked() || mod.any()) {
#pragma unroll
        for (int mi = 0; mi < MT; ++mi)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            policy::RowPolicy rp;
            rp.mod = mod;
            rp.row = row0 + wrow0 + mi * 16 + g + 8 * h;
            if (work.block_bits) rp.block = detail::block_row(a.score.blocks, tile.batch + a.score.batch_base, tile.head, rp.row);
            policy::modify_and_mask_row<NT>([&](int i, int e) -> float& { return acc_s[mi][i][2 * h + e]; }, rp, col0,
                                            work.window_mask, work.block_bits, shape, a.score, t);
          }
      }
    } else if (key_tile < trip.unmasked_begin || key_tile >= trip.unmasked_end) {
#pragma unroll
      for (int mi = 0; mi < MT; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          // keys this lane's row sees, relative to the tile (recomputed here: few tiles are masked)
          const detail::VisibleRange r = detail::visible_keys(row0 + wrow0 + mi * 16 + g + 8 * h, shape, a.score);
          const int first = static_cast<int>(r.begin - col0), end = static_cast<int>(r.end - col0);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int c = nt * 8 + 2 * t + e;
              if (c < first || c >= end) acc_s[mi][nt][2 * h + e] = -INFINITY;
            }
        }
    }
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = row_max[mi][h];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(acc_s[mi][nt][2 * h], acc_s[mi][nt][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float alpha = common::rescale_factor(row_max[mi][h], mx, scale_log2);
        row_max[mi][h] = mx;
        const float offset = common::offset_max(mx) * scale_log2;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 2 * h; e < 2 * h + 2; ++e) {
            const float p = ptx::exp2_approx(fmaf(acc_s[mi][nt][e], scale_log2, -offset));
            acc_s[mi][nt][e] = p;
            sum += p;
          }
        row_sum[mi][h] = row_sum[mi][h] * alpha + sum;  // this lane's partial sum; reduced at the end
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          acc_o[mi][dt][2 * h] *= alpha;
          acc_o[mi][dt][2 * h + 1] *= alpha;
        }
        if (Featured && dropout.on)  // after the sum: dropout acts on P V only
          policy::dropout_row<NT>([&](int i, int e) -> float& { return acc_s[mi][i][2 * h + e]; }, dropout, tile.batch,
                                  tile.head, row0 + wrow0 + mi * 16 + g + 8 * h, col0, t);
      }

    // ---- O += P V on the same slot (K and V together) or on slot u + 1
    if (!KV) next_unit(u + 1);
    const std::uint32_t v_s = KV ? k_s + F::kv_bytes : kv_s + ((u + 1) % S) * F::slot_bytes;
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) {
      std::uint32_t pa[MT][4];  // the S accumulator layout of two n8 tiles is the A layout of one k16 step
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        pa[mi][0] = ptx::pack2<T>(acc_s[mi][2 * ks][0], acc_s[mi][2 * ks][1]);
        pa[mi][1] = ptx::pack2<T>(acc_s[mi][2 * ks][2], acc_s[mi][2 * ks][3]);
        pa[mi][2] = ptx::pack2<T>(acc_s[mi][2 * ks + 1][0], acc_s[mi][2 * ks + 1][1]);
        pa[mi][3] = ptx::pack2<T>(acc_s[mi][2 * ks + 1][2], acc_s[mi][2 * ks + 1][3]);
      }
#pragma unroll
      for (int p = 0; p < DT / 2; ++p) {
        std::uint32_t vb[4];
        ptx::ldmatrix_x4_trans(vb, v_s + v_lane + ks * 16 * RB + ((p * 32) ^ a_xor));
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          ptx::mma_16816<T>(acc_o[mi][2 * p], pa[mi], vb[0], vb[1]);
          ptx::mma_16816<T>(acc_o[mi][2 * p + 1], pa[mi], vb[2], vb[3]);
        }
      }
    }
  }

  // ---- epilogue: normalize, stage this warp's rows in its own part of the Q tile, store 16-byte chunks
  ptx::cp_async_wait<0>();
  __syncthreads();
  float* lse = static_cast<float*>(a.lse.data) + tile.batch * a.lse.stride_b + tile.head * a.lse.stride_h +
               seq.q_begin * a.lse.stride_s;
  const float keep_scale = Featured ? dropout.keep_scale : 1.0f;
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[mi][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = common::inverse_sum(l) * keep_scale;
      const int r = wrow0 + mi * 16 + g + 8 * h;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt)
        *reinterpret_cast<std::uint32_t*>(smem + Tile::elem_offset(r, dt * 8 + 2 * t)) =
            ptx::pack2<T>(acc_o[mi][dt][2 * h] * inv, acc_o[mi][dt][2 * h + 1] * inv);
      if (t == 0 && r < rows_valid) lse[(row0 + r) * a.lse.stride_s] = common::row_lse(row_max[mi][h], l, a.score.scale);
    }
  __syncwarp();
  T* o = static_cast<T*>(a.o.data) + tile.batch * a.o.stride_b + (seq.q_begin + row0) * a.o.stride_s +
         tile.head * a.o.stride_h;
  constexpr int warp_chunks = F::warp_rows * Tile::chunks;
#pragma unroll
  for (int i = lane; i < warp_chunks; i += 32) {
    const int r = wrow0 + i / Tile::chunks, c = i % Tile::chunks;
    if (r < rows_valid)
      *reinterpret_cast<uint4*>(o + r * a.o.stride_s + c * 8) =
          *reinterpret_cast<const uint4*>(smem + Tile::chunk_offset(r, c));
  }
}

template <int D, class T, bool Featured>
void launch_forward_instance(const detail::ForwardArgs& a, cudaStream_t stream) {
  using F = ForwardShape<D, T, Featured>;
  const std::int64_t n_qtiles = common::tile_count(a.shape.seqlen_q, F::block_m);
  const std::int64_t blocks = a.shape.batch * a.shape.heads * n_qtiles;
  auto kernel = forward_kernel<D, T, Featured>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<static_cast<unsigned>(blocks), F::threads, F::smem_bytes, stream>>>(
        a, n_qtiles, common::scale_log2(a.score.scale));
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw LaunchError(std::string("CUDA forward kernel launch failed: ") + cudaGetErrorString(err));
}

template <int D, class T>
void launch_forward(const detail::ForwardArgs& a, cudaStream_t stream) {
  if (forward_featured(a))
    launch_forward_instance<D, T, true>(a, stream);
  else
    launch_forward_instance<D, T, false>(a, stream);
}

}  // namespace kfa::cuda

#define KFA_CUDA_INSTANTIATE_FORWARD(DIM, TYPE)                                                 \
  template void kfa::cuda::launch_forward<DIM, TYPE>(const kfa::detail::ForwardArgs&, cudaStream_t);
