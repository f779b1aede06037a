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

#include "kfa/kfa.hpp"

namespace {

using bf16 = Kokkos::Experimental::bhalf_t;
using View4 = Kokkos::View<bf16****, Kokkos::LayoutRight, Kokkos::CudaSpace>;  // [b, s, h, d]
using View3 = Kokkos::View<float***, Kokkos::LayoutRight, Kokkos::CudaSpace>;  // [b, h, s]

std::vector<long> parse_list(const std::string& s) {
  std::vector<long> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stol(item));
  return out;
}

std::vector<std::string> parse_words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

/// Uniform values in [-1, 1) so scores stay in a realistic range.
void fill_random(const View4& v, unsigned seed) {
  const std::size_t n = v.size();
  bf16* p = v.data();
  Kokkos::parallel_for("fill", Kokkos::RangePolicy<Kokkos::Cuda>(0, n), KOKKOS_LAMBDA(std::size_t i) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u + seed * 97u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = static_cast<bf16>(static_cast<float>(x & 0xffffu) / 32768.0f - 1.0f);
  });
}

struct Timer {
  cudaEvent_t start, stop;
  Timer() {
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};

/// Median milliseconds of `reps` calls of f on the Cuda instance's stream, L2 flushed before each.
template <class F>
double median_ms(const Kokkos::Cuda& exec, F&& f, int reps, void* flush, std::size_t flush_bytes) {
  Timer t;
  std::vector<double> ms;
  for (int r = 0; r < 3; ++r) f();  // warm-up
  for (int r = 0; r < reps; ++r) {
    check(cudaMemsetAsync(flush, r & 0xff, flush_bytes, exec.cuda_stream()), "flush");
    check(cudaEventRecord(t.start, exec.cuda_stream()), "record");
    f();
    check(cudaEventRecord(t.stop, exec.cuda_stream()), "record");
    check(cudaEventSynchronize(t.stop), "sync");
    float x = 0;
    check(cudaEventElapsedTime(&x, t.start, t.stop), "elapsed");
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

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
