#pragma once
// Standard attention backward over materialized matrices, as autograd runs it through unfused
// attention: P = softmax(S) and dS live as two [batch * heads * seqlen_q, seqlen_k] arrays in the
// input precision, each product rounds to the input precision, and D = rowsum(P * dP) comes from
// those arrays. It is the baseline of the benchmarks and the precision yardstick of the tests.
#include <Kokkos_Core.hpp>

#include "block_mask_device.hpp"
#include "kfa/detail/args.hpp"
#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/philox.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "kfa/reference.hpp"
#include "portable/math.hpp"
#include "portable/tile_io.hpp"
#include "score_spec.hpp"

namespace kfa::reference::detail {

using kfa::detail::BackwardArgs;

template <class ExecSpace, class T>
void run_standard_backward(const ExecSpace& exec, const BackwardArgs& a) {
  using Acc = portable::acc_t<T>;
  using portable::madd;
  using portable::offset;
  using Mem = typename ExecSpace::memory_space;
  constexpr int dmax = static_cast<int>(kfa::detail::max_head_dim);
  const auto s = a.shape;
  const std::int64_t rows = s.batch * s.heads * s.seqlen_q, nk = s.seqlen_k, d = s.head_dim;
  const std::int64_t group = s.heads / s.heads_kv;
  Kokkos::View<T**, Mem> p(Kokkos::view_alloc(exec, Kokkos::WithoutInitializing, "kfa::reference::probabilities"), rows, nk);
  Kokkos::View<T**, Mem> ds(Kokkos::view_alloc(exec, Kokkos::WithoutInitializing, "kfa::reference::score_grads"), rows, nk);
  // row r = (b * heads + h) * seqlen_q + i
  auto row_index = KOKKOS_LAMBDA(std::int64_t r, std::int64_t& b, std::int64_t& h, std::int64_t& i) {
    i = r % s.seqlen_q;
    h = (r / s.seqlen_q) % s.heads;
    b = r / (s.seqlen_q * s.heads);
  };
  const T* q = static_cast<const T*>(a.q.data);
  const T* k = static_cast<const T*>(a.k.data);
  const T* v = static_cast<const T*>(a.v.data);
  const T* dout = static_cast<const T*>(a.dout.data);
  const Acc* lse = static_cast<const Acc*>(a.lse.data);
  T* dq = static_cast<T*>(a.dq.data);
  T* dk = static_cast<T*>(a.dk.data);
  T* dv = static_cast<T*>(a.dv.data);
  const auto sc = a.score;
  const auto aq = a.q, ak = a.k, av = a.v, ado = a.dout, adq = a.dq, adk = a.dk, adv = a.dv;
  const auto al = a.lse;
  // x = scale * q.k, the argument of the softcap
  auto scaled_dot = KOKKOS_LAMBDA(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j)->Acc {
    const T* qr = q + offset(aq, b, i, h);
    const T* kr = k + offset(ak, b, j, h / group);
    Acc x = 0;
    for (std::int64_t c = 0; c < d; ++c) x = madd(static_cast<Acc>(qr[c]), static_cast<Acc>(kr[c]), x);
    return x * static_cast<Acc>(sc.scale);
  };
  // Dropout: the forward used P * Z with Z = 1 / (1 - p) where kept, 0 where dropped.
  const kfa::detail::DropoutKey dkey = kfa::detail::derive_dropout_key(sc.seed, sc.offset);
  const std::uint32_t dthreshold = kfa::detail::dropout_threshold(sc.dropout_p);
  const Acc keep_scale = static_cast<Acc>(kfa::detail::dropout_keep_scale(sc.dropout_p));
  auto z = KOKKOS_LAMBDA(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j)->Acc {
    if (sc.dropout_p == 0.0f) return Acc(1);
    return kfa::detail::dropout_keep(dkey, dthreshold, b + sc.batch_base, h, i, j) ? keep_scale : Acc(0);
  };
  // Pass 1: P = exp(S - LSE), with S rounded to T as the forward materialized it.
  Kokkos::parallel_for("kfa::reference::backward_p", Kokkos::RangePolicy<ExecSpace>(exec, 0, rows * nk),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t r = e / nk, j = e % nk;
        std::int64_t b, h, i;
        row_index(r, b, h, i);
        if (!kfa::detail::key_visible(i, j, s, sc) || !kfa::detail::block_mask_allows(sc.blocks, b, h, i, j)) {
          p(r, j) = T(0);
          return;
        }
        Acc x = scaled_dot(b, h, i, j);
        if (sc.softcap != 0.0f) x = Acc(sc.softcap) * Kokkos::tanh(x / Acc(sc.softcap));
        if (sc.alibi_slopes) x += kfa::detail::alibi_bias<Acc>(sc.alibi_slopes[h], i, j, s);
        const Acc l = lse[b * al.stride_b + h * al.stride_h + i * al.stride_s];
        p(r, j) = static_cast<T>(Kokkos::exp(static_cast<Acc>(static_cast<T>(x)) - l));
      });
  // Pass 2: dP = dO V^T.
  Kokkos::parallel_for("kfa::reference::backward_dp", Kokkos::RangePolicy<ExecSpace>(exec, 0, rows * nk),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t r = e / nk, j = e % nk;
        std::int64_t b, h, i;
        row_index(r, b, h, i);
        const T* dr = dout + offset(ado, b, i, h);
        const T* vr = v + offset(av, b, j, h / group);
        Acc x = 0;
        for (std::int64_t c = 0; c < d; ++c) x = madd(static_cast<Acc>(dr[c]), static_cast<Acc>(vr[c]), x);
        ds(r, j) = static_cast<T>(x);
      });
  // Pass 3: dS = P * (dP - rowsum(P * dP)), times the softcap's derivative, in place (dP = Z * dO V^T).
  Kokkos::parallel_for("kfa::reference::backward_ds", Kokkos::RangePolicy<ExecSpace>(exec, 0, rows),
      KOKKOS_LAMBDA(std::int64_t r) {
        std::int64_t b, h, i;
        row_index(r, b, h, i);
        Acc dd = 0;
        for (std::int64_t j = 0; j < nk; ++j)
          dd = madd(static_cast<Acc>(p(r, j)), z(b, h, i, j) * static_cast<Acc>(ds(r, j)), dd);
        for (std::int64_t j = 0; j < nk; ++j) {
          Acc g = static_cast<Acc>(p(r, j)) * (z(b, h, i, j) * static_cast<Acc>(ds(r, j)) - dd);
          if (sc.softcap != 0.0f && g != Acc(0)) {
            const Acc t = Kokkos::tanh(scaled_dot(b, h, i, j) / Acc(sc.softcap));
            g *= Acc(1) - t * t;
          }
          ds(r, j) = static_cast<T>(g);
        }
      });
  // Pass 4: dQ = scale * dS K.
  Kokkos::parallel_for("kfa::reference::backward_dq", Kokkos::RangePolicy<ExecSpace>(exec, 0, rows),
      KOKKOS_LAMBDA(std::int64_t r) {
        std::int64_t b, h, i;
        row_index(r, b, h, i);
        Acc acc[dmax];
        for (std::int64_t c = 0; c < d; ++c) acc[c] = 0;
        for (std::int64_t j = 0; j < nk; ++j) {
          const Acc g = static_cast<Acc>(ds(r, j));
          const T* kr = k + offset(ak, b, j, h / group);
          for (std::int64_t c = 0; c < d; ++c) acc[c] = madd(g, static_cast<Acc>(kr[c]), acc[c]);
        }
        T* out = dq + offset(adq, b, i, h);
        for (std::int64_t c = 0; c < d; ++c) out[c] = static_cast<T>(acc[c] * static_cast<Acc>(sc.scale));
      });
  // Pass 5: dK = scale * dS^T Q and dV = P^T dO, summed over the query heads of each KV head. A thread
  // takes kb adjacent keys, so that each row of P and dS is read kb entries at a time.
  constexpr int kb = 8;
  const std::int64_t nblocks = (nk + kb - 1) / kb;
  Kokkos::parallel_for("kfa::reference::backward_dkdv",
      Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads_kv * nblocks), KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t j0 = (e % nblocks) * kb, hk = (e / nblocks) % s.heads_kv, b = e / (nblocks * s.heads_kv);
        const int nj = static_cast<int>(nk - j0 < kb ? nk - j0 : kb);
        Acc gk[kb][dmax], gv[kb][dmax];
        for (int jj = 0; jj < nj; ++jj)
          for (std::int64_t c = 0; c < d; ++c) gk[jj][c] = gv[jj][c] = 0;
        for (std::int64_t h = hk * group; h < (hk + 1) * group; ++h)
          for (std::int64_t i = 0; i < s.seqlen_q; ++i) {
            const std::int64_t r = (b * s.heads + h) * s.seqlen_q + i;
            const T* qr = q + offset(aq, b, i, h);
            const T* dr = dout + offset(ado, b, i, h);
            for (int jj = 0; jj < nj; ++jj) {
              const Acc g = static_cast<Acc>(ds(r, j0 + jj)), pr = static_cast<Acc>(p(r, j0 + jj)) * z(b, h, i, j0 + jj);
              for (std::int64_t c = 0; c < d; ++c) {
                gk[jj][c] = madd(g, static_cast<Acc>(qr[c]), gk[jj][c]);
                gv[jj][c] = madd(pr, static_cast<Acc>(dr[c]), gv[jj][c]);
              }
            }
          }
        for (int jj = 0; jj < nj; ++jj) {
          T* ok = dk + offset(adk, b, j0 + jj, hk);
          T* ov = dv + offset(adv, b, j0 + jj, hk);
          for (std::int64_t c = 0; c < d; ++c) {
            ok[c] = static_cast<T>(gk[jj][c] * static_cast<Acc>(sc.scale));
            ov[c] = static_cast<T>(gv[jj][c]);
          }
        }
      });
}

