// kfa::forward_kvcache on the host spaces: contiguous and paged caches (every page size class, pages
// permuted), random lengths with 0, 1, odd and full, append then attend, seqlen_q 1 and > 1, GQA and
// MQA, causal / window / softcap / ALiBi; append-then-attend equals attending over the concatenated
// cache; the GPU forward kernel reading the cache (run on Serial); bad input writes nothing.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "kvcache_dispatch.hpp"
#include "kvcache_harness.hpp"
#include "spaces.hpp"

using namespace kfa::test;
using Catch::Matchers::ContainsSubstring;

namespace {
// float and double on each host space: in a host-only Kokkos the 16-bit types are float, so their cases
// would repeat the float ones (the GPU suite runs half and bfloat16)
#ifdef KOKKOS_ENABLE_SERIAL
using KvSerial = std::tuple<Case<Kokkos::Serial, float>, Case<Kokkos::Serial, double>>;
#else
using KvSerial = std::tuple<>;
#endif
#ifdef KOKKOS_ENABLE_OPENMP
using KvOpenMP = std::tuple<Case<Kokkos::OpenMP, float>, Case<Kokkos::OpenMP, double>>;
#else
using KvOpenMP = std::tuple<>;
#endif
using KvCases = decltype(std::tuple_cat(KvSerial{}, KvOpenMP{}));
}  // namespace

TEMPLATE_LIST_TEST_CASE("kvcache: contiguous and paged, random lengths, append, GQA/MQA", "[kvcache]", KvCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  KvShape n;
  n.batch = 5;
  n.page_size = GENERATE(0, 1, 48);
  n.capacity = 96;
  n.seqlen_q = GENERATE(1, 3);
  n.seqlen_new = 4;  // attending without an append: the second half of the test below
  std::tie(n.heads, n.heads_kv) = GENERATE(table<std::int64_t, std::int64_t>({{4, 4}, {4, 1}, {6, 2}}));
  n.head_dim = 32;
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt);
}

TEMPLATE_LIST_TEST_CASE("kvcache: window, softcap, ALiBi over per-sequence lengths", "[kvcache]", KvCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  KvShape n;
  n.batch = 4;
  n.heads = 4;
  n.heads_kv = 2;
  n.head_dim = 48;
  n.capacity = 160;
  n.page_size = GENERATE(0, 32);
  n.seqlen_q = GENERATE(1, 5);
  n.seqlen_new = 2;
  RefOptions opt;
  opt.window_left = 37;
  opt.window_right = GENERATE(-1, 0, 2);
  opt.softcap = GENERATE(0.0, 5.0);
  opt.alibi = {0.3f, 0.1f, 0.02f, 0.5f};
  check_kvcache<S, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt);
}

TEMPLATE_LIST_TEST_CASE("kvcache: append then attend equals attending over the concatenated cache", "[kvcache]",
                        KvCases) {
  using S = typename TestType::space;
  using T = typename TestType::value;
  KvShape n;
  n.batch = 3;
  n.heads = 2;
  n.heads_kv = 1;
  n.head_dim = 32;
  n.capacity = 70;
  n.page_size = GENERATE(0, 16);
  n.seqlen_q = 2;
  n.seqlen_new = 5;
  const std::vector<std::int32_t> lens = {20, 0, 65};
  KvProblem<S, T> pb(n, lens);
  S space;
  RefOptions opt;
  opt.causal = true;
  const kfa::Params p = pb.params(opt, kfa::Backend::automatic);
  pb.poison();
  pb.run(space, p, 0, true, KfaKvCache{});
  space.fence();
  const std::vector<double> o1 = pb.download(pb.o), l1 = pb.download(pb.lse);
  // the same keys already in the cache, lengths advanced, no append
  auto lm = Kokkos::create_mirror_view(pb.dlens);
  for (std::int64_t b = 0; b < n.batch; ++b) lm(b) = lens[b] + static_cast<std::int32_t>(n.seqlen_new);
  Kokkos::deep_copy(pb.dlens, lm);
  pb.poison();
  pb.run(space, p, 0, false, KfaKvCache{});
  space.fence();
  CHECK(pb.download(pb.o) == o1);
  CHECK(pb.download(pb.lse) == l1);
  CHECK(max_abs_diff(o1, o1) == 0.0);  // no NaN in the result
}

#ifdef KOKKOS_ENABLE_SERIAL
namespace {
/// forward_kvcache with the GPU forward kernel in place of the host one.
struct DeviceTilesKvCache {
  template <class S, class P, class Opt>
  void operator()(const S& space, const P& pb, const kfa::Params& p, const Opt& opt) const {
    kfa::detail::kvcache_dispatch_with<S, true>(
        space, kfa::detail::kvcache_args<S>(pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, opt), p);
  }
};
}  // namespace

