// Standalone check and timing of the native CUDA forwards, without Kokkos:
//   fwd_check            correctness: the Hopper kernel (wgmma/TMA) and the mma.sync kernel against an
//                        fp64 host forward, NaN-poisoned outputs; the Hopper error must stay within
//                        2 x the mma.sync kernel's error + 1e-3 (that kernel passes the tolerance rule in
//                        the GPU suite), LSE likewise.
//   fwd_check --bench    FlashAttention-2 paper setup (bf16, batch * seqlen = 16k, hidden 2048), both
//                        kernels, median of CUDA-event-timed calls with L2 flushed before each; TFLOP/s
//                        with 4 * b * h * n^2 * d FLOPs (halved when causal). One JSON line per case.
//   fwd_check --profile D CAUSAL SEQLEN   one Hopper forward after a warm-up (for ncu)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "forward_config.hpp"
#include "hopper/forward_sm90_config.hpp"
#include "device_fill.cuh"

#define CHECK(x)                                                                                       \
  do {                                                                                                 \
    const cudaError_t e_ = (x);                                                                        \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_)); \
  } while (0)

namespace {

using kfa::detail::DType;
using kfa::detail::ForwardArgs;

struct Case {
  std::int64_t b, sq, sk, h, hkv, d;
  bool causal;
  std::int64_t wl = -1, wr = -1;
  bool bhsd = false;  // [b, h, s, d] storage (strided)
  double magnitude = 1.0;
};

template <class T>
T from_float(float x);
template <>
__nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__half from_float<__half>(float x) { return __float2half(x); }
float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
float to_float(__half x) { return __half2float(x); }

enum class Kernel { mma, wgmma };

template <class T>
void launch(Kernel k, const ForwardArgs& a, cudaStream_t st) {
  auto go = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if (k == Kernel::mma)
      kfa::cuda::launch_forward<D, T>(a, st);
    else
      kfa::cuda::hopper::launch_forward_sm90<D, T>(a, st);
  };
  switch (a.shape.head_dim) {
    case 64: go(std::integral_constant<int, 64>{}); break;
    case 96: go(std::integral_constant<int, 96>{}); break;
    case 128: go(std::integral_constant<int, 128>{}); break;
    case 256: go(std::integral_constant<int, 256>{}); break;
    default: throw std::runtime_error("head_dim");
  }
}

/// Device buffers and launcher arguments of one case (host copies only for checked cases).
template <class T>
struct Problem {
  Case c;
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  ForwardArgs a;
  std::vector<T> hq, hk, hv;

