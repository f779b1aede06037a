#pragma once
// Merge of attention states (kfa::merge_attention_states), written once for every Kokkos backend.
//
// One team thread per (batch, seq, head) row, its vector lanes over head_dim (lane l owns the columns
// l, l + V, l + 2V, ...: a GPU warp reads 32 consecutive elements per load; on hosts V = 1 and a
// thread runs K consecutive columns, a loop that vectorizes). Per row: m = max of the parts' LSEs,
// sum = sum_p exp(lse_p - m), then per block of V * K columns o = (sum_p exp(lse_p - m) o_p) / sum, in
// the math type. Parts with lse_p = -inf are skipped (o_p not read). The LSE is written after a team
// barrier, once every lane of the row has read it: in the in-place form it is also an input.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <limits>

#include "kfa/detail/merge_args.hpp"
#include "portable/math.hpp"
#include "portable/tile_config.hpp"

namespace kfa::portable {

/// DeviceShape: the GPU launch shape (32 lanes per row, K = 8); tests run it on host spaces too.
template <class ExecSpace, class T, bool DeviceShape>
struct MergeKernel {
  using Acc = acc_t<T>;  // also the LSE type
  using Policy = Kokkos::TeamPolicy<ExecSpace>;
  using Member = typename Policy::member_type;
  static constexpr int K = DeviceShape ? 8 : 32;  // columns per lane per block

  detail::MergeArgs a;
  std::int64_t row_begin = 0, row_end = 0;  // rows [row_begin, row_end) of this launch
  int rows_per_thread = 1;                  // host teams run several rows one after the other
  int vector = 1;                           // vector lanes per row (the policy's vector length)

  KOKKOS_INLINE_FUNCTION const Acc& lse_at(const detail::Tensor3& t, std::int64_t p_off, std::int64_t b,
                                           std::int64_t h, std::int64_t s) const {
    return static_cast<const Acc*>(t.data)[p_off + b * t.stride_b + h * t.stride_h + s * t.stride_s];
  }

  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    constexpr Acc neg_inf = -Kokkos::Experimental::infinity_v<Acc>;
    const int V = vector;
    const std::int64_t team_rows = static_cast<std::int64_t>(team.team_size()) * rows_per_thread;
    const std::int64_t first = row_begin + static_cast<std::int64_t>(team.league_rank()) * team_rows;
    for (int r = 0; r < rows_per_thread; ++r) {
      const std::int64_t row = first + static_cast<std::int64_t>(r) * team.team_size() + team.team_rank();
      const bool active = row < row_end;
      // rows in [batch, seq, head] order, the order of o in memory for [b, s, h, d] layouts
      const std::int64_t h = active ? row % a.heads : 0;
      const std::int64_t s = active ? (row / a.heads) % a.seqlen : 0;
      const std::int64_t b = active ? row / (a.heads * a.seqlen) : 0;
      Acc lse_new = neg_inf;
      if (active) {
        const Acc lse_acc = a.accumulate ? lse_at(a.lse, 0, b, h, s) : neg_inf;
        Acc m = lse_acc;
        for (std::int64_t p = 0; p < a.parts; ++p) {
          const Acc l = lse_at(a.lse_parts, p * a.lse_parts_stride_p, b, h, s);
          m = (l > m || l != l) ? l : m;  // a NaN LSE stays NaN and spreads to the row
        }
        T* out = static_cast<T*>(a.o.data) + b * a.o.stride_b + s * a.o.stride_s + h * a.o.stride_h;
        if (m == neg_inf) {  // no part saw a key
          Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, V), [&](int lane) {
            for (std::int64_t c = lane; c < a.head_dim; c += V) out[c] = static_cast<T>(Acc(0));
          });
        } else {
          Acc sum = lse_acc != neg_inf ? Kokkos::exp(lse_acc - m) : Acc(0);
          for (std::int64_t p = 0; p < a.parts; ++p) {
            const Acc l = lse_at(a.lse_parts, p * a.lse_parts_stride_p, b, h, s);
            if (l != neg_inf) sum += Kokkos::exp(l - m);
          }
          lse_new = m + Kokkos::log(sum);
          const Acc inv = Acc(1) / sum;
          const T* part0 = static_cast<const T*>(a.o_parts.data) + b * a.o_parts.stride_b +
                           s * a.o_parts.stride_s + h * a.o_parts.stride_h;
          Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, V), [&](int lane) {
            for (std::int64_t c0 = lane; c0 < a.head_dim; c0 += std::int64_t(V) * K) {
              Acc acc[K];
              for (int k = 0; k < K; ++k) acc[k] = 0;
              if (lse_acc != neg_inf) {
                const Acc w = Kokkos::exp(lse_acc - m);
                for (int k = 0; k < K; ++k) {
                  const std::int64_t c = c0 + std::int64_t(k) * V;
                  if (c < a.head_dim) acc[k] = w * static_cast<Acc>(out[c]);
                }
              }
              for (std::int64_t p = 0; p < a.parts; ++p) {
                const Acc l = lse_at(a.lse_parts, p * a.lse_parts_stride_p, b, h, s);
                if (l == neg_inf) continue;
                const Acc w = Kokkos::exp(l - m);
                const T* op = part0 + p * a.o_parts_stride_p;
                for (int k = 0; k < K; ++k) {
                  const std::int64_t c = c0 + std::int64_t(k) * V;
                  if (c < a.head_dim) acc[k] = madd(w, static_cast<Acc>(op[c]), acc[k]);
                }
              }
              for (int k = 0; k < K; ++k) {
                const std::int64_t c = c0 + std::int64_t(k) * V;
                if (c < a.head_dim) out[c] = static_cast<T>(acc[k] * inv);
              }
            }
          });
        }
      }
      // every lane of every row has read its LSEs (lse is an input too when accumulating)
      team.team_barrier();
      if (active)
        Kokkos::single(Kokkos::PerThread(team), [&]() {
          static_cast<Acc*>(a.lse.data)[b * a.lse.stride_b + h * a.lse.stride_h + s * a.lse.stride_s] = lse_new;
        });
    }
  }
};

