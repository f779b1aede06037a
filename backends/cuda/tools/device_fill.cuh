#pragma once
// Benchmark inputs filled on the device: uniform values in [-scale, scale) from a splitmix64 hash of
// the index, so a sweep does not spend its time drawing 100M host random numbers per case.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

template <class T>
__global__ void fill_uniform(T* x, std::size_t n, std::uint64_t seed, float scale) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x[i] = T(scale * (float(z >> 40) / float(1 << 24) * 2.0f - 1.0f));
  }
}
