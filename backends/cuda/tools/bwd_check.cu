// Standalone check and timing of the native CUDA backward, without Kokkos:
//   bwd_check            correctness sweep: kfa::cuda::backward vs an fp64 host backward, judged by the
//                        tolerance rule (error <= 2 x error of a plain unfused backward in the input
//                        precision + eps), NaN-poisoned outputs, deterministic mode bitwise stable.
//   bwd_check --quick    a few small cases (for compute-sanitizer)
//   bwd_check --profile D CAUSAL SEQLEN DET   one configuration, once after warm-up (for ncu)
//   bwd_check --bench [D,D..]  FlashAttention-2 paper setup (bf16, batch*seqlen = 16k, hidden 2048),
//                        median of cudaEvent-timed runs, TFLOP/s with bwd FLOPs = 2.5 x 4*B*H*N*N*d
//                        (halved when causal).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../../tests/cuda/backward_cuda_check.hpp"
#include "device_fill.cuh"

using namespace kfa::test::cuda_bwd;

#define CHECK_CUDA KFA_BWD_CHECK_CUDA

namespace {

std::mt19937_64& rng() {
  static std::mt19937_64 g([] {
    std::random_device rd;
    const std::uint64_t s = (std::uint64_t(rd()) << 32) ^ rd();
    std::printf("seed %llu\n", static_cast<unsigned long long>(s));
    return s;
  }());
  return g;
}

int run_checks(bool quick) {
  // b, sq, sk, h, hkv, d, causal, wl, wr, bhsd, magnitude, deterministic
  const std::vector<Case> quick_cases = {
      {1, 130, 130, 2, 1, 64, true},
      {1, 70, 150, 2, 2, 128, false, -1, -1, true},
      {1, 130, 130, 2, 1, 64, true, -1, -1, false, 1.0, true},
      {1, 70, 150, 2, 2, 128, false, -1, -1, true, 1.0, true},
      {1, 130, 130, 2, 1, 256, true},
      {1, 100, 90, 2, 1, 96, true, -1, -1, false, 1.0, true},
      {1, 70, 150, 2, 2, 256, false, -1, -1, true, 1.0, true},
  };
  const std::vector<Case> full_cases = {
      {2, 257, 257, 4, 4, 64, false},
      {1, 300, 300, 4, 2, 128, true},
      {2, 129, 200, 2, 2, 128, false, -1, -1, true},
      {1, 1000, 1000, 3, 1, 64, true},
      {1, 200, 77, 2, 2, 128, true},                 // rows 0..122 see no key: zero gradients
      {1, 17, 4097, 2, 1, 64, false, 32, 8},         // sliding window, seqlen_q << seqlen_k
      {1, 1, 129, 2, 2, 128, false},
      {1, 4097, 17, 1, 1, 64, false},
      {1, 384, 384, 2, 2, 64, false, -1, -1, false, 3.0},  // large scores
      {1, 300, 300, 4, 2, 128, true, -1, -1, false, 1.0, true},
      {1, 1000, 1000, 3, 1, 64, true, -1, -1, true, 1.0, true},
      {1, 200, 77, 2, 2, 128, true, -1, -1, false, 1.0, true},
      {1, 17, 4097, 2, 1, 64, false, 32, 8, false, 1.0, true},
  };
  int failed = 0, total = 0;
  const auto run = [&](auto tag, const Case& c) {
    using T = decltype(tag);
    const CaseResult r = check_case<T>(c, rng());
    std::printf("%s %s\n", r.ok ? "PASS" : "FAIL", r.line.c_str());
    failed += !r.ok;
    total += 1;
  };
  for (const Case& c : quick ? quick_cases : full_cases) {
    run(__nv_bfloat16{}, c);
    if (!quick) run(__half{}, c);
  }
  std::printf("checks: %d of %d passed\n", total - failed, total);
  return failed == 0 ? 0 : 1;
}

// ---------------------------------------------------------------- timing
__global__ void fill_const(float* x, std::size_t n, float v) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) x[i] = v;
}

