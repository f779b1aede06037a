#pragma once
// Moving tiles between global memory (any element type, 64-bit strides) and team scratch (Acc).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <type_traits>

#include "kfa/detail/args.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "portable/host_transpose.hpp"

namespace kfa::portable {

/// Hands out aligned pieces of one team's scratch allocation.
template <class Member>
struct ScratchArena {
  const Member& team;
  int level;
  KOKKOS_INLINE_FUNCTION ScratchArena(const Member& t, int l) : team(t), level(l) {}
  template <class U>
  KOKKOS_INLINE_FUNCTION U* take(int n) const {
    return static_cast<U*>(team.team_scratch(level).get_shmem_aligned(sizeof(U) * n, 64));
  }
};

KOKKOS_INLINE_FUNCTION std::int64_t offset(const detail::Tensor4& t, std::int64_t b, std::int64_t s, std::int64_t h) {
  return b * t.stride_b + s * t.stride_s + h * t.stride_h;
}

/// Offset of row s of (b, h): through the KV cache's page table when `kv` is given (the K and V loads).
KOKKOS_INLINE_FUNCTION std::int64_t offset(const detail::Tensor4& t, const detail::KvCache* kv, std::int64_t b,
                                           std::int64_t s, std::int64_t h) {
  return kv ? detail::key_row_offset(t, *kv, b, s, h) : offset(t, b, s, h);
}

/// dst[r * ld + c] = scale * src[b, row0 + r, h, c] for r < rows, c < d; zero elsewhere in [tile_rows x ld].
/// `kv`: the rows are keys of a KV cache (paged or not).
template <class T, class Member, class Acc>
KOKKOS_INLINE_FUNCTION void load_rows(const Member& team, const detail::Tensor4& src, std::int64_t b,
                                      std::int64_t h, std::int64_t row0, int rows, int d, Acc* dst,
                                      int tile_rows, int ld, Acc scale, const detail::KvCache* kv = nullptr) {
  const T* p = static_cast<const T*>(src.data);
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, tile_rows), [&](int r) {
    Acc* out = dst + r * ld;
    if (r < rows) {
      const T* in = p + offset(src, kv, b, row0 + r, h);
      for (int c = 0; c < d; ++c) out[c] = scale * static_cast<Acc>(in[c]);
      for (int c = d; c < ld; ++c) out[c] = Acc(0);
    } else {
      for (int c = 0; c < ld; ++c) out[c] = Acc(0);
    }
  });
}

/// dst[c * ld + r] = src[b, row0 + r, h, c]: the transposed tile [dp x tile_rows], zero-padded.
template <class T, class Member, class Acc>
KOKKOS_INLINE_FUNCTION void load_rows_transposed(const Member& team, const detail::Tensor4& src, std::int64_t b,
                                                 std::int64_t h, std::int64_t row0, int rows, int d, Acc* dst,
                                                 int tile_rows, int dp, const detail::KvCache* kv = nullptr) {
  const T* p = static_cast<const T*>(src.data);
  auto one_row = [&](int r) {
    if (r < rows) {
      const T* in = p + offset(src, kv, b, row0 + r, h);
      for (int c = 0; c < d; ++c) dst[c * tile_rows + r] = static_cast<Acc>(in[c]);
      for (int c = d; c < dp; ++c) dst[c * tile_rows + r] = Acc(0);
    } else {
      for (int c = 0; c < dp; ++c) dst[c * tile_rows + r] = Acc(0);
    }
  };
#ifdef KFA_HOST_TRANSPOSE
  if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
    // CPUs: 8 x 8 blocks transposed in registers, then the rows left over one by one.
    KOKKOS_IF_ON_HOST((
      const int blocks = rows / 8;
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, blocks), [&](int blk) {
        const float* row[8];
        for (int r = 0; r < 8; ++r) row[r] = p + offset(src, kv, b, row0 + blk * 8 + r, h);
        host::transpose_rows8(row, blk * 8, d, dp, dst, tile_rows);
      });
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, blocks * 8, tile_rows), one_row);
      return;
    ))
  }
#endif
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, tile_rows), one_row);
}

}  // namespace kfa::portable
