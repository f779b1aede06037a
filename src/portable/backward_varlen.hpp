#pragma once
// The backward's element-wise passes for packed sequences. Per-(sequence, head) buffers are packed
// too: sequence b's D and dQ-accumulator rows start at cu_seqlens_q[b] * heads, ordered (head, row),
// which is what the tile kernels index when they run sequence b alone as batch 0.
#include <Kokkos_Core.hpp>

#include <cstdint>

#include "kfa/detail/args.hpp"
#include "portable/math.hpp"
#include "portable/tile_io.hpp"

namespace kfa::portable {

/// Calls f(b, h, i, packed_row, buffer_row) for every row of every sequence (launched over the
/// maximal length; rows past a sequence's end do nothing).
template <class ExecSpace, class F>
void for_each_packed_row(const ExecSpace& exec, const char* name, const detail::BackwardArgs& a, const F& f) {
  const detail::Shape s = a.shape;
  const detail::Varlen vl = a.varlen;
  Kokkos::parallel_for(name, Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * s.seqlen_q),
      KOKKOS_LAMBDA(std::int64_t r) {
        const std::int64_t i = r % s.seqlen_q, h = (r / s.seqlen_q) % s.heads, b = r / (s.seqlen_q * s.heads);
        const std::int64_t q0 = vl.cu_seqlens_q[b], len = vl.cu_seqlens_q[b + 1] - q0;
        if (i < len) f(h, q0 + i, q0 * s.heads + h * len + i);
      });
}

/// D = rowsum(dO * O) of every packed row.
template <class ExecSpace, class T>
void compute_delta_varlen(const ExecSpace& exec, const detail::BackwardArgs& a, acc_t<T>* delta) {
  using Acc = acc_t<T>;
  const detail::Tensor4 dout = a.dout, out = a.o;
  const std::int64_t d = a.shape.head_dim;
  const T* dop = static_cast<const T*>(dout.data);
  const T* op = static_cast<const T*>(out.data);
  for_each_packed_row(exec, "kfa::backward::delta_varlen", a,
      KOKKOS_LAMBDA(std::int64_t h, std::int64_t row, std::int64_t slot) {
        const T* x = dop + offset(dout, 0, row, h);
        const T* y = op + offset(out, 0, row, h);
        Acc sum = Acc(0);
        for (std::int64_t c = 0; c < d; ++c) sum = madd(static_cast<Acc>(x[c]), static_cast<Acc>(y[c]), sum);
        delta[slot] = sum;
      });
}

/// dq = scale * accumulator, for every packed row.
template <class ExecSpace, class T>
void store_dq_varlen(const ExecSpace& exec, const detail::BackwardArgs& a, const acc_t<T>* acc) {
  using Acc = acc_t<T>;
  const detail::Tensor4 dq = a.dq;
  const std::int64_t d = a.shape.head_dim;
  T* dqp = static_cast<T*>(dq.data);
  const Acc scale = static_cast<Acc>(a.score.scale);
  for_each_packed_row(exec, "kfa::backward::store_dq_varlen", a,
      KOKKOS_LAMBDA(std::int64_t h, std::int64_t row, std::int64_t slot) {
        T* dst = dqp + offset(dq, 0, row, h);
        const Acc* src = acc + slot * d;
        for (std::int64_t c = 0; c < d; ++c) dst[c] = static_cast<T>(scale * src[c]);
      });
}

}  // namespace kfa::portable
