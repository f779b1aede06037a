// Runner of the GPU suite: skips (CTest exit code 77) when the machine has no CUDA device, so that a
// build machine without a GPU compiles the suite and reports it skipped instead of failed.
#include <Kokkos_Core.hpp>
#include <catch2/catch_session.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("kfa-tests-cuda: SKIPPED, no CUDA device available (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  Kokkos::ScopeGuard kokkos(argc, argv);
  return Catch::Session().run(argc, argv);
}
