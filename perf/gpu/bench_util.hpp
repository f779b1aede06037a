#pragma once
// What the GPU benchmarks share: bf16 [b, s, h, d] Views on Kokkos::Cuda, a device-side uniform
// fill, list parsing, and the median of CUDA-event timings with the L2 flushed before each call
// (as the peers' do_bench does).
#include <Kokkos_Core.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace kfa::bench {

using bf16 = Kokkos::Experimental::bhalf_t;
using View4 = Kokkos::View<bf16****, Kokkos::LayoutRight, Kokkos::CudaSpace>;  // [b, s, h, d]
using View3 = Kokkos::View<float***, Kokkos::LayoutRight, Kokkos::CudaSpace>;  // [b, h, s]

inline std::vector<long> parse_list(const std::string& s) {
  std::vector<long> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stol(item));
  return out;
}

inline std::vector<std::string> parse_words(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

/// Uniform values in [-1, 1) so scores stay in a realistic range.
inline void fill_random(bf16* p, std::size_t n, unsigned seed) {
  Kokkos::parallel_for("fill", Kokkos::RangePolicy<Kokkos::Cuda>(0, n), KOKKOS_LAMBDA(std::size_t i) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u + seed * 97u;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[i] = static_cast<bf16>(static_cast<float>(x & 0xffffu) / 32768.0f - 1.0f);
  });
}

/// Uniform values in [-1, 1) so scores stay in a realistic range.
template <class View>
void fill_random(const View& v, unsigned seed) {
  fill_random(v.data(), v.size(), seed);
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

}  // namespace kfa::bench
