#pragma once
// Host/device qualifier usable without Kokkos, so native backends (nvcc, hipcc) and the
// portable Kokkos path share the same small inline helpers.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define KFA_HD __host__ __device__ inline
#else
#define KFA_HD inline
#endif
