#pragma once
// Tile sizes of the portable path, chosen from head_dim and the team scratch available.
#include <Kokkos_Core.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace kfa::portable {

template <class ExecSpace>
constexpr bool runs_on_host = Kokkos::SpaceAccessibility<Kokkos::HostSpace, typename ExecSpace::memory_space>::accessible;

#ifndef KFA_PORTABLE_GPU_KERNEL
#define KFA_PORTABLE_GPU_KERNEL 1
#endif
/// Whether GPU spaces run the register-blocked forward (forward_device.hpp; 5-8x faster on an H200)
/// rather than the scratch-tile kernel of the host spaces; the CMake option KFA_PORTABLE_GPU_KERNEL=OFF
/// keeps the latter. The host suites run the register-blocked kernel on Kokkos::Serial either way
/// (tests/portable/test_forward_device_tiles.cpp).
template <class ExecSpace>
constexpr bool device_forward_kernel = !runs_on_host<ExecSpace> && KFA_PORTABLE_GPU_KERNEL;

#ifndef KFA_HOST_BLOCK_ROWS
#define KFA_HOST_BLOCK_ROWS 8  // rows of the host register block (portable/host_gemm.hpp)
#endif
#ifndef KFA_HOST_BLOCK_VECS
#define KFA_HOST_BLOCK_VECS 2  // SIMD vectors per row of the host register block
#endif

/// Register-block shape of tile_gemm: wide rows for host SIMD, small square blocks per GPU thread.
template <class ExecSpace>
struct Block {
  static constexpr int rm = runs_on_host<ExecSpace> ? KFA_HOST_BLOCK_ROWS : 4;
  static constexpr int rn = runs_on_host<ExecSpace> ? 16 : 4;
};

/// CPU tile shape: query rows and key columns per tile (see choose_tiles). The macros exist for
/// tuning sweeps (perf/); rows must stay a multiple of the host register block's rows.
#ifndef KFA_HOST_TILE_ROWS
#define KFA_HOST_TILE_ROWS 256
#endif
#ifndef KFA_HOST_TILE_COLS
#define KFA_HOST_TILE_COLS 128
#endif
inline constexpr int host_rows = KFA_HOST_TILE_ROWS;
inline constexpr int host_cols = KFA_HOST_TILE_COLS;

struct TileConfig {
  int br = 64, bc = 64;    // query rows, key columns per tile
  int dpad = 0;            // head_dim rounded up to the register-block width
  int team_size = 1;
  int scratch_level = 0;
  std::size_t scratch_bytes = 0;
};

inline int round_up(std::int64_t x, int m) { return static_cast<int>((x + m - 1) / m * m); }

/// Picks the largest tiles (64 down to the block size) whose scratch fits level 0, else uses level 1.
/// `bytes(br, bc, dpad)` is the kernel's scratch footprint.
template <class ExecSpace, class Bytes>
TileConfig choose_tiles(const ExecSpace& exec, std::int64_t head_dim, std::int64_t seqlen_q, Bytes bytes) {
  using B = Block<ExecSpace>;
  TileConfig t;
  t.dpad = round_up(head_dim, B::rn);
  t.team_size = runs_on_host<ExecSpace> ? 1 : 128;
  Kokkos::TeamPolicy<ExecSpace> probe(exec, 1, t.team_size);
  const std::size_t max0 = probe.scratch_size_max(0);
  // Short query sequences get a short tile so no team computes only padding.
  int br = runs_on_host<ExecSpace> ? host_rows : 64;
  while (br > B::rm * 2 && br / 2 >= seqlen_q) br /= 2;
  t.br = br;
  t.bc = 64;
  if constexpr (runs_on_host<ExecSpace>) {
    // On CPUs both scratch levels are the same per-thread memory, so the tiles are sized for the
    // caches rather than for level 0 (32 KiB on OpenMP): each K/V tile is loaded (and K transposed)
    // once per `host_rows` queries, and 128 keys per tile keep the per-tile softmax work amortized.
    t.bc = host_cols;
    t.scratch_bytes = bytes(t.br, t.bc, t.dpad);
    t.scratch_level = t.scratch_bytes <= max0 ? 0 : 1;
    return t;
  }
  while (bytes(t.br, t.bc, t.dpad) > max0 && (t.bc > 16 || t.br > 16)) {
    if (t.bc >= t.br) t.bc /= 2; else t.br /= 2;
  }
  t.scratch_level = bytes(t.br, t.bc, t.dpad) <= max0 ? 0 : 1;
  if (t.scratch_level == 1) { t.br = br; t.bc = 64; }
  t.scratch_bytes = bytes(t.br, t.bc, t.dpad);
  return t;
}

}  // namespace kfa::portable