template <class ExecSpace>
void attention_backward_dispatch(const ExecSpace& exec, const BackwardArgs& args, const Params& params) {
  BackwardArgs a = args;
  a.score = kfa::detail::resolve_score(params, a.shape);
  kfa::detail::resolve_block_mask(exec, params, a.shape, a.score);
  auto slopes = kfa::detail::device_slopes(exec, params);
  a.score.alibi_slopes = slopes.data();
  switch (a.dtype) {
    case kfa::detail::DType::f32: run_standard_backward<ExecSpace, float>(exec, a); break;
    case kfa::detail::DType::f64: run_standard_backward<ExecSpace, double>(exec, a); break;
    case kfa::detail::DType::f16: run_standard_backward<ExecSpace, Kokkos::Experimental::half_t>(exec, a); break;
    case kfa::detail::DType::bf16: run_standard_backward<ExecSpace, Kokkos::Experimental::bhalf_t>(exec, a); break;
  }
  exec.fence("kfa::reference::attention_backward: release the materialized matrices");
}

}  // namespace kfa::reference::detail

#define KFA_INSTANTIATE_REFERENCE_BACKWARD(SPACE)                                                  \
  template void kfa::reference::detail::attention_backward_dispatch<SPACE>(                         \
      const SPACE&, const kfa::detail::BackwardArgs&, const kfa::Params&);
