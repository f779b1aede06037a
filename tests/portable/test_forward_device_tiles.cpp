// The GPU forward kernel (src/portable/forward_device.hpp) run on Kokkos::Serial, where one team
// member plays its 128 threads in turn, against fp64: its thread mapping, padding, masks and online
// softmax are checked on every build, not only where a GPU is at hand.
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "feature_reference.hpp"
#include "forward_dispatch.hpp"
#include "spaces.hpp"

using namespace kfa::test;

namespace {

/// kfa::forward with the GPU kernel in place of the host one.
struct DeviceTilesForward {
  template <class Space, class P>
  void operator()(const Space& space, P& p, const kfa::Params& params) const {
    kfa::detail::forward_dispatch_with<Space, true>(space, kfa::detail::forward_args<Space>(p.q, p.k, p.v, p.o, p.lse),
                                                    params);
  }
};

template <class T>
void check(const Dims& n, const RefOptions& o, bool bhsd = false, double magnitude = 1.0) {
  check_forward<Kokkos::Serial, T>(n, o, bhsd, magnitude, kfa::Backend::portable, DeviceTilesForward{});
}

}  // namespace

#ifdef KOKKOS_ENABLE_SERIAL
TEMPLATE_LIST_TEST_CASE("device tiles: sequence lengths, head dimensions, causal", "[forward][device_tiles][sweep]",
                        SerialCases) {
  using T = typename TestType::value;
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{1, 1}, {17, 17}, {64, 64}, {129, 127}, {200, 333}}));
  const std::int64_t d = GENERATE(1, 40, 64, 80, 128, 200, 256);
  RefOptions o;
  o.causal = GENERATE(false, true);
  check<T>({2, sq, sk, 2, 1, d}, o);
}

TEMPLATE_LIST_TEST_CASE("device tiles: windows, softcap, ALiBi, strides, large scores, empty rows",
                        "[forward][device_tiles]", SerialCases) {
  using T = typename TestType::value;
  RefOptions w;
  w.scale = 0.3;
  w.window_left = 20;
  w.window_right = GENERATE(-1, 0, 7);
  check<T>({1, 150, 140, 2, 1, 32}, w);
  RefOptions m;
  m.softcap = 5.0;
  m.alibi = {0.25f, 0.0625f};
  m.causal = GENERATE(false, true);
  check<T>({1, 80, 100, 2, 2, 96}, m, false, 3.0);
  check<T>({2, 70, 45, 4, 2, 40}, RefOptions{0, true}, true);  // [batch, heads, seq, dim] storage
  check<T>({1, 90, 90, 2, 2, 64}, RefOptions{}, false, 12.0);  // scores ~ +-1000
  check<T>({1, 100, 30, 2, 1, 32}, RefOptions{0, true});       // 70 rows see no key
}

TEMPLATE_LIST_TEST_CASE("device tiles: block masks (tiles below 64) and dropout", "[forward][device_tiles]",
                        SerialCases) {
  using T = typename TestType::value;
  const Dims n{1, 133, 150, 2, 1, 48};
  const auto [bq, bk] = GENERATE(table<std::int64_t, std::int64_t>({{64, 64}, {16, 32}, {128, 48}}));
  std::vector<std::uint8_t> bits(n.heads * n.seqlen_q * n.seqlen_k);
  std::bernoulli_distribution on(0.6);
  for (auto& b : bits) b = on(rng());
  auto allowed = [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
    if ((i / bq + j / bk) % 3 == 1) return false;  // empty blocks
    if ((i / bq + j / bk) % 3 == 2) return true;   // full blocks
    return bits[(h * n.seqlen_q + i) * n.seqlen_k + j] != 0;
  };
  const kfa::BlockMask mask = kfa::BlockMask::from_element_mask({n.seqlen_q, n.seqlen_k, bq, bk, 1, n.heads}, allowed);
  FeatureOptions x;
  x.allowed = allowed;
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  Problem<Kokkos::Serial, T> p(n, opt);
  kfa::Params params = to_params(opt);
  params.block_mask = &mask;
  check_forward_features(p, params, x, "block mask", DeviceTilesForward{});

  FeatureOptions drop;
  drop.dropout_p = 0.3;
  drop.seed = rng()();
  drop.offset = rng()();
  Problem<Kokkos::Serial, T> q({2, 70, 90, 2, 1, 64}, opt);
  kfa::Params dp = to_params(opt);
  dp.dropout_p = drop.dropout_p;
  dp.seed = drop.seed;
  dp.offset = drop.offset;
  check_forward_features(q, dp, drop, "dropout", DeviceTilesForward{});
}

