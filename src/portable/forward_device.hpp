#pragma once
// The portable forward on GPUs: FlashAttention-2 in plain Kokkos with fp32 (SIMT) arithmetic, shaped
// like a register-blocked SGEMM. One team of 128 threads per (batch, head, 64-query tile). Each thread
// owns 8 query rows and keeps its share of the output accumulator, the running row maxima and its
// partial row sums in registers for the whole walk over the key tiles (fixed-size arrays indexed
// only by unrolled loops). Per 64-key tile:
//   S = Q K^T    each thread an 8 x 4 block (rows tr + 8i, keys tc + 16j); Q and K are both kept
//                row-major in scratch and read as 4-element runs along head_dim;
//   softmax      the row maximum is reduced over the 16 threads sharing the rows through a small
//                scratch table; the row sums stay per thread until the end;
//   O += P V     P goes through scratch (in K's place, K is dead by then); each thread an
//                8 x 4NG block of O (columns 64g + 4tc .. + 3).
// A warp (32 consecutive team ranks) is 4 row groups x 8 column groups of the thread grid, so for a
// 16-byte shared-memory load the 8 lanes of a quarter-warp share their rows (Q and P reads are
// broadcasts) and run over 8 column groups: K rows padded to dpad + 4 floats start 4 banks apart, V
// columns are contiguous. Every scratch access of the loops is then free of bank conflicts.
// Scratch: Q, K (+ 4 floats a row), V and the reduction table: 103 KiB at head_dim 128, 56 KiB at 64,
// 199 KiB at 256. ptxas (sm_90) gives the dense kernels 255 registers, spill-free up to head_dim 128,
// so two teams (8 warps) share an SM.
// Host spaces run ForwardKernel (forward_kernel.hpp); GPU spaces run this kernel unless built with
// KFA_PORTABLE_GPU_KERNEL=OFF (tile_config.hpp). Tests run this kernel on Kokkos::Serial, where
// the one team member plays all 128 threads in turn ("virtual threads"; team barriers separate
// every phase that reads what other threads wrote).
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "portable/dropout.hpp"
#include "portable/kv_tile_walk.hpp"
#include "portable/math.hpp"
#include "portable/sequence.hpp"
#include "portable/tile_config.hpp"
#include "portable/tile_io.hpp"

#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define KFA_UNROLL _Pragma("unroll")
#else
#define KFA_UNROLL
#endif

namespace kfa::portable {

/// Four consecutive scratch elements, moved as one 16-byte (fp32) load or store.
template <class Acc>
struct alignas(4 * sizeof(Acc)) Vec4 {
  Acc v[4];
};

template <class Acc>
KOKKOS_FORCEINLINE_FUNCTION Vec4<Acc> load4(const Acc* p) {
  return *reinterpret_cast<const Vec4<Acc>*>(p);
}

/// The fixed tile and thread grid of DeviceForwardKernel.
struct DeviceTile {
  static constexpr int threads = 128;
  static constexpr int tile = 64;        // query rows and key columns per tile
  static constexpr int rm = 8, sn = 4;   // per thread: query rows (tr + 8i), key columns (tc + 16j)
  static constexpr int row_pad = 4;      // Q and K rows are dpad + 4 long (dpad is a multiple of 64)
  static constexpr int p_ld = tile + 8;  // P rows: a warp's stores (4 rows x 8 keys) hit 32 banks
  static constexpr int red_ld = 20;      // reduction table rows (16 partials): 4 row groups on distinct banks
};

/// Where virtual thread t works: row group tr (rows tr + 8i) and column group tc.
struct Lane {
  int tr, tc;
  KOKKOS_INLINE_FUNCTION explicit Lane(int t) {
    const int warp = t / 32, l = t % 32;
    tr = (warp / 2) * 4 + l / 8;
    tc = (warp % 2) * 8 + l % 8;
  }
  KOKKOS_INLINE_FUNCTION int row(int i) const { return tr + 8 * i; }
  KOKKOS_INLINE_FUNCTION int key(int j) const { return tc + 16 * j; }
  KOKKOS_INLINE_FUNCTION int col(int g) const { return 64 * g + 4 * tc; }  // first of 4 output columns
};

/// One thread's share of a query tile.
template <class Acc, int NG>
struct RowState {
  Acc o[DeviceTile::rm][4 * NG];  // unnormalized output
  Acc m[DeviceTile::rm];          // running row maximum (the same in all 16 threads of a row)
  Acc l[DeviceTile::rm];          // this thread's part of the row sum
  Acc s[DeviceTile::rm][DeviceTile::sn];  // scores, then probabilities, of the current key tile
};

/// NG: head_dim padded to 64 NG. Packed: packed sequences (a kernel of its own: the per-sequence
/// copy of the arguments would cost the dense kernel registers).
template <class ExecSpace, class T, int NG, bool Packed>
struct DeviceForwardKernel {
  using Acc = acc_t<T>;
  using Member = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  using D = DeviceTile;
  using State = RowState<Acc, NG>;
  static constexpr int vpt = runs_on_host<ExecSpace> ? D::threads : 1;  // virtual threads per team member
  static constexpr int dp = 64 * NG;
  static constexpr int qk_ld = dp + D::row_pad;
  static constexpr int k_ld = qk_ld > D::p_ld ? qk_ld : D::p_ld;  // K's rows, room for P's

