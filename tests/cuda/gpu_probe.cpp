// kfa-gpu-probe COMMAND [ARGS...]: runs COMMAND when a CUDA device is usable, else prints why and
// exits 77 (CTest: skipped). The GPU suite links the CUDA driver library, so on a machine without a
// driver it could not even start; this probe links only the static CUDA runtime, which loads the
// driver lazily and reports its absence as an error code.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no usable CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  if (argc < 2) return 0;
  execv(argv[1], argv + 1);
  std::perror("kfa-gpu-probe: cannot run the suite");
  return 1;
}