TEMPLATE_LIST_TEST_CASE("device tiles: packed sequences agree with the host kernel", "[forward][device_tiles][varlen]",
                        SerialCases) {
  using S = Kokkos::Serial;
  using T = typename TestType::value;
  using L = kfa::lse_type<T>;
  // an empty key sequence, an empty query sequence, one longer than two tiles, odd lengths
  std::vector<std::int32_t> cu_q{0, 37, 40, 40, 170, 175}, cu_k{0, 41, 41, 58, 187, 257};
  const std::int64_t tq = cu_q.back(), tk = cu_k.back(), heads = 4, heads_kv = 2, d = 48;
  Problem<S, T> p({1, tq, tk, heads, heads_kv, d}, RefOptions{});  // the packed tensors, row after row
  Kokkos::View<T***, S::memory_space> q(p.qb.data(), tq, heads, d), k(p.kb.data(), tk, heads_kv, d),
      v(p.vb.data(), tk, heads_kv, d), o_host("o", tq, heads, d), o_dev("o", tq, heads, d);
  Kokkos::View<L**, S::memory_space> lse_host("lse", heads, tq), lse_dev("lse", heads, tq);
  Kokkos::View<std::int32_t*, S::memory_space> cq(cu_q.data(), cu_q.size()), ck(cu_k.data(), cu_k.size());
  kfa::Params params;
  params.causal = GENERATE(false, true);
  kfa::forward_varlen(S(), q, k, v, o_host, lse_host, cq, ck, 130, 129, params);
  // forward_varlen's own steps, with the GPU kernel
  kfa::detail::ForwardArgs a = kfa::detail::varlen_args<S>(q, k, v, cq, ck, 130, 129);
  a.o = kfa::detail::packed_tensor4(o_dev);
  a.lse = {lse_dev.data(), 0, static_cast<std::int64_t>(lse_dev.stride(0)), static_cast<std::int64_t>(lse_dev.stride(1))};
  kfa::detail::forward_dispatch_with<S, true>(S(), a, params);
  // both kernels round the same sums differently only in the tile order of the online softmax
  const double tol = std::is_same_v<T, double> ? 1e-12 : std::is_same_v<T, float> ? 1e-5 : 2e-2;
  auto val = [](T x) {
    if constexpr (std::is_same_v<T, double>) return x;
    else return static_cast<double>(static_cast<float>(x));
  };
  auto worst = [](double& m, double x) { m = x <= m ? m : x; };  // a NaN sticks (and fails the check)
  double o_diff = 0, lse_diff = 0;
  for (std::int64_t i = 0; i < tq; ++i)
    for (std::int64_t h = 0; h < heads; ++h) {
      const double lh = lse_host(h, i), ld = lse_dev(h, i);
      if (lh != ld) worst(lse_diff, std::abs(lh - ld) / std::max(1.0, std::abs(lh)));
      for (std::int64_t c = 0; c < d; ++c) {
        worst(o_diff, std::abs(val(o_host(i, h, c)) - val(o_dev(i, h, c))));
      }
    }
  INFO(type_name<T>() << " causal " << params.causal << ": o differs by " << o_diff << ", lse by " << lse_diff);
  CHECK(o_diff <= tol);
  CHECK(lse_diff <= tol);
}
#endif
