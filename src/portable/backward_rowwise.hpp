#pragma once
// The backward's two element-wise passes around the tile kernels: D = rowsum(dO * O) before, and
// the conversion of the dQ accumulator to the output type after.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "portable/math.hpp"
#include "portable/tile_io.hpp"

namespace kfa::portable {

/// delta[(b * heads + h) * seqlen_q + i] = sum_c dO[b, i, h, c] * O[b, i, h, c], in Acc.
template <class ExecSpace, class T>
void compute_delta(const ExecSpace& exec, const detail::BackwardArgs& a, acc_t<T>* delta) {
  using Acc = acc_t<T>;
  const detail::Shape s = a.shape;
  const detail::Tensor4 dout = a.dout, out = a.o;
  const T* dop = static_cast<const T*>(dout.data);
  const T* op = static_cast<const T*>(out.data);
  Kokkos::parallel_for("kfa::backward::delta", Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * s.seqlen_q),
      KOKKOS_LAMBDA(std::int64_t r) {
        const std::int64_t i = r % s.seqlen_q, h = (r / s.seqlen_q) % s.heads, b = r / (s.seqlen_q * s.heads);
        const T* x = dop + offset(dout, b, i, h);
        const T* y = op + offset(out, b, i, h);
        Acc sum = Acc(0);
        for (std::int64_t c = 0; c < s.head_dim; ++c) sum = madd(static_cast<Acc>(x[c]), static_cast<Acc>(y[c]), sum);
        delta[r] = sum;
      });
}

template <class ExecSpace, class Acc>
void fill_zero(const ExecSpace& exec, Acc* p, std::int64_t n) {
  Kokkos::parallel_for("kfa::backward::zero", Kokkos::RangePolicy<ExecSpace>(exec, 0, n),
                       KOKKOS_LAMBDA(std::int64_t e) { p[e] = Acc(0); });
}

/// dq[b, i, h, c] = scale * acc[((b * heads + h) * seqlen_q + i) * head_dim + c].
template <class ExecSpace, class T>
void store_dq(const ExecSpace& exec, const detail::BackwardArgs& a, const acc_t<T>* acc) {
  using Acc = acc_t<T>;
  const detail::Shape s = a.shape;
  const detail::Tensor4 dq = a.dq;
  T* dqp = static_cast<T*>(dq.data);
  const Acc scale = static_cast<Acc>(a.score.scale);
  Kokkos::parallel_for("kfa::backward::store_dq",
      Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * s.seqlen_q),
      KOKKOS_LAMBDA(std::int64_t r) {
        const std::int64_t i = r % s.seqlen_q, h = (r / s.seqlen_q) % s.heads, b = r / (s.seqlen_q * s.heads);
        T* dst = dqp + offset(dq, b, i, h);
        const Acc* src = acc + r * s.head_dim;
        for (std::int64_t c = 0; c < s.head_dim; ++c) dst[c] = static_cast<T>(scale * src[c]);
      });
}

}  // namespace kfa::portable
