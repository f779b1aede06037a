#pragma once
// Host stand-in for <hip/hip_runtime.h>, used only to run the kfa HIP kernels' source on the CPU
// (tests/hip/emulator/wave_emulator.hpp): "device" memory is host memory, a launch runs every
// workgroup on cooperative fibers, and the MFMA builtins go through the instruction model.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../wave_emulator.hpp"

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __shared__ static  // function-local: one copy, shared by the workgroup's fibers

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define threadIdx (::kfa::emu::group()->current->tid)
#define blockIdx (::kfa::emu::group()->block_idx)
#define blockDim (::kfa::emu::group()->block_dim)
#define gridDim (::kfa::emu::group()->grid_dim)

inline void __syncthreads() { ::kfa::emu::syncthreads(); }
inline float __shfl_xor(float v, int mask) { return ::kfa::emu::shfl_xor(v, mask); }

typedef _Float16 kfa_emu_f16x4 __attribute__((ext_vector_type(4)));
typedef short kfa_emu_i16x4 __attribute__((ext_vector_type(4)));
typedef float kfa_emu_f32x16 __attribute__((ext_vector_type(16)));

inline kfa_emu_f32x16 kfa_emu_mfma(kfa::test::mfma_model::Input fmt, const float (&a)[4], const float (&b)[4],
                                   kfa_emu_f32x16 c) {
  float acc[16];
  for (int r = 0; r < 16; ++r) acc[r] = c[r];
  ::kfa::emu::mfma_32x32x8(fmt, a, b, acc);
  for (int r = 0; r < 16; ++r) c[r] = acc[r];
  return c;
}

inline kfa_emu_f32x16 kfa_emu_mfma_f16(kfa_emu_f16x4 a, kfa_emu_f16x4 b, kfa_emu_f32x16 c, int, int, int) {
  const float fa[4] = {float(a[0]), float(a[1]), float(a[2]), float(a[3])};
  const float fb[4] = {float(b[0]), float(b[1]), float(b[2]), float(b[3])};
  return kfa_emu_mfma(kfa::test::mfma_model::Input::f16, fa, fb, c);
}

inline float kfa_emu_bf16(short x) {
  const std::uint32_t u = static_cast<std::uint32_t>(static_cast<std::uint16_t>(x)) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline kfa_emu_f32x16 kfa_emu_mfma_bf16(kfa_emu_i16x4 a, kfa_emu_i16x4 b, kfa_emu_f32x16 c, int, int, int) {
  const float fa[4] = {kfa_emu_bf16(a[0]), kfa_emu_bf16(a[1]), kfa_emu_bf16(a[2]), kfa_emu_bf16(a[3])};
  const float fb[4] = {kfa_emu_bf16(b[0]), kfa_emu_bf16(b[1]), kfa_emu_bf16(b[2]), kfa_emu_bf16(b[3])};
  return kfa_emu_mfma(kfa::test::mfma_model::Input::bf16, fa, fb, c);
}

#define __builtin_amdgcn_mfma_f32_32x32x8f16 kfa_emu_mfma_f16
#define __builtin_amdgcn_mfma_f32_32x32x8bf16_1k kfa_emu_mfma_bf16

// ---- runtime API ----
typedef enum hipError_t { hipSuccess = 0, hipErrorInvalidValue = 1, hipErrorNoDevice = 100 } hipError_t;
typedef void* hipStream_t;
enum hipMemcpyKind { hipMemcpyHostToHost, hipMemcpyHostToDevice, hipMemcpyDeviceToHost, hipMemcpyDeviceToDevice };

inline const char* hipGetErrorString(hipError_t e) { return e == hipSuccess ? "hipSuccess" : "emulated HIP error"; }
inline hipError_t hipGetLastError() { return hipSuccess; }
inline hipError_t hipGetDeviceCount(int* n) {
  *n = 1;
  return hipSuccess;
}
inline hipError_t hipDeviceSynchronize() { return hipSuccess; }
template <class T>
hipError_t hipMalloc(T** p, std::size_t bytes) {
  *p = static_cast<T*>(std::aligned_alloc(256, (bytes + 255) / 256 * 256));
  return *p ? hipSuccess : hipErrorInvalidValue;
}
inline hipError_t hipFree(void* p) {
  std::free(p);
  return hipSuccess;
}
inline hipError_t hipMemcpy(void* dst, const void* src, std::size_t bytes, hipMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return hipSuccess;
}
inline hipError_t hipMemset(void* dst, int value, std::size_t bytes) {
  std::memset(dst, value, bytes);
  return hipSuccess;
}

#define hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, ...)                          \
  ::kfa::emu::launch(::kfa::emu::Dim3{dim3(grid).x, dim3(grid).y, dim3(grid).z},                   \
                     ::kfa::emu::Dim3{dim3(block).x, dim3(block).y, dim3(block).z},                \
                     [&] { kernel(__VA_ARGS__); })