// The benchmark, or a part of it: head dims `dims` (empty: all), causal or not, one seqlen, deterministic
// or not, each configuration run `reps` times (a profiler's run: one configuration, once).
int run_bench(std::vector<int> dims = {}, int only_causal = -1, std::int64_t only_n = 0, int only_det = -1,
              int reps = 15) {
  std::printf("%-4s %-6s %-6s %-3s %-4s %-9s %-9s %-9s %-9s\n", "d", "causal", "seqlen", "B", "H", "ms", "TFLOP/s",
              "det ms", "det TF/s");
  for (int d : {64, 96, 128, 256})
    for (bool causal : {false, true})
      for (std::int64_t N : {1024, 4096, 16384}) {
        if ((!dims.empty() && std::find(dims.begin(), dims.end(), d) == dims.end()) || (only_causal >= 0 && int(causal) != only_causal) || (only_n && N != only_n)) continue;
        const std::int64_t B = 16384 / N, H = 2048 / d;
        const std::size_t n = std::size_t(B) * N * H * d;
        __nv_bfloat16 *q, *k, *v, *o, *go, *dq, *dk, *dv;
        float* lse;
        for (auto** p : {&q, &k, &v, &o, &go, &dq, &dk, &dv}) CHECK_CUDA(cudaMalloc(p, n * sizeof(__nv_bfloat16)));
        CHECK_CUDA(cudaMalloc(&lse, sizeof(float) * B * H * N));
        int seed = 1;
        for (auto* p : {q, k, v, o, go}) fill_uniform<<<1024, 256>>>(p, n, 1000003ull * seed++, 1.0f);
        fill_const<<<1024, 256>>>(lse, B * H * N, std::log(float(N)));
        CHECK_CUDA(cudaGetLastError());
        BackwardArgs a;
        a.dtype = DType::bf16;
        a.shape = Shape{B, N, N, H, H, d};
        const Tensor4 t{nullptr, N * H * d, H * d, d};
        a.q = t, a.k = t, a.v = t, a.o = t, a.dout = t, a.dq = t, a.dk = t, a.dv = t;
        a.q.data = q, a.k.data = k, a.v.data = v, a.o.data = o, a.dout.data = go, a.dq.data = dq, a.dk.data = dk,
        a.dv.data = dv;
        a.lse = Tensor3{lse, H * N, N, 1};
        a.score.scale = 1.0 / std::sqrt(double(d));
        a.score.window_right = causal ? 0 : -1;
        double ms[2] = {0, 0};
        for (int det = 0; det < 2; ++det) {
          if (only_det >= 0 && det != only_det) continue;
          a.deterministic = det == 1;
          void* ws;
          CHECK_CUDA(cudaMalloc(&ws, kfa::cuda::backward_workspace_bytes(a.shape, a.deterministic)));
          a.workspace = ws;
          cudaEvent_t e0, e1;
          cudaEventCreate(&e0), cudaEventCreate(&e1);
          for (int w = 0; w < 3; ++w) kfa::cuda::backward(a, nullptr);
          std::vector<float> times;
          for (int r = 0; r < reps; ++r) {
            cudaEventRecord(e0);
            kfa::cuda::backward(a, nullptr);
            cudaEventRecord(e1);
            CHECK_CUDA(cudaEventSynchronize(e1));
            float t_ms;
            cudaEventElapsedTime(&t_ms, e0, e1);
            times.push_back(t_ms);
          }
          std::sort(times.begin(), times.end());
          ms[det] = times[times.size() / 2];
          cudaEventDestroy(e0), cudaEventDestroy(e1);
          CHECK_CUDA(cudaFree(ws));
        }
        const double flops = 2.5 * 4.0 * B * H * double(N) * N * d / (causal ? 2.0 : 1.0);
        std::printf("%-4d %-6s %-6lld %-3lld %-4lld %-9.3f %-9.1f %-9.3f %-9.1f\n", d, causal ? "yes" : "no",
                    (long long)N, (long long)B, (long long)H, ms[0], flops / ms[0] * 1e-9, ms[1], flops / ms[1] * 1e-9);
        for (auto* p : {q, k, v, o, go, dq, dk, dv}) CHECK_CUDA(cudaFree(p));
        CHECK_CUDA(cudaFree(lse));
      }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // --bench [d,d,... [det]]: those head dims, without deterministic runs unless `det` follows
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    if (argc == 2) return run_bench();
    std::vector<int> dims;
    for (const char* c = argv[2]; *c;) {
      char* end;
      dims.push_back(static_cast<int>(std::strtol(c, &end, 10)));
      c = *end == ',' ? end + 1 : end + std::strlen(end);
    }
    return run_bench(dims, -1, 0, argc > 3 && std::strcmp(argv[3], "det") == 0 ? -1 : 0);
  }
  if (argc > 5 && std::strcmp(argv[1], "--profile") == 0)  // --profile d causal seqlen det
    return run_bench({std::atoi(argv[2])}, std::atoi(argv[3]), std::atoll(argv[4]), std::atoi(argv[5]), 1);
  return run_checks(argc > 1 && std::strcmp(argv[1], "--quick") == 0);
}
