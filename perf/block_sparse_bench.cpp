// Block-sparse forward time vs mask density on the default execution space.
//   kfa-block-sparse-bench [--seqlen N] [--heads H] [--dim D] [--block B] [--reps R]
// Prints a Markdown table: density, computed blocks, median wall time, time relative to dense, and
// the ratio of the two (1.0 = runtime exactly proportional to the computed blocks). The process CPU
// time (all threads) is printed too: on a shared machine it is the steadier measure of the work done.
#include <Kokkos_Core.hpp>
#include <Kokkos_Random.hpp>
#include <kfa/kfa.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

namespace {

struct Options {
  std::int64_t seqlen = 8192, heads = 1, dim = 64, block = 64;
  int reps = 5;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (a == "--seqlen") o.seqlen = v;
    else if (a == "--heads") o.heads = v;
    else if (a == "--dim") o.dim = v;
    else if (a == "--block") o.block = v;
    else if (a == "--reps") o.reps = static_cast<int>(v);
  }
  return o;
}

/// A random block matrix with exactly round(density * n) computed blocks per query-block row,
/// always including the diagonal block so no row is empty.
kfa::BlockMask random_mask(const Options& o, double density, std::mt19937_64& gen) {
  const kfa::BlockMaskShape shape{o.seqlen, o.seqlen, o.block, o.block, 1, 1};
  const std::int64_t n = (o.seqlen + o.block - 1) / o.block;
  const std::int64_t per_row = std::max<std::int64_t>(1, static_cast<std::int64_t>(density * n + 0.5));
  std::vector<std::uint8_t> blocks(n * n, 0);
  std::vector<std::int64_t> cols(n);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < n; ++c) cols[c] = c;
    std::swap(cols[0], cols[r]);
    std::shuffle(cols.begin() + 1, cols.end(), gen);
    for (std::int64_t c = 0; c < per_row; ++c) blocks[r * n + cols[c]] = 1;
  }
  return kfa::BlockMask::from_blocks(shape, blocks);
}

}  // namespace

int main(int argc, char** argv) {
  Kokkos::ScopeGuard kokkos(argc, argv);
  const Options o = parse(argc, argv);
  using S = Kokkos::DefaultExecutionSpace;
  using V = Kokkos::View<float****, S::memory_space>;
  V q("q", 1, o.seqlen, o.heads, o.dim), k("k", 1, o.seqlen, o.heads, o.dim), v("v", 1, o.seqlen, o.heads, o.dim),
      out("o", 1, o.seqlen, o.heads, o.dim);
  Kokkos::View<float***, S::memory_space> lse("lse", 1, o.heads, o.seqlen);
  Kokkos::Random_XorShift64_Pool<S> pool(7);
  Kokkos::fill_random(q, pool, -1.0f, 1.0f);
  Kokkos::fill_random(k, pool, -1.0f, 1.0f);
  Kokkos::fill_random(v, pool, -1.0f, 1.0f);
  std::mt19937_64 gen(11);

  struct Time {
    double wall, cpu;
  };
  auto time_call = [&](const kfa::Params& p) {
    std::vector<double> wall, cpu;
    kfa::forward(S(), q, k, v, out, lse, p);  // warm-up
    S().fence();
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      kfa::forward(S(), q, k, v, out, lse, p);
      S().fence();
      cpu.push_back(double(std::clock() - c0) / CLOCKS_PER_SEC);
      wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(wall.begin(), wall.end());
    std::sort(cpu.begin(), cpu.end());
    return Time{wall[wall.size() / 2], cpu[cpu.size() / 2]};
  };

  std::printf("execution space %s, concurrency %d, seqlen %lld, heads %lld, head_dim %lld, block %lld, float, "
              "median of %d\n\n",
              S::name(), S().concurrency(), (long long)o.seqlen, (long long)o.heads, (long long)o.dim,
              (long long)o.block, o.reps);
  const Time dense = time_call(kfa::Params{});
  std::printf("| density | blocks computed | wall (ms) | wall / dense | (wall / dense) / density | CPU (ms) | CPU / dense "
              "| (CPU / dense) / density |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| dense (no mask) | all | %.1f | 1.000 | 1.00 | %.1f | 1.000 | 1.00 |\n", dense.wall * 1e3, dense.cpu * 1e3);
  for (double target : {0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0}) {
    const kfa::BlockMask m = random_mask(o, target, gen);
    kfa::Params p;
    p.block_mask = &m;
    const Time t = time_call(p);
    const double d = m.density();
    std::printf("| %.3f | %lld | %.1f | %.3f | %.2f | %.1f | %.3f | %.2f |\n", d,
                (long long)(m.full_blocks() + m.partial_blocks()), t.wall * 1e3, t.wall / dense.wall,
                t.wall / dense.wall / d, t.cpu * 1e3, t.cpu / dense.cpu, t.cpu / dense.cpu / d);
  }
  return 0;
}
