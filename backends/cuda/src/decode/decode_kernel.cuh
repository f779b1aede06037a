#pragma once
// The split-KV decode kernel (mma.sync m16n8k16, fp32 accumulation; sm_80 and sm_90). One block per
// (split, batch, KV head, packed row tile):
//   rows      the query heads of the KV head times the query tokens, packed (row p = token p / group,
//             head kv_head * group + p % group), so each K/V byte read serves every head of its group;
//   producer  key tiles of the block's split stream through a ring of `stages` K+V slots by cp.async,
//             addressed through the feature policy (contiguous cache or page table: one lookup per
//             tile, per run of rows within a page, or per row for odd page sizes);
//   mainloop  every warp takes 16 keys of each tile against all rows: S = Q K^T with Q held in
//             registers, the policy's modifiers and masks (window / causal aligned per sequence,
//             softcap, ALiBi per packed row's head), a per-warp online softmax, O += P V;
//   epilogue  the four warps' states merged in shared memory; with one split the block writes O and
//             LSE, else an fp32 partial state that the combine kernel (combine.cuh) merges.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "arch/ptx.cuh"
#include "arch/smem_tile.cuh"
#include "common/online_softmax.hpp"
#include "decode/decode_config.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "policy/fragment_policy.cuh"

namespace kfa::cuda::decode {

/// Where a block works: its split, sequence, KV head and packed row tile, and the sequence's shape.
struct DecodeTile {
  int split, row_tile;
  std::int64_t batch, head_kv;
  detail::Shape shape;  // seqlen_k = the sequence's key count
  int rows_valid;       // packed rows of this tile that exist
  std::int64_t q_first, q_end;  // query tokens [q_first, q_end) the tile's rows belong to
};

__device__ __forceinline__ DecodeTile decode_tile(const DecodeParams& p, int block_m) {
  DecodeTile t;
  std::int64_t i = blockIdx.x;
  t.split = static_cast<int>(i % p.splits);
  i /= p.splits;
  t.row_tile = static_cast<int>(i % p.row_tiles);
  i /= p.row_tiles;
  t.head_kv = i % p.a.shape.heads_kv;
  t.batch = i / p.a.shape.heads_kv;
  const detail::SequenceBounds sb = detail::sequence_bounds(p.a.shape, p.a.varlen, p.a.kv, t.batch);
  t.shape = detail::sequence_shape(p.a.shape, sb);
  const int first = t.row_tile * block_m;
  t.rows_valid = p.packed_rows - first < block_m ? p.packed_rows - first : block_m;
  t.q_first = first / p.group;
  t.q_end = (first + t.rows_valid - 1) / p.group + 1;
  return t;
}

template <int D, class T>
__global__ void __launch_bounds__(DecodeShape<D>::threads, DecodeShape<D>::blocks_per_sm)
    decode_kernel(const DecodeParams p) {
  using F = DecodeShape<D>;
  using Tile = SwizzledTile<D>;
  constexpr int BM = F::block_m, BN = F::block_n, S = F::stages, W = F::warps, DT = D / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  const detail::ForwardArgs& a = p.a;
  const std::uint32_t q_s = ptx::smem_addr(smem);
  const std::uint32_t kv_s = q_s + F::q_bytes;
  constexpr int slot_bytes = 2 * F::tile_bytes;

  const DecodeTile tile = decode_tile(p, BM);
  const int row0 = tile.row_tile * BM;  // first packed row
  // ---- the split's key tiles: the visible keys of the tile's query tokens, cut into `splits` ranges
  const detail::KeyTrip trip = detail::key_trip(tile.q_first, tile.q_end, BN, tile.shape, a.score);
  const std::int64_t n_all = trip.end - trip.begin, per = (n_all + p.splits - 1) / p.splits;
  const std::int64_t t_begin = trip.begin + tile.split * per;
  const std::int64_t t_end = t_begin + per < trip.end ? t_begin + per : trip.end;
  const int n_tiles = t_end > t_begin ? static_cast<int>(t_end - t_begin) : 0;

  // ---- producer: Q rows (gathered over the group's heads), then K/V tiles by row address
  const T* q_base = static_cast<const T*>(a.q.data) + tile.batch * a.q.stride_b;
  auto q_row = [&](int r) {
    const int pr = row0 + r;
    return q_base + (pr / p.group) * a.q.stride_s + (tile.head_kv * p.group + pr % p.group) * a.q.stride_h;
  };
  load_tile_rows_async<D, BM, F::threads>(q_s, q_row, tile.rows_valid, q_base);
  const T* k_base = static_cast<const T*>(a.k.data);
  const T* v_base = static_cast<const T*>(a.v.data);
  // How a K/V tile is addressed: with a contiguous cache or pages that hold whole tiles (page size a
  // multiple of block_n) one base address and the pointer-bumping loader; with smaller pages that
  // are a multiple of a thread's run of rows, one page-table lookup per run; otherwise (odd pages)
  // every row through the table. The lookups of the first two read a tile ahead, so that their
  // latency hides behind the current tile (not at head_dim 256, whose registers are all taken).
  constexpr int run = tile_run_rows<D, BN, F::threads>();
  enum : int { whole_tiles, page_runs, page_rows };
  const int mode = !a.kv.paged() || a.kv.page_size % BN == 0 ? whole_tiles
                   : run > 0 && a.kv.page_size % run == 0    ? page_runs
                                                             : page_rows;
  const int run0 = run > 0 && mode == page_runs ? static_cast<int>(threadIdx.x) / Tile::chunks * run : 0;
  const bool lookahead = D <= 128 && a.kv.paged() && mode != page_rows;
  int run_page = 0, run_row = 0;  // lookahead: this thread's page and row in the next tile to load
  auto fetch_run = [&](int it) {
    const std::int64_t j = (t_begin + it) * BN + run0;
    if (it < n_tiles && j < tile.shape.seqlen_k) {
      const detail::KeyRow kr = detail::key_row(a.kv, tile.batch, j);
      run_page = static_cast<int>(kr.block);
      run_row = static_cast<int>(kr.row);
    }
  };
  if (lookahead) fetch_run(0);
  auto load_tile = [&](int it) {
    const std::int64_t col0 = (t_begin + it) * BN;
    const int valid = static_cast<int>(tile.shape.seqlen_k - col0 < BN ? tile.shape.seqlen_k - col0 : BN);
    const std::uint32_t slot = kv_s + (it % S) * slot_bytes;
    if (mode == whole_tiles) {
      const detail::KeyRow kr = lookahead ? detail::KeyRow{run_page, run_row} : detail::key_row(a.kv, tile.batch, col0);
      if (lookahead) fetch_run(it + 1);
      load_tile_async<D, BN, F::threads>(slot, k_base + detail::key_row_offset(a.k, kr, tile.head_kv), a.k.stride_s, valid);
      load_tile_async<D, BN, F::threads>(slot + F::tile_bytes, v_base + detail::key_row_offset(a.v, kr, tile.head_kv),
                                         a.v.stride_s, valid);
    } else if (mode == page_runs) {
      if constexpr (run > 0) {
        if (!lookahead) fetch_run(it);
        const detail::KeyRow kr{run_page, run_row};
        if (lookahead) fetch_run(it + 1);
        load_tile_runs_async<D, BN, F::threads>(
            slot, [&](int) { return k_base + detail::key_row_offset(a.k, kr, tile.head_kv); }, a.k.stride_s, valid, k_base);
        load_tile_runs_async<D, BN, F::threads>(
            slot + F::tile_bytes, [&](int) { return v_base + detail::key_row_offset(a.v, kr, tile.head_kv); },
            a.v.stride_s, valid, v_base);
      }
    } else {
      load_tile_rows_async<D, BN, F::threads>(
          slot, [&](int r) { return k_base + detail::key_row_offset(a.k, a.kv, tile.batch, col0 + r, tile.head_kv); },
          valid, k_base);
      load_tile_rows_async<D, BN, F::threads>(
          slot + F::tile_bytes,
          [&](int r) { return v_base + detail::key_row_offset(a.v, a.kv, tile.batch, col0 + r, tile.head_kv); }, valid,
          v_base);
    }
  };
  ptx::cp_async_commit();  // Q: its own group, so the first wait below needs only it and slot 0
#pragma unroll
  for (int u = 0; u < S - 1; ++u) {
    if (u < n_tiles) load_tile(u);
    ptx::cp_async_commit();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_chunk = lane >> 4;  // Q (A), V (B, transposed)
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_chunk = (lane >> 3) & 1;  // K (B)
  constexpr std::uint32_t RB = Tile::row_bytes;
  const std::uint32_t a_xor = Tile::lane_xor(a_row, a_chunk), b_xor = Tile::lane_xor(b_row, b_chunk);

  // ---- the rows of this lane (g and g + 8 of the tile): their token, head, score modifiers
  policy::RowPolicy rp[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int pr = row0 + g + 8 * h;
    rp[h].row = pr / p.group;
    rp[h].mod = detail::make_score_mod(a.score, tile.head_kv * p.group + (pr < p.packed_rows ? pr % p.group : 0));
  }
  const bool modified = rp[0].mod.any() || rp[1].mod.any();

  float acc_o[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_o[dt][e] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  // Q fragments stay in registers for the whole walk, except at head_dim 256, where the O accumulator
  // takes the registers and each k16 step reloads its Q fragment from shared memory.
  constexpr bool q_in_registers = D <= 128;
  std::uint32_t qa[q_in_registers ? D / 16 : 1][4];

  for (int it = 0; it < n_tiles; ++it) {
    ptx::cp_async_wait<S - 2>();
    __syncthreads();  // tile `it` landed for every thread; every warp is done with slot (it - 1) % S
    if (it + S - 1 < n_tiles) load_tile(it + S - 1);
    ptx::cp_async_commit();
    if (q_in_registers && it == 0) {
#pragma unroll
      for (int ks = 0; ks < (q_in_registers ? D / 16 : 0); ++ks)
        ptx::ldmatrix_x4(qa[ks], q_s + a_row * RB + ((ks * 32) ^ a_xor));
    }
    const std::uint32_t k_s = kv_s + (it % S) * slot_bytes, v_s = k_s + F::tile_bytes;
    // ---- S = Q K^T over this warp's 16 keys
    float acc_s[2][4] = {};
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t kb[4];
      const int qi = q_in_registers ? ks : 0;
      if (!q_in_registers) ptx::ldmatrix_x4(qa[qi], q_s + a_row * RB + ((ks * 32) ^ a_xor));
      ptx::ldmatrix_x4(kb, k_s + (warp * 16 + b_row) * RB + ((ks * 32) ^ b_xor));
      ptx::mma_16816<T>(acc_s[0], qa[qi], kb[0], kb[1]);
      ptx::mma_16816<T>(acc_s[1], qa[qi], kb[2], kb[3]);
    }
    // ---- modifiers and masks (tiles crossing a window edge or the sequence end), online softmax
    const std::int64_t key_tile = t_begin + it;
    const std::int64_t col0 = key_tile * BN + warp * 16;
    const bool masked = key_tile < trip.unmasked_begin || key_tile >= trip.unmasked_end;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (masked || modified)
        policy::modify_and_mask_row<2>([&](int i, int e) -> float& { return acc_s[i][2 * h + e]; }, rp[h], col0, masked,
                                       false, tile.shape, a.score, t);
      float mx = fmaxf(row_max[h], fmaxf(fmaxf(acc_s[0][2 * h], acc_s[0][2 * h + 1]), fmaxf(acc_s[1][2 * h], acc_s[1][2 * h + 1])));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float alpha = common::rescale_factor(row_max[h], mx, p.scale_log2);
      row_max[h] = mx;
      const float offset = common::offset_max(mx) * p.scale_log2;
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int e = 2 * h; e < 2 * h + 2; ++e) {
          const float pv = ptx::exp2_approx(fmaf(acc_s[i][e], p.scale_log2, -offset));
          acc_s[i][e] = pv;
          sum += pv;
        }
      row_sum[h] = row_sum[h] * alpha + sum;
      // Over a long cache the maxima settle early: skip the rescale when no row of the warp moved.
      if (__any_sync(0xffffffffu, alpha != 1.0f)) {
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          acc_o[dt][2 * h] *= alpha;
          acc_o[dt][2 * h + 1] *= alpha;
        }
      }
    }
    // ---- O += P V: P (16 rows x this warp's 16 keys) is one k16 step
    std::uint32_t pa[4];
    pa[0] = ptx::pack2<T>(acc_s[0][0], acc_s[0][1]);
    pa[1] = ptx::pack2<T>(acc_s[0][2], acc_s[0][3]);
    pa[2] = ptx::pack2<T>(acc_s[1][0], acc_s[1][1]);
    pa[3] = ptx::pack2<T>(acc_s[1][2], acc_s[1][3]);
#pragma unroll
    for (int pd = 0; pd < DT / 2; ++pd) {
      std::uint32_t vb[4];
      ptx::ldmatrix_x4_trans(vb, v_s + (warp * 16 + a_row) * RB + ((pd * 32) ^ a_xor));
      ptx::mma_16816<T>(acc_o[2 * pd], pa, vb[0], vb[1]);
      ptx::mma_16816<T>(acc_o[2 * pd + 1], pa, vb[2], vb[3]);
    }
  }

  // ---- epilogue: merge the warps' states in shared memory (the ring is free now)
  ptx::cp_async_wait<0>();
  __syncthreads();
  constexpr int LD = D + 4;  // padded rows: the lanes of a quad write different banks
  float* red_o = reinterpret_cast<float*>(smem + F::q_bytes);  // [W][BM][LD]
  float* red_m = red_o + W * BM * LD;                           // [W][BM]
  float* red_l = red_m + W * BM;                                // [W][BM]
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    row_sum[h] = l;
    if (t == 0) {
      red_m[warp * BM + g + 8 * h] = row_max[h];
      red_l[warp * BM + g + 8 * h] = l;
    }
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = g + 8 * h;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) m = fmaxf(m, red_m[w * BM + r]);
    float l = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w) l += red_l[w * BM + r] * common::rescale_factor(red_m[w * BM + r], m, p.scale_log2);
    const float f = common::rescale_factor(row_max[h], m, p.scale_log2) * common::inverse_sum(l);
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      red_o[(warp * BM + r) * LD + dt * 8 + 2 * t] = acc_o[dt][2 * h] * f;
      red_o[(warp * BM + r) * LD + dt * 8 + 2 * t + 1] = acc_o[dt][2 * h + 1] * f;
    }
    if (warp == 0 && t == 0) {  // the row's LSE (natural log), for the output or the partial state
      row_max[h] = m;
      row_sum[h] = l;
    }
  }
  __syncthreads();
  // rows r < rows_valid: sum of the warps' parts, 8 columns per thread (one 16-byte store of T)
  const bool final_out = p.splits == 1;
  for (int i = threadIdx.x; i < BM * (D / 8); i += F::threads) {
    const int r = i / (D / 8), c = (i % (D / 8)) * 8;
    if (r >= tile.rows_valid) continue;
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = 0.0f;
#pragma unroll
    for (int w = 0; w < W; ++w)
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] += red_o[(w * BM + r) * LD + c + e];
    const int pr = row0 + r;
    if (final_out) {
      const std::int64_t head = tile.head_kv * p.group + pr % p.group;
      T* o = static_cast<T*>(a.o.data) + tile.batch * a.o.stride_b + (pr / p.group) * a.o.stride_s + head * a.o.stride_h;
      uint4 pk;
      pk.x = ptx::pack2<T>(v[0], v[1]);
      pk.y = ptx::pack2<T>(v[2], v[3]);
      pk.z = ptx::pack2<T>(v[4], v[5]);
      pk.w = ptx::pack2<T>(v[6], v[7]);
      *reinterpret_cast<uint4*>(o + c) = pk;
    } else {
      const std::int64_t prow =
          ((std::int64_t(tile.split) * a.shape.batch + tile.batch) * a.shape.heads_kv + tile.head_kv) *
              (std::int64_t(p.row_tiles) * BM) + pr;
      float4* dst = reinterpret_cast<float4*>(p.o_part + prow * D + c);
      dst[0] = make_float4(v[0], v[1], v[2], v[3]);
      dst[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
  }
  if (warp == 0 && t == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = g + 8 * h, pr = row0 + r;
      if (r >= tile.rows_valid) continue;
      const float lse = common::row_lse(row_max[h], row_sum[h], a.score.scale);
      if (final_out) {
        const std::int64_t head = tile.head_kv * p.group + pr % p.group;
        static_cast<float*>(a.lse.data)[tile.batch * a.lse.stride_b + head * a.lse.stride_h +
                                        (pr / p.group) * a.lse.stride_s] = lse;
      } else {
        p.lse_part[((std::int64_t(tile.split) * a.shape.batch + tile.batch) * a.shape.heads_kv + tile.head_kv) *
                       (std::int64_t(p.row_tiles) * BM) + pr] = lse;
      }
    }
  }
}

}  // namespace kfa::cuda::decode

#include <string>

#include "decode/combine.cuh"
#include "kfa/error.hpp"

namespace kfa::cuda::decode {

/// Launches the decode kernel and, with more than one split, the combine (both on `stream`).
template <int D, class T>
void launch_decode(const DecodeParams& p, cudaStream_t stream) {
  using F = DecodeShape<D>;
  const std::int64_t blocks = std::int64_t(p.splits) * p.row_tiles * p.a.shape.heads_kv * p.a.shape.batch;
  auto kernel = decode_kernel<D, T>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, F::smem_bytes);
  if (err == cudaSuccess) {
    kernel<<<static_cast<unsigned>(blocks), F::threads, F::smem_bytes, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess && p.splits > 1) {
    const std::int64_t rows = p.a.shape.batch * p.a.shape.heads_kv * p.packed_rows;
    combine_kernel<D, T><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) throw LaunchError(std::string("CUDA decode kernel launch failed: ") + cudaGetErrorString(err));
}

}  // namespace kfa::cuda::decode

#define KFA_CUDA_INSTANTIATE_DECODE(DIM, TYPE) \
  template void kfa::cuda::decode::launch_decode<DIM, TYPE>(const kfa::cuda::decode::DecodeParams&, cudaStream_t);
