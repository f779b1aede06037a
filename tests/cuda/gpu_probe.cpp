// kfa-gpu-probe COMMAND [ARGS...]: runs COMMAND when a CUDA device is usable, else prints why and
// exits 77 (CTest: skipped). The GPU suite links the CUDA driver library, so on a machine without a
// driver it could not even start; this probe links only the static CUDA runtime, which loads the
// driver lazily and reports its absence as an error code. Without COMMAND it also creates a context
// (exit 1 when that fails): scripts/setup.sh checks that way that an MPS server it started serves.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char* argv[]) {
  int devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no usable CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  if (argc < 2) {
    const cudaError_t ctx = cudaFree(nullptr);
    if (ctx != cudaSuccess) std::printf("no CUDA context (%s)\n", cudaGetErrorString(ctx));
    return ctx == cudaSuccess ? 0 : 1;
  }
  // "@seed": one Catch2 seed for every shard of a suite (KFA_TEST_SEED, else the parent's process id:
  // the shards of one ctest run share it, and every run draws fresh inputs).
  const char* env = std::getenv("KFA_TEST_SEED");
  static std::string seed = env != nullptr && *env != '\0' ? env : std::to_string(getppid());
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "@seed") == 0) argv[i] = seed.data();
  execv(argv[1], argv + 1);
  std::perror("kfa-gpu-probe: cannot run the suite");
  return 1;
}
