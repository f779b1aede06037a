#pragma once
// kfa-bench's CPU baseline: the standard (unfused) attention a user writes over a tuned BLAS, for
// float and double on the host. Per (batch, head): S = scale * Q K^T as one GEMM into a stored N x N
// matrix, the causal mask and a row softmax (the LSE kept), then O = P V as a second GEMM. The GEMMs are
// cblas calls (OpenBLAS, found by CMake: KFA_BENCH_CBLAS), threaded by the BLAS; the softmax rows are
// split over the host execution space. It stores the scores kfa never materializes.
#include <cblas.h>

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "kfa/kfa.hpp"

namespace kfa::bench {

template <class T>
void cblas_gemm(bool trans_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T* c, int ldc) {
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
  else
    cblas_dgemm(CblasRowMajor, CblasNoTrans, tb, m, n, k, alpha, a, lda, b, ldb, 0.0, c, ldc);
}

/// o, lse = attention(q, k, v) with kfa's layouts ([batch, seqlen, heads, head_dim], lse [batch, heads,
/// seqlen_q]); causal bottom-right aligned, GQA; the other Params options are not taken (the demo has none).
template <class Q, class KV, class O, class L>
void blas_attention(const Q& q, const KV& k, const KV& v, const O& o, const L& lse, const kfa::Params& p) {
  using T = std::remove_const_t<typename Q::value_type>;
  using Host = Kokkos::DefaultHostExecutionSpace;
  const int batch = static_cast<int>(q.extent(0)), sq = static_cast<int>(q.extent(1));
  const int heads = static_cast<int>(q.extent(2)), d = static_cast<int>(q.extent(3));
  const int sk = static_cast<int>(k.extent(1)), group = heads / static_cast<int>(k.extent(2));
  const T scale = static_cast<T>(p.softmax_scale ? *p.softmax_scale : 1.0 / std::sqrt(double(d)));
  Kokkos::View<T**, Kokkos::HostSpace> s(Kokkos::view_alloc(Kokkos::WithoutInitializing, "blas attention scores"), sq, sk);
  const int shift = sk - sq;
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      const int hk = h / group;
      cblas_gemm<T>(true, sq, sk, d, scale, &q(b, 0, h, 0), static_cast<int>(q.stride(1)), &k(b, 0, hk, 0),
                    static_cast<int>(k.stride(1)), s.data(), sk);
      Kokkos::parallel_for(
          "blas attention softmax", Kokkos::RangePolicy<Host>(0, sq), [&](int i) {
            T* row = &s(i, 0);
            const int end = p.causal ? std::min(sk, i + shift + 1) : sk;  // keys this row sees
            T m = -std::numeric_limits<T>::infinity();
            for (int j = 0; j < end; ++j) m = std::max(m, row[j]);
            T sum = 0;
            for (int j = 0; j < end; ++j) sum += (row[j] = std::exp(row[j] - m));
            const T inv = end > 0 ? T(1) / sum : T(0);
            for (int j = 0; j < end; ++j) row[j] *= inv;
            for (int j = end < 0 ? 0 : end; j < sk; ++j) row[j] = 0;
            lse(b, h, i) = end > 0 ? m + std::log(sum) : -std::numeric_limits<T>::infinity();
          });
      Host().fence();
      cblas_gemm<T>(false, sq, d, sk, T(1), s.data(), sk, &v(b, 0, hk, 0), static_cast<int>(v.stride(1)),
                    &o(b, 0, h, 0), static_cast<int>(o.stride(1)));
    }
}

}  // namespace kfa::bench