  detail::ForwardArgs a;
  int br = D::tile, bc = D::tile;  // smaller only to fit a block mask (the rest is padding)
  std::int64_t n_qtiles = 0;
  int scratch_level = 0;
  bool aligned_runs = false;  // every 4-element run of q, k, v starts 4-element aligned (see runs_aligned)

  static std::size_t scratch_bytes() {
    return sizeof(Acc) * D::tile * (qk_ld + k_ld + dp + D::red_ld) + 4 * 64;
  }

  KOKKOS_FUNCTION void operator()(const Member& team) const { for_query_tile<T, Packed>(*this, team, br); }

  /// f(lane, state) for each virtual thread of this team member.
  template <class F>
  KOKKOS_FORCEINLINE_FUNCTION static void each(const Member& team, State* st, F&& f) {
    for (int u = 0; u < vpt; ++u) f(Lane(team.team_rank() * vpt + u), st[u]);
  }

  KOKKOS_FUNCTION void q_tile(const Member& team, std::int64_t b, std::int64_t h, std::int64_t qt) const {
    const detail::Shape& s = a.shape;
    const std::int64_t hk = h / (s.heads / s.heads_kv);
    const std::int64_t row0 = qt * br;
    const int rows = static_cast<int>(Kokkos::min<std::int64_t>(br, s.seqlen_q - row0));

    ScratchArena arena(team, scratch_level);
    Acc* qs = arena.template take<Acc>(D::tile * qk_ld);
    Acc* ks = arena.template take<Acc>(D::tile * k_ld);  // K, then P
    Acc* vs = arena.template take<Acc>(D::tile * dp);
    Acc* red = arena.template take<Acc>(D::tile * D::red_ld);

    State st[vpt];
    load_tile(team, a.q, b, h, row0, rows, qs, qk_ld);
    each(team, st, [&](const Lane&, State& x) {
      KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
        x.m[i] = -Kokkos::Experimental::infinity_v<Acc>;
        x.l[i] = Acc(0);
        KFA_UNROLL for (int c = 0; c < 4 * NG; ++c) x.o[i][c] = Acc(0);
      }
    });

