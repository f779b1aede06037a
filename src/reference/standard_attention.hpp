#pragma once
// Standard attention in three passes over a materialized score matrix (S = QK^T, softmax, O = PV),
// stored in the input precision. Supports the same masks and score modifiers as the fused path.
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

using kfa::detail::ForwardArgs;

template <class ExecSpace, class T>
void run_standard(const ExecSpace& exec, const ForwardArgs& a) {
  using Acc = portable::acc_t<T>;
  using portable::offset;
  const auto s = a.shape;
  const std::int64_t rows = s.batch * s.heads * s.seqlen_q, nk = s.seqlen_k, d = s.head_dim;
  const std::int64_t group = s.heads / s.heads_kv;
  Kokkos::View<T**, typename ExecSpace::memory_space> p(Kokkos::view_alloc(exec, Kokkos::WithoutInitializing, "kfa::reference::scores"), rows, nk);
  auto row_index = KOKKOS_LAMBDA(std::int64_t r, std::int64_t& b, std::int64_t& h, std::int64_t& i) {
    i = r % s.seqlen_q;
    h = (r / s.seqlen_q) % s.heads;
    b = r / (s.seqlen_q * s.heads);
  };
  const T* q = static_cast<const T*>(a.q.data);
  const T* k = static_cast<const T*>(a.k.data);
  const T* v = static_cast<const T*>(a.v.data);
  T* o = static_cast<T*>(a.o.data);
  using L = portable::acc_t<T>;
  L* lse = static_cast<L*>(a.lse.data);
  const auto sc = a.score;
  const auto aq = a.q, ak = a.k, av = a.v, ao = a.o;
  const auto al = a.lse;
  // Pass 1: S = Q K^T * scale (with score modifiers), rounded to T. A work item takes RB query
  // rows of one head and KB keys: each score is still one sequential madd chain over head_dim (the
  // arithmetic of a plain dot product); the RB x KB chains only run side by side, sharing loads.
  constexpr std::int64_t RB = 4, KB = 16;
  const std::int64_t nib = (s.seqlen_q + RB - 1) / RB, nkb = (nk + KB - 1) / KB;
  Kokkos::parallel_for("kfa::reference::scores", Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * nib * nkb),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t j0 = (e % nkb) * KB, i0 = ((e / nkb) % nib) * RB, bh = e / (nkb * nib);
        const std::int64_t b = bh / s.heads, h = bh % s.heads;
        const T* qr[RB];
        const T* kr[KB];
        for (std::int64_t rr = 0; rr < RB; ++rr) qr[rr] = q + offset(aq, b, Kokkos::min(i0 + rr, s.seqlen_q - 1), h);
        for (std::int64_t jj = 0; jj < KB; ++jj) kr[jj] = k + offset(ak, b, Kokkos::min(j0 + jj, nk - 1), h / group);
        Acc x[RB][KB];
        for (std::int64_t rr = 0; rr < RB; ++rr)
          for (std::int64_t jj = 0; jj < KB; ++jj) x[rr][jj] = 0;
        for (std::int64_t c = 0; c < d; ++c) {
          Acc kc[KB];
          for (std::int64_t jj = 0; jj < KB; ++jj) kc[jj] = static_cast<Acc>(kr[jj][c]);
          for (std::int64_t rr = 0; rr < RB; ++rr) {
            const Acc qc = static_cast<Acc>(qr[rr][c]);
            #pragma omp simd
            for (std::int64_t jj = 0; jj < KB; ++jj) x[rr][jj] = portable::madd(qc, kc[jj], x[rr][jj]);
          }
        }
        for (std::int64_t rr = 0; rr < RB && i0 + rr < s.seqlen_q; ++rr) {
          const std::int64_t i = i0 + rr, r = bh * s.seqlen_q + i;
          for (std::int64_t jj = 0; jj < KB && j0 + jj < nk; ++jj) {
            const std::int64_t j = j0 + jj;
            Acc y = x[rr][jj] * static_cast<Acc>(sc.scale);
            if (sc.softcap != 0.0f) y = Acc(sc.softcap) * Kokkos::tanh(y / Acc(sc.softcap));
            if (sc.alibi_slopes) y += kfa::detail::alibi_bias<Acc>(sc.alibi_slopes[h], i, j, s);
            p(r, j) = static_cast<T>(y);
          }
        }
      });
  // Pass 2: row softmax in place (masked keys get probability 0), LSE; then dropout on P.
  const kfa::detail::DropoutKey dkey = kfa::detail::derive_dropout_key(sc.seed, sc.offset);
  const std::uint32_t dthreshold = kfa::detail::dropout_threshold(sc.dropout_p);
  const Acc keep_scale = static_cast<Acc>(kfa::detail::dropout_keep_scale(sc.dropout_p));
  Kokkos::parallel_for("kfa::reference::softmax", Kokkos::RangePolicy<ExecSpace>(exec, 0, rows),
      KOKKOS_LAMBDA(std::int64_t r) {
        std::int64_t b, h, i;
        row_index(r, b, h, i);
        const auto vis = kfa::detail::visible_keys(i, s, sc);
        Acc mx = -Kokkos::Experimental::infinity_v<Acc>;
        auto in = [&](std::int64_t j) {
          return j >= vis.begin && j < vis.end && kfa::detail::block_mask_allows(sc.blocks, b, h, i, j);
        };
        for (std::int64_t j = vis.begin; j < vis.end; ++j)
          if (in(j)) mx = Kokkos::max(mx, static_cast<Acc>(p(r, j)));
        Acc sum = 0;
        for (std::int64_t j = 0; j < nk; ++j) {
          const Acc e = in(j) ? Kokkos::exp(static_cast<Acc>(p(r, j)) - mx) : Acc(0);
          p(r, j) = static_cast<T>(e);
          sum += e;
        }
        const Acc inv = sum > 0 ? Acc(1) / sum : Acc(0);
        const Acc kept = sc.dropout_p > 0.0f ? inv * keep_scale : inv;
        for (std::int64_t j = vis.begin; j < vis.end; ++j) {
          const bool keep = sc.dropout_p == 0.0f || kfa::detail::dropout_keep(dkey, dthreshold, b, h, i, j);
          p(r, j) = static_cast<T>(keep ? static_cast<Acc>(p(r, j)) * kept : Acc(0));
        }
        lse[b * al.stride_b + h * al.stride_h + i * al.stride_s] =
            sum > 0 ? static_cast<L>(mx + Kokkos::log(sum)) : -Kokkos::Experimental::infinity_v<L>;
      });
  // Pass 3: O = P V. A work item takes RB rows of one head and CB output columns, each a
  // sequential madd chain over the keys; the chains share the loads of V rows (contiguous).
  constexpr std::int64_t CB = 16;
  const std::int64_t ncb = (d + CB - 1) / CB;
  Kokkos::parallel_for("kfa::reference::pv", Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * nib * ncb),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t c0 = (e % ncb) * CB, i0 = ((e / ncb) % nib) * RB, bh = e / (ncb * nib);
        const std::int64_t b = bh / s.heads, h = bh % s.heads;
        std::int64_t r[RB];
        for (std::int64_t rr = 0; rr < RB; ++rr) r[rr] = bh * s.seqlen_q + Kokkos::min(i0 + rr, s.seqlen_q - 1);
        Acc x[RB][CB];
        for (std::int64_t rr = 0; rr < RB; ++rr)
          for (std::int64_t cc = 0; cc < CB; ++cc) x[rr][cc] = 0;
        for (std::int64_t j = 0; j < nk; ++j) {
          const T* vr = v + offset(av, b, j, h / group);
          Acc vc[CB];
          #pragma omp simd
          for (std::int64_t cc = 0; cc < CB; ++cc) vc[cc] = static_cast<Acc>(vr[Kokkos::min(c0 + cc, d - 1)]);
          for (std::int64_t rr = 0; rr < RB; ++rr) {
            const Acc pj = static_cast<Acc>(p(r[rr], j));
            #pragma omp simd
            for (std::int64_t cc = 0; cc < CB; ++cc) x[rr][cc] = portable::madd(pj, vc[cc], x[rr][cc]);
          }
        }
        for (std::int64_t rr = 0; rr < RB && i0 + rr < s.seqlen_q; ++rr)
          for (std::int64_t cc = 0; cc < CB && c0 + cc < d; ++cc)
            o[offset(ao, b, i0 + rr, h) + c0 + cc] = static_cast<T>(x[rr][cc]);
      });
}

template <class ExecSpace>
void attention_dispatch(const ExecSpace& exec, const ForwardArgs& args, const Params& params) {
  ForwardArgs a = args;
  a.score = kfa::detail::resolve_score(params, a.shape);
  kfa::detail::resolve_block_mask(exec, params, a.shape, a.score);
  auto slopes = kfa::detail::device_slopes(exec, params);
  a.score.alibi_slopes = slopes.data();
  switch (a.dtype) {
    case kfa::detail::DType::f32: run_standard<ExecSpace, float>(exec, a); break;
    case kfa::detail::DType::f64: run_standard<ExecSpace, double>(exec, a); break;
    case kfa::detail::DType::f16: run_standard<ExecSpace, Kokkos::Experimental::half_t>(exec, a); break;
    case kfa::detail::DType::bf16: run_standard<ExecSpace, Kokkos::Experimental::bhalf_t>(exec, a); break;
  }
  exec.fence("kfa::reference::attention: release the score matrix");
}

}  // namespace kfa::reference::detail

#define KFA_INSTANTIATE_REFERENCE(SPACE)                                                                    \
  template void kfa::reference::detail::attention_dispatch<SPACE>(const SPACE&, const kfa::detail::ForwardArgs&, \
                                                                  const kfa::Params&);
