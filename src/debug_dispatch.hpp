#pragma once
// kfa::debug::attention_probabilities: one thread per score row, plain loops over the same
// definitions the kernels use (tile_rules masks, block mask bits, Philox dropout).
#include <Kokkos_Core.hpp>

#include "block_mask_device.hpp"
#include "kfa/debug.hpp"
#include "kfa/detail/block_sparse.hpp"
#include "kfa/detail/philox.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "portable/math.hpp"
#include "portable/tile_io.hpp"
#include "score_spec.hpp"

namespace kfa::detail {

template <class ExecSpace, class T>
void run_probabilities(const ExecSpace& exec, const ForwardArgs& a, Matrix4 probs, Matrix4 keep) {
  using Acc = portable::acc_t<T>;
  const Shape s = a.shape;
  const ScoreSpec sc = a.score;
  const Tensor4 tq = a.q, tk = a.k;
  const DropoutKey key = derive_dropout_key(sc.seed, sc.offset);
  const std::uint32_t threshold = dropout_threshold(sc.dropout_p);
  const std::int64_t group = s.heads / s.heads_kv;
  auto at = KOKKOS_LAMBDA(const Matrix4& m, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
    return b * m.stride[0] + h * m.stride[1] + i * m.stride[2] + j * m.stride[3];
  };
  Kokkos::parallel_for("kfa::debug::probabilities", Kokkos::RangePolicy<ExecSpace>(exec, 0, s.batch * s.heads * s.seqlen_q),
      KOKKOS_LAMBDA(std::int64_t r) {
        const std::int64_t i = r % s.seqlen_q, h = (r / s.seqlen_q) % s.heads, b = r / (s.seqlen_q * s.heads);
        Acc* p = static_cast<Acc*>(probs.data);
        const T* q = static_cast<const T*>(tq.data) + portable::offset(tq, b, i, h);
        const VisibleRange vis = visible_keys(i, s, sc);
        auto score = [&](std::int64_t j) {
          const T* kr = static_cast<const T*>(tk.data) + portable::offset(tk, b, j, h / group);
          Acc x = 0;
          for (std::int64_t c = 0; c < s.head_dim; ++c)
            x = portable::madd(static_cast<Acc>(q[c]), static_cast<Acc>(kr[c]), x);
          x *= static_cast<Acc>(sc.scale);
          if (sc.softcap != 0.0f) x = Acc(sc.softcap) * Kokkos::tanh(x / Acc(sc.softcap));
          if (sc.alibi_slopes) x += alibi_bias<Acc>(sc.alibi_slopes[h], i, j, s);
          return x;
        };
        auto in = [&](std::int64_t j) { return j >= vis.begin && j < vis.end && block_mask_allows(sc.blocks, b, h, i, j); };
        Acc mx = -Kokkos::Experimental::infinity_v<Acc>;
        for (std::int64_t j = 0; j < s.seqlen_k; ++j) {
          const Acc x = in(j) ? score(j) : -Kokkos::Experimental::infinity_v<Acc>;
          p[at(probs, b, h, i, j)] = x;
          mx = x > mx ? x : mx;
        }
        Acc sum = 0;
        for (std::int64_t j = 0; j < s.seqlen_k; ++j) {
          Acc& e = p[at(probs, b, h, i, j)];
          e = in(j) ? Kokkos::exp(e - mx) : Acc(0);
          sum += e;
        }
        const Acc inv = sum > 0 ? Acc(1) / sum : Acc(0);
        for (std::int64_t j = 0; j < s.seqlen_k; ++j) p[at(probs, b, h, i, j)] *= inv;
        if (keep.data)
          for (std::int64_t j = 0; j < s.seqlen_k; ++j)
            static_cast<std::uint8_t*>(keep.data)[at(keep, b, h, i, j)] =
                sc.dropout_p == 0.0f || dropout_keep(key, threshold, b, h, i, j);
      });
}

template <class ExecSpace>
void probabilities_dispatch(const ExecSpace& exec, const ForwardArgs& args, const Params& params, Matrix4 probs,
                            Matrix4 keep) {
  ForwardArgs a = args;
  a.score = resolve_score(params, a.shape);
  resolve_block_mask(exec, params, a.shape, a.score);
  auto slopes = device_slopes(exec, params);
  a.score.alibi_slopes = slopes.data();
  switch (a.dtype) {
    case DType::f32: run_probabilities<ExecSpace, float>(exec, a, probs, keep); break;
    case DType::f64: run_probabilities<ExecSpace, double>(exec, a, probs, keep); break;
    case DType::f16: run_probabilities<ExecSpace, Kokkos::Experimental::half_t>(exec, a, probs, keep); break;
    case DType::bf16: run_probabilities<ExecSpace, Kokkos::Experimental::bhalf_t>(exec, a, probs, keep); break;
  }
  exec.fence("kfa::debug::attention_probabilities: keep ALiBi slopes alive");
}

}  // namespace kfa::detail

#define KFA_INSTANTIATE_DEBUG(SPACE)                                                                         \
  template void kfa::detail::probabilities_dispatch<SPACE>(const SPACE&, const kfa::detail::ForwardArgs&, \
                                                           const kfa::Params&, kfa::detail::Matrix4,          \
                                                           kfa::detail::Matrix4);
