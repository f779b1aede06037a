// Ring attention over NCCL (kfa/distributed_nccl.hpp) on this GPU: with one rank the ring is one block,
// so its forward and backward must give kfa::forward's and kfa::backward's results. This checks the
// transport (communicator queries, the allgather, a send / receive to itself in the backward's dK/dV
// turn) and the ring's device buffers on Kokkos::Cuda; several ranks need several GPUs.
#include <catch2/catch_get_random_seed.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <Kokkos_Core.hpp>
#include <Kokkos_Random.hpp>

#include <cmath>
#include <cstdlib>

#include "kfa/backward.hpp"
#include "kfa/distributed_nccl.hpp"
#include "kfa/forward.hpp"

namespace {

using View4 = Kokkos::View<float****, Kokkos::LayoutRight, Kokkos::CudaSpace>;
using View3 = Kokkos::View<float***, Kokkos::LayoutRight, Kokkos::CudaSpace>;

template <class V>
double max_diff(const V& a, const V& b) {
  auto ha = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), a);
  auto hb = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b);
  double m = 0;
  for (std::size_t i = 0; i < ha.span(); ++i) {
    const double x = ha.data()[i], y = hb.data()[i];
    if (std::isnan(x) || std::isnan(y)) return INFINITY;
    if (std::isinf(x) || std::isinf(y)) {
      if (x != y) return INFINITY;
      continue;
    }
    m = std::fmax(m, std::fabs(x - y));
  }
  return m;
}

}  // namespace

TEST_CASE("cuda ring attention over NCCL, one rank: kfa::forward and kfa::backward", "[cuda][ring][nccl]") {
  setenv("NCCL_NVLS_ENABLE", "0", 1);  // never NVLink multicast
  ncclUniqueId id;
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  ncclComm_t nc = nullptr;
  REQUIRE(ncclCommInitRank(&nc, 1, id, 0) == ncclSuccess);
  const bool causal = GENERATE(false, true);
  const int b = 2, n = 97, h = 4, hk = 2, d = 64;
  View4 q("q", b, n, h, d), k("k", b, n, hk, d), v("v", b, n, hk, d), dout("dout", b, n, h, d);
  Kokkos::Random_XorShift64_Pool<Kokkos::Cuda> pool(Catch::getSeed() + 17);
  for (auto* x : {&q, &k, &v, &dout}) Kokkos::fill_random(*x, pool, -1.0f, 1.0f);
  View4 o("o", b, n, h, d), o_ref("o ref", b, n, h, d);
  View3 lse("lse", b, h, n), lse_ref("lse ref", b, h, n);
  View4 dq("dq", b, n, h, d), dk("dk", b, n, hk, d), dv("dv", b, n, hk, d);
  View4 dq_ref("dq ref", b, n, h, d), dk_ref("dk ref", b, n, hk, d), dv_ref("dv ref", b, n, hk, d);
  for (auto* x : {&o, &dq, &dk, &dv}) Kokkos::deep_copy(*x, NAN);
  Kokkos::deep_copy(lse, NAN);
  kfa::Params p;
  p.causal = causal;
  const Kokkos::Cuda exec;
  kfa::forward(exec, q, k, v, o_ref, lse_ref, p);
  kfa::backward(exec, dout, q, k, v, o_ref, lse_ref, dq_ref, dk_ref, dv_ref, p);
  const kfa::distributed::NcclComm comm{nc};
  kfa::distributed::ring_attention_forward(comm, exec, q, k, v, o, lse, p);
  kfa::distributed::ring_attention_backward(comm, exec, dout, q, k, v, o, lse, dq, dk, dv, p);
  exec.fence();
  // One block: the merge of one partial state and the sums of one block's gradients into zeros are
  // exact up to the merge's rescale (exp2 of 0) and one addition.
  CHECK(max_diff(o, o_ref) <= 1e-6);
  CHECK(max_diff(lse, lse_ref) <= 1e-5);
  CHECK(max_diff(dq, dq_ref) <= 1e-6);
  CHECK(max_diff(dk, dk_ref) <= 1e-6);
  CHECK(max_diff(dv, dv_ref) <= 1e-6);
  // bad input is a kfa::Error before any transfer (window: defined on global positions)
  kfa::Params w = p;
  w.window_left = 8;
  CHECK_THROWS_AS(kfa::distributed::ring_attention_forward(comm, exec, q, k, v, o, lse, w), kfa::Error);
  ncclCommDestroy(nc);
}