    const detail::VisibleRange keys = detail::visible_keys(row0, row0 + rows, s, a.score);
    TileWalk walk = TileWalk::rows(a.score.blocks, b, h, row0, keys, bc);
    for (TileStep tile; walk.next(tile);) {
      const std::int64_t col0 = tile.index * bc;
      const int cols = static_cast<int>(Kokkos::min<std::int64_t>(bc, s.seqlen_k - col0));
      team.team_barrier();  // the previous P V is done with ks / vs
      const detail::KvCache* kv = Packed && a.kv.enabled() ? &a.kv : nullptr;
      load_tile(team, a.k, b, hk, col0, cols, ks, qk_ld, kv);
      load_tile(team, a.v, b, hk, col0, cols, vs, dp, kv);
      team.team_barrier();
      const bool masked = tile.bits || cols < D::tile ||
                          !detail::tile_fully_visible(row0, row0 + rows, col0, col0 + cols, s, a.score);
      each(team, st, [&](const Lane& ln, State& x) {
        scores(ln, x, qs, ks, row0, rows, col0, cols, h, masked, tile.bits);
        KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
          Acc mx = x.s[i][0];
          KFA_UNROLL for (int j = 1; j < D::sn; ++j) mx = Kokkos::max(mx, x.s[i][j]);
          red[ln.row(i) * D::red_ld + ln.tc] = mx;
        }
      });
      team.team_barrier();
      each(team, st, [&](const Lane& ln, State& x) { softmax(ln, x, red, ks, b, h, row0, col0); });
      team.team_barrier();
      each(team, st, [&](const Lane& ln, State& x) { accumulate_pv(ln, x, ks, vs); });
    }
    team.team_barrier();
    each(team, st, [&](const Lane& ln, State& x) {
      KFA_UNROLL for (int i = 0; i < D::rm; ++i) red[ln.row(i) * D::red_ld + ln.tc] = x.l[i];
    });
    team.team_barrier();
    each(team, st, [&](const Lane& ln, State& x) { store_output(ln, x, red, b, h, row0, rows); });
  }

  /// dst[r * ld + c] = src[b, row0 + r, h, c] for r < n, c < head_dim; zero elsewhere in [64 x dp].
  /// Consecutive threads move consecutive 4-element runs of a row (coalesced loads, one 16-byte
  /// scratch store each); every thread walks down its column of runs, 8 loads in flight at a time
  /// (all loaded before any is stored: the compiler cannot tell scratch from global memory).
  /// `kv`: the rows are keys of a KV cache (each row's address from the page table when paged).
  KOKKOS_INLINE_FUNCTION void load_tile(const Member& team, const detail::Tensor4& src, std::int64_t b,
                                        std::int64_t h, std::int64_t row0, int n, Acc* dst, int ld,
                                        const detail::KvCache* kv = nullptr) const {
    constexpr int runs = dp / 4, step = D::threads / runs, passes = D::tile / step, group = 8;
    const int d = static_cast<int>(a.shape.head_dim);
    const bool paged = kv != nullptr && kv->paged();
    for (int u = 0; u < vpt; ++u) {
      const int t = team.team_rank() * vpt + u, r0 = t / runs, c = t % runs * 4;
      const T* base = static_cast<const T*>(src.data) + c;
      const T* in = base + offset(src, b, row0 + r0, h);
      for (int p0 = 0; p0 < passes; p0 += group) {
        Vec4<Acc> x[group];
        KFA_UNROLL for (int p = 0; p < group; ++p, in += step * src.stride_s) {
          const int r = r0 + (p0 + p) * step;
          if (paged && r < n) in = base + detail::key_row_offset(src, *kv, b, row0 + r, h);
          if (aligned_runs && r < n && c < d) {  // one 8-byte (16-bit types) or 16-byte load
            const Vec4<T> w = *reinterpret_cast<const Vec4<T>*>(in);
            KFA_UNROLL for (int i = 0; i < 4; ++i) x[p].v[i] = static_cast<Acc>(w.v[i]);
          } else {
            KFA_UNROLL for (int i = 0; i < 4; ++i) x[p].v[i] = r < n && c + i < d ? static_cast<Acc>(in[i]) : Acc(0);
          }
        }
        KFA_UNROLL for (int p = 0; p < group; ++p)
          *reinterpret_cast<Vec4<Acc>*>(dst + (r0 + (p0 + p) * step) * ld + c) = x[p];
      }
    }
  }

  /// x.s = the thread's 8 x 4 block of Q K^T with scale, softcap, ALiBi and (masked) the masks.
  KOKKOS_INLINE_FUNCTION void scores(const Lane& ln, State& x, const Acc* qs, const Acc* ks, std::int64_t row0,
                                     int rows, std::int64_t col0, int cols, std::int64_t h, bool masked,
                                     const std::uint32_t* bits) const {
    KFA_UNROLL for (int i = 0; i < D::rm; ++i)
      KFA_UNROLL for (int j = 0; j < D::sn; ++j) x.s[i][j] = Acc(0);
    for (int k = 0; k < dp; k += 4) {
      Vec4<Acc> kv[D::sn];
      KFA_UNROLL for (int j = 0; j < D::sn; ++j) kv[j] = load4(ks + ln.key(j) * qk_ld + k);
      KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
        const Vec4<Acc> qv = load4(qs + ln.row(i) * qk_ld + k);
        KFA_UNROLL for (int j = 0; j < D::sn; ++j)
          KFA_UNROLL for (int e = 0; e < 4; ++e) x.s[i][j] = madd(qv.v[e], kv[j].v[e], x.s[i][j]);
      }
    }
    const detail::ScoreSpec& sc = a.score;
    const Acc scale = static_cast<Acc>(sc.scale), cap = static_cast<Acc>(sc.softcap);
    const float slope = sc.alibi_slopes ? sc.alibi_slopes[h] : 0.0f;
    // Masks work in 32-bit tile coordinates (64-bit arithmetic per element costs registers). The
    // bit of (row, col) in a partial block's bitmask is that of detail::partial_bit; the tile lies
    // in one mask block, so the offsets are taken once (sequences shorter than 2^31).
    const int block_k = static_cast<int>(sc.blocks.block_k);
    const int bit0 = bits ? static_cast<int>(row0) % static_cast<int>(sc.blocks.block_q) * block_k +
                                static_cast<int>(col0) % block_k
                          : 0;
    KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
      const std::int64_t row = row0 + ln.row(i);
      KFA_UNROLL for (int j = 0; j < D::sn; ++j) {
        Acc& v = x.s[i][j];
        v *= scale;
        if (cap != Acc(0)) v = cap * Kokkos::tanh(v / cap);
        if (sc.alibi_slopes) v += detail::alibi_bias<Acc>(slope, row, col0 + ln.key(j), a.shape);
      }
      if (!masked) continue;  // the common case: a tile inside every row's window
      const detail::VisibleRange vis = detail::visible_keys(row, a.shape, sc);
      const int lo = static_cast<int>(Kokkos::clamp<std::int64_t>(vis.begin - col0, 0, D::tile));
      const int hi = static_cast<int>(Kokkos::clamp<std::int64_t>(vis.end - col0, 0, cols));
      const bool check_bits = bits && ln.row(i) < rows;  // padding rows may lie outside the mask block
      KFA_UNROLL for (int j = 0; j < D::sn; ++j) {
        const int c = ln.key(j), e = bit0 + ln.row(i) * block_k + c;
        if (c < lo || c >= hi || (check_bits && !((bits[e >> 5] >> (e & 31)) & 1u)))
          x.s[i][j] = -Kokkos::Experimental::infinity_v<Acc>;
      }
    }
  }

  /// Online softmax step of the thread's rows; the probabilities go to P (scratch, row-major).
  KOKKOS_INLINE_FUNCTION void softmax(const Lane& ln, State& x, const Acc* red, Acc* ps, std::int64_t b,
                                      std::int64_t h, std::int64_t row0, std::int64_t col0) const {
    const Dropout dropout(a.score);
    KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
      Acc mx = x.m[i];
      KFA_UNROLL for (int t = 0; t < 16; t += 4) {
        const Vec4<Acc> part = load4(red + ln.row(i) * D::red_ld + t);
        KFA_UNROLL for (int e = 0; e < 4; ++e) mx = Kokkos::max(mx, part.v[e]);
      }
      if (mx == -Kokkos::Experimental::infinity_v<Acc>) {  // nothing visible yet in this row
        KFA_UNROLL for (int j = 0; j < D::sn; ++j) x.s[i][j] = Acc(0);
      } else {
        const Acc alpha = exp_nonpositive(x.m[i] - mx);
        Acc sum = Acc(0);
        KFA_UNROLL for (int j = 0; j < D::sn; ++j) {
          x.s[i][j] = exp_nonpositive(x.s[i][j] - mx);
          sum += x.s[i][j];
        }
        x.l[i] = x.l[i] * alpha + sum;
        x.m[i] = mx;
        KFA_UNROLL for (int c = 0; c < 4 * NG; ++c) x.o[i][c] *= alpha;
        if (dropout.on)  // after the sum: dropout acts on P V only
          KFA_UNROLL for (int j = 0; j < D::sn; ++j)
            if (!keeps(dropout, b, h, row0 + ln.row(i), col0 + ln.key(j))) x.s[i][j] = Acc(0);
      }
      KFA_UNROLL for (int j = 0; j < D::sn; ++j) ps[ln.row(i) * D::p_ld + ln.key(j)] = x.s[i][j];
    }
  }

  /// Dropout::keeps with the Philox word picked by selects (an indexed pick would go to local memory).
  KOKKOS_INLINE_FUNCTION static bool keeps(const Dropout& dropout, std::int64_t b, std::int64_t h, std::int64_t row,
                                           std::int64_t col) {
    const detail::Philox4 r = detail::dropout_words(dropout.key, b + dropout.batch_base, h, row, col);
    const int c = static_cast<int>(col & 15), q = detail::dropout_word_of(c);
    const std::uint32_t w = q == 0 ? r.w[0] : q == 1 ? r.w[1] : q == 2 ? r.w[2] : r.w[3];
    return ((w >> (8 * detail::dropout_byte_of(c))) & 0xffu) >= dropout.threshold;
  }

  /// x.o += P V over the tile's 64 keys (padding keys have P = 0 and V = 0). Per 4 keys and 64 columns:
  /// 4 V runs, then one P run per row (P is re-read per 64 columns: fewer live registers at head_dim 256).
  KOKKOS_INLINE_FUNCTION void accumulate_pv(const Lane& ln, State& x, const Acc* ps, const Acc* vs) const {
    for (int k = 0; k < D::tile; k += 4)
      KFA_UNROLL for (int g = 0; g < NG; ++g) {
        Vec4<Acc> vv[4];
        KFA_UNROLL for (int kk = 0; kk < 4; ++kk) vv[kk] = load4(vs + (k + kk) * dp + ln.col(g));
        KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
          const Vec4<Acc> pv = load4(ps + ln.row(i) * D::p_ld + k);
          KFA_UNROLL for (int kk = 0; kk < 4; ++kk)
            KFA_UNROLL for (int e = 0; e < 4; ++e)
              x.o[i][4 * g + e] = madd(pv.v[kk], vv[kk].v[e], x.o[i][4 * g + e]);
        }
      }
  }

  /// O = acc / rowsum (0 for rows that see no key) and LSE = ln(sum) + max (-inf likewise).
  KOKKOS_INLINE_FUNCTION void store_output(const Lane& ln, const State& x, const Acc* red, std::int64_t b,
                                           std::int64_t h, std::int64_t row0, int rows) const {
    T* o = static_cast<T*>(a.o.data);
    Acc* lse = static_cast<Acc*>(a.lse.data);
    const int d = static_cast<int>(a.shape.head_dim);
    const Acc keep_scale = static_cast<Acc>(Dropout(a.score).keep_scale);
    KFA_UNROLL for (int i = 0; i < D::rm; ++i) {
      const int r = ln.row(i);
      if (r >= rows) continue;
      Acc l = Acc(0);
      KFA_UNROLL for (int t = 0; t < 16; t += 4) {
        const Vec4<Acc> part = load4(red + r * D::red_ld + t);
        KFA_UNROLL for (int e = 0; e < 4; ++e) l += part.v[e];
      }
      const Acc inv = l > Acc(0) ? keep_scale / l : Acc(0);
      T* orow = o + offset(a.o, b, row0 + r, h);
      KFA_UNROLL for (int g = 0; g < NG; ++g)
        KFA_UNROLL for (int e = 0; e < 4; ++e)
          if (ln.col(g) + e < d) orow[ln.col(g) + e] = static_cast<T>(x.o[i][4 * g + e] * inv);
      if (ln.tc == 0)
        lse[b * a.lse.stride_b + h * a.lse.stride_h + (row0 + r) * a.lse.stride_s] =
            l > Acc(0) ? x.m[i] + Kokkos::log(l) : -Kokkos::Experimental::infinity_v<Acc>;
    }
  }
};

