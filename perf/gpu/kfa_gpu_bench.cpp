// kfa-gpu-bench: times kfa::forward on Kokkos::Cuda (native Tensor Core path and portable path) on the
// FlashAttention-2 paper setup (bf16, batch * seqlen = 16k tokens, hidden 2048) and prints one JSON
// object per line. Timing: CUDA events around each call, L2 flushed before each call (as the peers'
// do_bench does), median of the repetitions.
//   kfa-gpu-bench [--paths native,portable] [--dims 64,128,256] [--seqlens 512,...] [--causal 0,1]
//                 [--reps N] [--memory]     (--memory: one b1 h16 d128 seqlen-64k forward, device memory)
#include <Kokkos_Core.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kfa/kfa.hpp"

namespace {

using namespace kfa::bench;

void memory_run() {
  // b1, h16, d128, seqlen 64k, causal: device memory in use around the call against the tensors' bytes.
  const long b = 1, h = 16, d = 128, n = 65536;
  Kokkos::Cuda exec;
  for (const char* path : {"native", "portable"}) {
    exec.fence();
    std::size_t free0 = 0, total = 0;
    check(cudaMemGetInfo(&free0, &total), "meminfo");
    View4 q("q", b, n, h, d), k("k", b, n, h, d), v("v", b, n, h, d), o("o", b, n, h, d);
    View3 lse("lse", b, h, n);
    fill_random(q, 1);
    fill_random(k, 2);
    fill_random(v, 3);
    exec.fence();
    std::size_t free1 = 0;
    check(cudaMemGetInfo(&free1, &total), "meminfo");
    kfa::Params p;
    p.causal = true;
    p.backend = std::string(path) == "native" ? kfa::Backend::native : kfa::Backend::portable;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    cudaEventRecord(e0, exec.cuda_stream());
    kfa::forward(exec, q, k, v, o, lse, p);
    cudaEventRecord(e1, exec.cuda_stream());
    exec.fence();
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    std::size_t free2 = 0;
    check(cudaMemGetInfo(&free2, &total), "meminfo");
    const double tensors = 4.0 * b * n * h * d * sizeof(bf16) + 1.0 * b * h * n * sizeof(float);
    const double flops = 4.0 * b * h * n * n * d / 2;
    std::printf("{\"kind\":\"memory\",\"path\":\"%s\",\"seqlen\":%ld,\"tensor_bytes\":%.0f,\"used_after_alloc\":%.0f,"
                "\"used_after_call\":%.0f,\"ms\":%.3f,\"tflops\":%.2f}\n",
                path, n, tensors, double(free0 - free1), double(free0 - free2), ms, flops / ms / 1e9);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
}

}  // namespace

int main(int argc, char* argv[]) {
  std::vector<std::string> paths = {"native", "portable"};
  std::vector<long> dims = {64, 128, 256}, seqlens = {512, 1024, 2048, 4096, 8192, 16384}, causals = {0, 1};
  int reps = 30, portable_reps = 5;
  bool memory = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--paths") paths = parse_words(next());
    else if (a == "--dims") dims = parse_list(next());
    else if (a == "--seqlens") seqlens = parse_list(next());
    else if (a == "--causal") causals = parse_list(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--portable-reps") portable_reps = std::stoi(next());
    else if (a == "--memory") memory = true;
  }
  Kokkos::ScopeGuard guard(argc, argv);
  const std::size_t flush_bytes = 256u << 20;
  void* flush = nullptr;
  check(cudaMalloc(&flush, flush_bytes), "flush buffer");
  Kokkos::Cuda exec;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("{\"kind\":\"device\",\"name\":\"%s\",\"sms\":%d}\n", prop.name, prop.multiProcessorCount);
  for (long d : dims)
    for (long causal : causals)
      for (long n : seqlens) {
        const long b = std::max(1L, 16384 / n), h = 2048 / d;
        View4 q("q", b, n, h, d), k("k", b, n, h, d), v("v", b, n, h, d), o("o", b, n, h, d);
        View3 lse("lse", b, h, n);
        fill_random(q, 1);
        fill_random(k, 2);
        fill_random(v, 3);
        const double flops = 4.0 * b * h * n * n * d / (causal ? 2 : 1);
        for (const std::string& path : paths) {
          kfa::Params p;
          p.causal = causal != 0;
          p.backend = path == "native" ? kfa::Backend::native : kfa::Backend::portable;
          const double ms = median_ms(
              exec, [&] { kfa::forward(exec, q, k, v, o, lse, p); }, path == "native" ? reps : portable_reps, flush,
              flush_bytes);
          std::printf("{\"kind\":\"fwd\",\"path\":\"%s\",\"d\":%ld,\"causal\":%ld,\"n\":%ld,\"b\":%ld,\"h\":%ld,"
                      "\"ms\":%.4f,\"tflops\":%.2f}\n",
                      path.c_str(), d, causal, n, b, h, ms, flops / ms / 1e9);
          std::fflush(stdout);
        }
      }
  if (memory) memory_run();
  cudaFree(flush);
  return 0;
}
