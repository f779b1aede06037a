#pragma once
// Attributes of the current CUDA device, asked of the runtime once per device.
#include <cuda_runtime_api.h>

#include <atomic>

namespace kfa::cuda {

/// Attribute A of the current device, asked once per device (0 when the runtime cannot tell).
template <cudaDeviceAttr A>
inline int device_attribute() {
  static std::atomic<int> known[64] = {};
  int dev = 0, value = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  const bool cached = dev >= 0 && dev < 64;
  if (cached && (value = known[dev].load(std::memory_order_relaxed)) != 0) return value;
  if (cudaDeviceGetAttribute(&value, A, dev) != cudaSuccess) return 0;
  if (cached) known[dev].store(value, std::memory_order_relaxed);
  return value;
}

}  // namespace kfa::cuda