/// True when head_dim, the strides and the base pointers of q, k, v are multiples of 4 elements,
/// so that the 4-element runs of load_tile are aligned vectors.
template <class T>
bool runs_aligned(const detail::ForwardArgs& a) {
  auto ok = [](const detail::Tensor4& t) {
    return reinterpret_cast<std::uintptr_t>(t.data) % sizeof(Vec4<T>) == 0 && t.stride_b % 4 == 0 &&
           t.stride_s % 4 == 0 && t.stride_h % 4 == 0;
  };
  return a.shape.head_dim % 4 == 0 && ok(a.q) && ok(a.k) && ok(a.v);
}

template <class ExecSpace, class T, int NG, bool Packed>
void run_device_forward(const ExecSpace& exec, const detail::ForwardArgs& args) {
  using K = DeviceForwardKernel<ExecSpace, T, NG, Packed>;
  K kernel{args};
  kernel.aligned_runs = runs_aligned<T>(args);
  fit_tiles_to_block_mask(kernel.br, kernel.bc, args.score.blocks);
  kernel.n_qtiles = (args.shape.seqlen_q + kernel.br - 1) / kernel.br;
  const std::int64_t league = args.shape.batch * args.shape.heads * kernel.n_qtiles;
  using Policy = Kokkos::TeamPolicy<ExecSpace, Kokkos::LaunchBounds<DeviceTile::threads, 1>>;
  Policy policy(exec, league, DeviceTile::threads / K::vpt);
  kernel.scratch_level = K::scratch_bytes() <= std::size_t(policy.scratch_size_max(0)) ? 0 : 1;
  policy.set_scratch_size(kernel.scratch_level, Kokkos::PerTeam(K::scratch_bytes()));
  Kokkos::parallel_for("kfa::forward", policy, kernel);
}

template <class ExecSpace, class T, int NG>
void run_device_forward(const ExecSpace& exec, const detail::ForwardArgs& args) {
  if (args.varlen.enabled() || args.kv.enabled()) run_device_forward<ExecSpace, T, NG, true>(exec, args);
  else run_device_forward<ExecSpace, T, NG, false>(exec, args);
}

/// The device forward for head_dim (padded to 64, 128 or 256: the register arrays need compile-time sizes).
template <class ExecSpace, class T>
void run_device_forward(const ExecSpace& exec, const detail::ForwardArgs& args) {
  if (args.shape.head_dim <= 64) run_device_forward<ExecSpace, T, 1>(exec, args);
  else if (args.shape.head_dim <= 128) run_device_forward<ExecSpace, T, 2>(exec, args);
  else run_device_forward<ExecSpace, T, 4>(exec, args);
}

}  // namespace kfa::portable
