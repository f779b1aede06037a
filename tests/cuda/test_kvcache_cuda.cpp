// kfa::forward_kvcache on Kokkos::Cuda through the public API: the native split-KV decode kernel
// forced (and the automatic choice, which must pick it), one split, several, and the heuristic's; the
// portable path reading the same caches; contiguous and paged caches (page sizes 16, 64, 256 and an
// odd one), random lengths with 0, 1, odd and full, append then attend, seqlen_q 1 and > 1 (GQA
// packing past one 16-row tile), GQA and MQA, causal / window / softcap / ALiBi; against fp64.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "cuda_cases.hpp"
#include "kfa_cuda/launch.hpp"
#include "kvcache_harness.hpp"

using namespace kfa::test;

/// The decode kernel forced at head_dim d: head groupings, page sizes, query and appended tokens, splits.
template <class S, class T>
void check_decode(std::int64_t d) {
  KvShape n;
  n.batch = 5;
  n.head_dim = d;
  std::tie(n.heads, n.heads_kv) = GENERATE(table<std::int64_t, std::int64_t>({{8, 2}, {4, 4}, {16, 1}}));
  n.page_size = GENERATE(0, 16, 64, 256, 40);
  n.capacity = 700;
  n.seqlen_q = GENERATE(1, 3);
  n.seqlen_new = GENERATE(0, 2);
  const int splits = GENERATE(0, 7);
  RefOptions opt;
  opt.causal = n.seqlen_q > 1;
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt, native_unless_too_big(n.head_dim),
                      splits);
}

// One test case per head_dim, so that the GPU suite's shards share them out.
TEMPLATE_LIST_TEST_CASE("cuda kvcache: decode kernel, contiguous and paged, splits, head_dim 64", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_decode<typename TestType::space, typename TestType::value>(64);
}
TEMPLATE_LIST_TEST_CASE("cuda kvcache: decode kernel, contiguous and paged, splits, head_dim 128", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_decode<typename TestType::space, typename TestType::value>(128);
}
TEMPLATE_LIST_TEST_CASE("cuda kvcache: decode kernel, contiguous and paged, splits, head_dim 256", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_decode<typename TestType::space, typename TestType::value>(256);
}

TEMPLATE_LIST_TEST_CASE("cuda kvcache: the automatic choice is the decode kernel, one split or many",
                        "[cuda][kvcache]", CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  KvShape n;
  n.batch = 3;
  n.heads = 8;
  n.heads_kv = 2;
  n.head_dim = 128;
  n.capacity = 2000;
  n.page_size = GENERATE(0, 64);
  n.seqlen_new = 1;
  const int splits = GENERATE(0, 1, 2, 5);
  KvProblem<S, T> pb(n, edge_lengths(n.batch, n.capacity, n.seqlen_new));
  auto opt = kfa::KvCacheOptions<>{}.append(pb.knew, pb.vnew);
  const bool native = n.page_size == 0
      ? kfa::cuda::supports_kvcache(kfa::detail::kvcache_args<S>(pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, opt))
      : kfa::cuda::supports_kvcache(
            kfa::detail::kvcache_args<S>(pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, opt.paged(pb.dtable)));
  CHECK(native);
  RefOptions ro;
  ro.causal = true;
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), ro, kfa::Backend::automatic, splits);
}

/// Window, softcap and ALiBi on a cache of page_size (0: contiguous) with seqlen_q query tokens, every
/// combination with causal and forced splits.
template <class S, class T>
void check_modifiers(std::int64_t page_size, std::int64_t seqlen_q) {
  KvShape n;
  n.batch = 4;
  n.heads = 8;
  n.heads_kv = 2;
  n.head_dim = 128;
  n.capacity = 1100;
  n.page_size = page_size;
  n.seqlen_q = seqlen_q;
  n.seqlen_new = 3;
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  opt.window_left = GENERATE(-1, 130);
  opt.softcap = GENERATE(0.0, 4.0);
  opt.alibi = GENERATE(std::vector<float>{}, std::vector<float>{0.25f, 0.125f, 0.06f, 0.03f, 0.5f, 0.01f, 0.2f, 0.07f});
  const int splits = GENERATE(0, 3);
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt, kfa::Backend::native, splits);
}

// Four test cases rather than one, so that the GPU suite's shards share them out.
TEMPLATE_LIST_TEST_CASE("cuda kvcache: window, softcap, ALiBi, one query token", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_modifiers<typename TestType::space, typename TestType::value>(0, 1);
}
TEMPLATE_LIST_TEST_CASE("cuda kvcache: window, softcap, ALiBi, one query token, paged", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_modifiers<typename TestType::space, typename TestType::value>(64, 1);
}
TEMPLATE_LIST_TEST_CASE("cuda kvcache: window, softcap, ALiBi, many query tokens", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_modifiers<typename TestType::space, typename TestType::value>(0, 9);  // 4 x 9 = 36 packed rows: three row tiles
}
TEMPLATE_LIST_TEST_CASE("cuda kvcache: window, softcap, ALiBi, many query tokens, paged", "[cuda][kvcache]",
                        CudaTensorCoreCases) {
  check_modifiers<typename TestType::space, typename TestType::value>(64, 9);
}

TEMPLATE_LIST_TEST_CASE("cuda kvcache: the portable path reads the same caches", "[cuda][kvcache][portable]",
                        CudaTensorCoreCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  KvShape n;
  n.batch = 4;
  n.heads = 4;
  n.heads_kv = 2;
  n.head_dim = GENERATE(64, 128);
  n.capacity = 300;
  n.page_size = GENERATE(0, 16);
  n.seqlen_q = GENERATE(1, 4);
  n.seqlen_new = 2;
  RefOptions opt;
  opt.causal = true;
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt, kfa::Backend::portable);
}

TEST_CASE("cuda kvcache: long sequences split across the GPU", "[cuda][kvcache]") {
  using S = Kokkos::Cuda;
  KvShape n;
  n.batch = 1;
  n.heads = 32;
  n.heads_kv = 8;
  n.head_dim = 128;
  n.capacity = 20000;
  n.page_size = GENERATE(0, 256);
  n.seqlen_q = 1;
  n.seqlen_new = 1;
  check_kvcache<S, bhalf>(n, {19999}, RefOptions{}, kfa::Backend::native, 0);
}
