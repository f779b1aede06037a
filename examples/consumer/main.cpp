// Smallest useful kfa program: causal attention on the default execution space, checked against
// the standard (unfused) attention.
#include <Kokkos_Random.hpp>
#include <kfa/kfa.hpp>

#include <cmath>
#include <cstdio>

int main(int argc, char* argv[]) {
  Kokkos::ScopeGuard guard(argc, argv);
  const int batch = 2, seqlen = 300, heads = 8, heads_kv = 2, dim = 64;
  Kokkos::View<float****> q("q", batch, seqlen, heads, dim), o("o", batch, seqlen, heads, dim),
      o_ref("o_ref", batch, seqlen, heads, dim);
  Kokkos::View<float****> k("k", batch, seqlen, heads_kv, dim), v("v", batch, seqlen, heads_kv, dim);
  Kokkos::View<float***> lse("lse", batch, heads, seqlen), lse_ref("lse_ref", batch, heads, seqlen);
  Kokkos::Random_XorShift64_Pool<> pool(12345);
  Kokkos::fill_random(q, pool, -1.0f, 1.0f);
  Kokkos::fill_random(k, pool, -1.0f, 1.0f);
  Kokkos::fill_random(v, pool, -1.0f, 1.0f);

  kfa::Params params;
  params.causal = true;
  kfa::forward(Kokkos::DefaultExecutionSpace(), q, k, v, o, lse, params);
  kfa::reference::attention(Kokkos::DefaultExecutionSpace(), q, k, v, o_ref, lse_ref, params);

  float err = 0;
  Kokkos::parallel_reduce(
      "max_err", o.size(),
      KOKKOS_LAMBDA(std::size_t i, float& m) { m = Kokkos::max(m, Kokkos::abs(o.data()[i] - o_ref.data()[i])); },
      Kokkos::Max<float>(err));
  std::printf("kfa consumer: causal GQA attention %dx%dx%dx%d, max |kfa - standard| = %.2e\n", batch, seqlen,
              heads, dim, err);
  return (std::isfinite(err) && err < 1e-4f) ? 0 : 1;
}