/// Launches the merge on `exec` (asynchronous): GPU spaces run 256-thread teams of 32-lane rows (fewer
/// lanes for head_dim < 32), host spaces one-thread teams of 16 rows. The device shape on a host space
/// (tests) runs one-thread teams whose lanes are a serial loop.
template <class ExecSpace, class T, bool DeviceShape = !runs_on_host<ExecSpace>>
void run_merge(const ExecSpace& exec, const detail::MergeArgs& a) {
  using Kernel = MergeKernel<ExecSpace, T, DeviceShape>;
  using Policy = typename Kernel::Policy;
  const std::int64_t rows = a.batch * a.seqlen * a.heads;
  int vector = 1, team_size = 1, rows_per_thread = 16;
  if constexpr (DeviceShape) {
    while (vector < 32 && vector < a.head_dim) vector *= 2;
    team_size = runs_on_host<ExecSpace> ? 1 : 256 / vector;
    rows_per_thread = 1;
  }
  const std::int64_t team_rows = std::int64_t(team_size) * rows_per_thread;
  // league sizes are int: launch at most 2^30 teams at a time
  const std::int64_t max_rows = (std::int64_t(1) << 30) * team_rows;
  for (std::int64_t begin = 0; begin < rows; begin += max_rows) {
    Kernel k;
    k.a = a;
    k.row_begin = begin;
    k.row_end = begin + max_rows < rows ? begin + max_rows : rows;
    k.rows_per_thread = rows_per_thread;
    k.vector = vector;
    const int league = static_cast<int>((k.row_end - begin + team_rows - 1) / team_rows);
    Kokkos::parallel_for("kfa::merge_attention_states", Policy(exec, league, team_size, vector), k);
  }
}

}  // namespace kfa::portable