TEMPLATE_LIST_TEST_CASE("kvcache: the GPU forward kernel reads contiguous and paged caches", "[kvcache][device_tiles]",
                        KvSerial) {
  using T = typename TestType::value;
  KvShape n;
  n.batch = 4;
  n.heads = 4;
  n.heads_kv = 2;
  n.head_dim = GENERATE(32, 128);
  n.capacity = 150;
  n.page_size = GENERATE(0, 16, 64);
  n.seqlen_q = GENERATE(1, 4);
  n.seqlen_new = 3;
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  check_kvcache<Kokkos::Serial, T>(n, edge_lengths(n.batch, n.capacity, n.seqlen_new), opt, kfa::Backend::portable, 0,
                                   DeviceTilesKvCache{});
}
#endif

TEST_CASE("kvcache: bad input is a kfa::Error and writes nothing", "[kvcache][errors]") {
  using S = Kokkos::DefaultHostExecutionSpace;
  using T = float;
  KvShape n;
  n.batch = 2;
  n.heads = 4;
  n.heads_kv = 2;
  n.head_dim = 16;
  n.capacity = 32;
  n.page_size = 16;
  n.seqlen_new = 3;
  KvProblem<S, T> pb(n, {10, 29});
  S space;
  const std::vector<double> k0 = pb.download(pb.kc);
  auto untouched = [&] {
    space.fence();
    const std::vector<double> o = pb.download(pb.o), k = pb.download(pb.kc);
    CHECK(std::all_of(o.begin(), o.end(), [](double x) { return std::isnan(x); }));
    bool same = k.size() == k0.size();  // bit for bit, the NaN of unused rows included
    for (std::size_t i = 0; same && i < k.size(); ++i) same = k[i] == k0[i] || (std::isnan(k[i]) && std::isnan(k0[i]));
    CHECK(same);
  };
  pb.poison();
  auto opt = kfa::KvCacheOptions<>{};
  kfa::Params p;
  // 29 + 3 keys fit the 32 of the capacity; the append of 4 does not
  Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace> kn4("kn4", 2, 4, 2, 16), vn4("vn4", 2, 4, 2, 16);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, p,
                                         opt.append(kn4, vn4).paged(pb.dtable)),
                    ContainsSubstring("exceeds the cache capacity"));
  untouched();
  // a page out of range
  const std::int32_t saved = pb.dtable(1, 1);
  pb.dtable(1, 1) = static_cast<std::int32_t>(pb.num_pages);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, p,
                                         opt.append(pb.knew, pb.vnew).paged(pb.dtable)),
                    ContainsSubstring("block_table(1, 1)"));
  untouched();
  pb.dtable(1, 1) = saved;
  // a negative length
  pb.dlens(0) = -1;
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, p, opt.paged(pb.dtable)),
                    ContainsSubstring("negative"));
  untouched();
  pb.dlens(0) = 10;
  // shapes: k_new of the wrong heads_kv, lse of the wrong length, cache_seqlens of the wrong batch
  Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace> kbad("kbad", 2, 3, 1, 16);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, p,
                                         opt.append(kbad, kbad).paged(pb.dtable)),
                    ContainsSubstring("k_new has extents"));
  Kokkos::View<float***, Kokkos::LayoutRight, Kokkos::HostSpace> lbad("lbad", 2, 4, 2);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, lbad, pb.dlens, p, opt.paged(pb.dtable)),
                    ContainsSubstring("lse has extents"));
  Kokkos::View<std::int32_t*, Kokkos::HostSpace> lens3("lens3", 3);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, lens3, p, opt.paged(pb.dtable)),
                    ContainsSubstring("cache_seqlens has 3 entries"));
  // a contiguous cache of another batch
  Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace> cbad("cbad", 3, 8, 2, 16);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, cbad, cbad, pb.o, pb.lse, pb.dlens, p),
                    ContainsSubstring("k_cache has extents"));
  // the output aliasing the cache
  auto o_alias = Kokkos::View<T****, Kokkos::LayoutRight, Kokkos::HostSpace>(pb.kc.data(), 2, 1, 4, 16);
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, o_alias, pb.lse, pb.dlens, p, opt.paged(pb.dtable)),
                    ContainsSubstring("overlap"));
  // training options
  kfa::Params drop;
  drop.dropout_p = 0.1;
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, drop,
                                         opt.append(pb.knew, pb.vnew).paged(pb.dtable)),
                    ContainsSubstring("dropout"));
  kfa::Params big;
  big.window_left = -2;
  CHECK_THROWS_WITH(kfa::forward_kvcache(space, pb.q, pb.kc, pb.vc, pb.o, pb.lse, pb.dlens, big,
                                         opt.append(pb.knew, pb.vnew).paged(pb.dtable)),
                    ContainsSubstring("window"));
  untouched();
}