  explicit Problem(const Case& cs, std::mt19937_64& rng, bool timing_only = false) : c(cs) {
    std::normal_distribution<float> nd(0.0f, static_cast<float>(c.magnitude));
    auto fill = [&](std::vector<T>& h, std::int64_t n) {
      h.resize(n);
      for (auto& x : h) x = from_float<T>(nd(rng));
    };
    const std::int64_t nq = c.b * c.sq * c.h * c.d, nk = c.b * c.sk * c.hkv * c.d;
    CHECK(cudaMalloc(&q, nq * sizeof(T)));
    CHECK(cudaMalloc(&o, nq * sizeof(T)));
    CHECK(cudaMalloc(&k, nk * sizeof(T)));
    CHECK(cudaMalloc(&v, nk * sizeof(T)));
    CHECK(cudaMalloc(&lse, c.b * c.h * c.sq * sizeof(float)));
    if (timing_only) {
      const float m = static_cast<float>(c.magnitude) * 1.7f;  // about the normal's spread
      fill_uniform<<<1024, 256>>>(q, std::size_t(nq), 1, m);
      fill_uniform<<<1024, 256>>>(k, std::size_t(nk), 2, m);
      fill_uniform<<<1024, 256>>>(v, std::size_t(nk), 3, m);
      CHECK(cudaDeviceSynchronize());
    } else {
      fill(hq, nq);
      fill(hk, nk);
      fill(hv, nk);
      CHECK(cudaMemcpy(q, hq.data(), nq * sizeof(T), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(k, hk.data(), nk * sizeof(T), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(v, hv.data(), nk * sizeof(T), cudaMemcpyHostToDevice));
    }
    a.dtype = std::is_same_v<T, __half> ? DType::f16 : DType::bf16;
    a.shape = {c.b, c.sq, c.sk, c.h, c.hkv, c.d};
    auto t4 = [&](void* p, std::int64_t s, std::int64_t heads) {
      kfa::detail::Tensor4 t;
      t.data = p;
      if (c.bhsd) {  // [b, h, s, d]
        t.stride_b = heads * s * c.d, t.stride_h = s * c.d, t.stride_s = c.d;
      } else {  // [b, s, h, d]
        t.stride_b = s * heads * c.d, t.stride_s = heads * c.d, t.stride_h = c.d;
      }
      return t;
    };
    a.q = t4(q, c.sq, c.h), a.o = t4(o, c.sq, c.h), a.k = t4(k, c.sk, c.hkv), a.v = t4(v, c.sk, c.hkv);
    a.lse = {lse, c.h * c.sq, c.sq, 1};
    a.score.scale = 1.0 / std::sqrt(double(c.d));
    a.score.window_left = c.wl;
    a.score.window_right = c.causal ? (c.wr < 0 ? 0 : std::min<std::int64_t>(c.wr, 0)) : c.wr;
  }
  ~Problem() {
    cudaFree(q), cudaFree(k), cudaFree(v), cudaFree(o), cudaFree(lse);
  }
  std::int64_t qi(std::int64_t b, std::int64_t s, std::int64_t h, const kfa::detail::Tensor4& t) const {
    return b * t.stride_b + s * t.stride_s + h * t.stride_h;
  }
};

struct Errors {
  double o = 0, lse = 0;
  bool finite = true;
};

/// Runs kernel `k`, compares sampled rows with the fp64 reference.
template <class T>
Errors run_and_compare(Problem<T>& p, Kernel k, const std::vector<std::int64_t>& rows) {
  const Case& c = p.c;
  CHECK(cudaMemset(p.o, 0xFF, c.b * c.sq * c.h * c.d * sizeof(T)));  // NaN poison
  CHECK(cudaMemset(p.lse, 0xFF, c.b * c.h * c.sq * sizeof(float)));
  launch<T>(k, p.a, 0);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<T> ho(c.b * c.sq * c.h * c.d);
  std::vector<float> hl(c.b * c.h * c.sq);
  CHECK(cudaMemcpy(ho.data(), p.o, ho.size() * sizeof(T), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(hl.data(), p.lse, hl.size() * sizeof(float), cudaMemcpyDeviceToHost));
  Errors e;
  const std::int64_t diag = c.sk - c.sq;
  const std::int64_t wr = p.a.score.window_right, wl = c.wl;
  std::vector<double> s(c.sk), acc(c.d);
  for (std::int64_t b = 0; b < c.b; ++b)
    for (std::int64_t h = 0; h < c.h; ++h)
      for (std::int64_t i : rows) {
        const std::int64_t hk = h / (c.h / c.hkv);
        double mx = -INFINITY;
        for (std::int64_t j = 0; j < c.sk; ++j) {
          const bool vis = !(wl >= 0 && j < i + diag - wl) && !(wr >= 0 && j > i + diag + wr);
          double dot = 0;
          for (std::int64_t x = 0; x < c.d; ++x)
            dot += double(to_float(p.hq[p.qi(b, i, h, p.a.q) + x])) * double(to_float(p.hk[p.qi(b, j, hk, p.a.k) + x]));
          s[j] = vis ? dot * p.a.score.scale : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0;
        if (mx > -INFINITY)
          for (std::int64_t j = 0; j < c.sk; ++j) {
            const double w = std::exp(s[j] - mx);
            sum += w;
            if (w != 0)
              for (std::int64_t x = 0; x < c.d; ++x) acc[x] += w * double(to_float(p.hv[p.qi(b, j, hk, p.a.v) + x]));
          }
        for (std::int64_t x = 0; x < c.d; ++x) {
          const double ref = sum > 0 ? acc[x] / sum : 0.0;
          const double got = to_float(ho[p.qi(b, i, h, p.a.o) + x]);
          if (!std::isfinite(got)) e.finite = false;
          e.o = std::max(e.o, std::abs(got - ref));
        }
        const double lref = sum > 0 ? mx + std::log(sum) : -INFINITY;
        const double lgot = hl[(b * c.h + h) * c.sq + i];
        if (std::isnan(lgot) || (std::isinf(lgot) != std::isinf(lref))) e.finite = false;
        else if (std::isfinite(lref)) e.lse = std::max(e.lse, std::abs(lgot - lref));
      }
  return e;
}

template <class T>
bool check_case(const Case& c, std::mt19937_64& rng) {
  Problem<T> p(c, rng);
  std::vector<std::int64_t> rows;
  const std::int64_t step = std::max<std::int64_t>(1, c.sq / 97);
  for (std::int64_t i = 0; i < c.sq; i += step) rows.push_back(i);
  if (rows.back() != c.sq - 1) rows.push_back(c.sq - 1);
  const Errors base = run_and_compare<T>(p, Kernel::mma, rows);
  const Errors hop = run_and_compare<T>(p, Kernel::wgmma, rows);
  const bool ok = hop.finite && base.finite && hop.o <= 2 * base.o + 1e-3 && hop.lse <= 2 * base.lse + 1e-4;
  std::printf("%s %-5s b%lld sq%lld sk%lld h%lld/%lld d%lld causal%d win(%lld,%lld)%s mag%.0f  err O mma %.2e wgmma %.2e  LSE %.2e %.2e\n",
              ok ? "ok  " : "FAIL", std::is_same_v<T, __half> ? "fp16" : "bf16", (long long)c.b, (long long)c.sq,
              (long long)c.sk, (long long)c.h, (long long)c.hkv, (long long)c.d, int(c.causal), (long long)c.wl,
              (long long)c.wr, c.bhsd ? " bhsd" : "", c.magnitude, base.o, hop.o, base.lse, hop.lse);
  return ok;
}

int run_checks() {
  std::random_device rd;
  std::mt19937_64 rng((std::uint64_t(rd()) << 32) ^ rd());
  const std::vector<Case> cases = {
      {1, 128, 128, 1, 1, 64, false},   {1, 128, 128, 1, 1, 128, false}, {2, 257, 257, 4, 4, 64, false},
      {1, 300, 300, 4, 2, 128, true},   {2, 129, 200, 2, 2, 128, false, -1, -1, true},
      {1, 1000, 1000, 3, 1, 64, true},  {1, 200, 77, 2, 2, 128, true},  // rows that see no key
      {1, 17, 4097, 2, 1, 64, false, 32, 8},  {1, 1, 129, 2, 2, 128, false}, {1, 4097, 17, 1, 1, 64, false},
      {1, 384, 384, 2, 2, 64, false, -1, -1, false, 3.0}, {1, 513, 513, 2, 1, 96, true},
      {1, 333, 555, 2, 2, 256, false}, {1, 1024, 1024, 2, 1, 256, true}, {2, 2048, 2048, 2, 2, 128, true},
      {1, 1000, 1000, 2, 2, 128, false, 100, 50},
  };
  int failed = 0;
  for (const Case& c : cases) {
    failed += !check_case<__nv_bfloat16>(c, rng);
    failed += !check_case<__half>(c, rng);
  }
  std::printf("%s: %d of %zu cases failed\n", failed ? "FAILED" : "passed", failed, 2 * cases.size());
  return failed ? 1 : 0;
}

double time_ms(const std::vector<float>& ms) {
  std::vector<float> s = ms;
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

int run_bench(int reps) {
  std::mt19937_64 rng(7);
  void* flush = nullptr;
  const std::size_t flush_bytes = 256u << 20;
  CHECK(cudaMalloc(&flush, flush_bytes));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  for (int d : {64, 128, 256})
    for (int causal : {0, 1})
      for (std::int64_t n : {512, 1024, 2048, 4096, 8192, 16384}) {
        const std::int64_t b = std::max<std::int64_t>(1, 16384 / n), h = 2048 / d;
        Problem<__nv_bfloat16> p({b, n, n, h, h, d, bool(causal)}, rng, true);
        const double flops = 4.0 * b * h * n * n * d / (causal ? 2 : 1);
        std::printf("{\"d\": %d, \"causal\": %d, \"n\": %lld", d, causal, (long long)n);
        for (Kernel k : {Kernel::mma, Kernel::wgmma}) {
          for (int w = 0; w < 3; ++w) launch<__nv_bfloat16>(k, p.a, 0);
          std::vector<float> ms;
          for (int r = 0; r < reps; ++r) {
            CHECK(cudaMemsetAsync(flush, r, flush_bytes));
            CHECK(cudaEventRecord(e0));
            launch<__nv_bfloat16>(k, p.a, 0);
            CHECK(cudaEventRecord(e1));
            CHECK(cudaEventSynchronize(e1));
            float t = 0;
            CHECK(cudaEventElapsedTime(&t, e0, e1));
            ms.push_back(t);
          }
          CHECK(cudaGetLastError());
          std::printf(", \"%s\": %.1f", k == Kernel::mma ? "mma" : "wgmma", flops / time_ms(ms) / 1e9);
        }
        std::printf("}\n");
        std::fflush(stdout);
      }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return run_bench(argc > 2 ? std::atoi(argv[2]) : 30);
    if (argc > 4 && std::strcmp(argv[1], "--profile") == 0) {
      std::mt19937_64 rng(7);
      const int d = std::atoi(argv[2]);
      const std::int64_t n = std::atoll(argv[4]);
      Problem<__nv_bfloat16> p({std::max<std::int64_t>(1, 16384 / n), n, n, 2048 / d, 2048 / d, d, std::atoi(argv[3]) != 0}, rng, true);
      launch<__nv_bfloat16>(Kernel::wgmma, p.a, 0);
      launch<__nv_bfloat16>(Kernel::wgmma, p.a, 0);
      CHECK(cudaDeviceSynchronize());
      return 0;
    }
    return run_checks();
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}
