#pragma once
// C (+)= A * B on team scratch tiles, split over the team's threads in RM x RN register blocks.
// The fixed-size inner loops are what the host compilers vectorize; on GPUs each thread owns
// whole blocks. All extents are multiples of the block sizes (tiles are zero-padded).
#include <Kokkos_Core.hpp>

#include "portable/host_gemm.hpp"
#include "portable/math.hpp"

namespace kfa::portable {

template <int RM, int RN, bool Accumulate, class Member, class Acc>
KOKKOS_INLINE_FUNCTION void tile_gemm(const Member& team, int m, int n, int kdim, const Acc* a, int lda,
                                      const Acc* b, int ldb, Acc* c, int ldc) {
#ifdef KFA_HOST_SIMD
  // CPUs: explicitly vectorized register blocks (same arithmetic, see host_gemm.hpp).
  KOKKOS_IF_ON_HOST((
    if (host::fits<Acc>(m, n)) {
      constexpr int HRM = host::Shape<Acc>::rm;
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, m / HRM), [&](int blk) {
        host::gemm_rows<Accumulate>(blk * HRM, blk * HRM + HRM, n, kdim, a, lda, b, ldb, c, ldc);
      });
      return;
    }
  ))
#endif
  const int nbn = n / RN;
  Kokkos::parallel_for(Kokkos::TeamThreadRange(team, (m / RM) * nbn), [&](int blk) {
    const int r0 = (blk / nbn) * RM, c0 = (blk % nbn) * RN;
    Acc acc[RM][RN];
    for (int i = 0; i < RM; ++i)
      for (int j = 0; j < RN; ++j) acc[i][j] = Accumulate ? c[(r0 + i) * ldc + c0 + j] : Acc(0);
    for (int kk = 0; kk < kdim; ++kk) {
      const Acc* brow = b + kk * ldb + c0;
      for (int i = 0; i < RM; ++i) {
        const Acc ai = a[(r0 + i) * lda + kk];
#pragma omp simd
        for (int j = 0; j < RN; ++j) acc[i][j] = madd(ai, brow[j], acc[i][j]);
      }
    }
    for (int i = 0; i < RM; ++i)
      for (int j = 0; j < RN; ++j) c[(r0 + i) * ldc + c0 + j] = acc[i][j];
  });
}

}  // namespace kfa::portable
