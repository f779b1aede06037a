// kfa-decode-bench: kfa::forward_kvcache on Kokkos::Cuda in the peers' decode setup (one query token,
// 32 query heads over 8 KV heads, head_dim 128, bf16), for contiguous caches and paged caches of page
// size 16, 64 and 256 (pages in a random order: the same bytes as the contiguous cache, viewed as
// [num_pages, page_size, 8, 128]), and the GPU's device-to-device copy bandwidth measured in the same
// process. Prints JSON lines: GB/s of K and V read (2 B seqlen_k H_kv d x 2 bytes, the peers'
// definition) and the fraction of the copy bandwidth.
// Timing: CUDA events, L2 flushed before each call, median of the repetitions (bench_util.hpp). The
// calls run with check_indices off (a serving loop's setting; the default host-side check of the
// lengths and pages is timed separately as "checked").
//   kfa-decode-bench [--shapes 64x8192,8x65536,1x131072] [--pages 0,16,64,256] [--reps 20] [--splits 0]
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kfa/kfa.hpp"

using namespace kfa::bench;

int main(int argc, char* argv[]) {
  std::vector<std::string> shapes = {"64x8192", "8x65536", "1x131072"};
  std::vector<long> pages = {0, 16, 64, 256};
  int reps = 20, splits = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--shapes") shapes = parse_words(next());
    else if (a == "--pages") pages = parse_list(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--splits") splits = std::stoi(next());
  }
  Kokkos::ScopeGuard guard(argc, argv);
  {
    Kokkos::Cuda exec;
    const std::size_t flush_bytes = 256u << 20;
    void* flush = nullptr;
    check(cudaMalloc(&flush, flush_bytes), "flush buffer");
    const long H = 32, Hk = 8, D = 128;
    std::size_t max_elems = 0;
    for (const std::string& s : shapes) {
      const long b = std::stol(s.substr(0, s.find('x'))), n = std::stol(s.substr(s.find('x') + 1));
      max_elems = std::max<std::size_t>(max_elems, std::size_t(b) * n * Hk * D);
    }
    Kokkos::View<bf16*, Kokkos::CudaSpace> kbuf("k", max_elems), vbuf("v", max_elems);
    fill_random(kbuf, 1);
    fill_random(vbuf, 2);
    {  // copy bandwidth: read + write bytes of a device-to-device copy of one cache
      Kokkos::View<bf16*, Kokkos::CudaSpace> dst("dst", max_elems);
      const std::size_t bytes = max_elems * sizeof(bf16);
      const double ms = median_ms(exec, [&] {
        check(cudaMemcpyAsync(dst.data(), kbuf.data(), bytes, cudaMemcpyDeviceToDevice, exec.cuda_stream()), "copy");
      }, reps, flush, flush_bytes);
      std::printf("{\"case\": \"copy\", \"bytes\": %zu, \"ms\": %.4f, \"gbs\": %.1f}\n", bytes, ms, 2.0 * bytes / ms / 1e6);
      std::fflush(stdout);
    }
    using U4 = Kokkos::View<bf16****, Kokkos::LayoutRight, Kokkos::CudaSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    std::mt19937 rng(7);
    for (const std::string& s : shapes) {
      const long B = std::stol(s.substr(0, s.find('x'))), N = std::stol(s.substr(s.find('x') + 1));
      View4 q("q", B, 1, H, D), o("o", B, 1, H, D);
      View3 lse("lse", B, H, 1);
      fill_random(q, 3);
      Kokkos::View<std::int32_t*, Kokkos::CudaSpace> lens("cache_seqlens", B);
      Kokkos::deep_copy(lens, static_cast<std::int32_t>(N));
      const double bytes = 2.0 * B * N * Hk * D * 2;
      for (long ps : pages) {
        kfa::KvCacheOptions<> opt;
        opt.num_splits = splits;
        opt.check_indices = false;
        double ms = 0, checked = 0;
        if (ps == 0) {
          U4 kc(kbuf.data(), B, N, Hk, D), vc(vbuf.data(), B, N, Hk, D);
          auto run = [&] { kfa::forward_kvcache(exec, q, kc, vc, o, lse, lens, kfa::Params{}, opt); };
          ms = median_ms(exec, run, reps, flush, flush_bytes);
          kfa::KvCacheOptions<> chk = opt;
          chk.check_indices = true;
          checked = median_ms(exec, [&] { kfa::forward_kvcache(exec, q, kc, vc, o, lse, lens, kfa::Params{}, chk); },
                              reps, flush, flush_bytes);
        } else {
          const long per_seq = N / ps, num_pages = B * per_seq;
          U4 kc(kbuf.data(), num_pages, ps, Hk, D), vc(vbuf.data(), num_pages, ps, Hk, D);
          std::vector<std::int32_t> perm(num_pages);
          std::iota(perm.begin(), perm.end(), 0);
          std::shuffle(perm.begin(), perm.end(), rng);
          Kokkos::View<std::int32_t**, Kokkos::LayoutRight, Kokkos::CudaSpace> table("block_table", B, per_seq);
          auto th = Kokkos::create_mirror_view(table);
          for (long i = 0; i < num_pages; ++i) th.data()[i] = perm[i];
          Kokkos::deep_copy(table, th);
          auto popt = opt.paged(table);
          ms = median_ms(exec, [&] { kfa::forward_kvcache(exec, q, kc, vc, o, lse, lens, kfa::Params{}, popt); }, reps,
                         flush, flush_bytes);
        }
        std::printf("{\"case\": \"decode\", \"B\": %ld, \"seqlen_k\": %ld, \"page\": %ld, \"ms\": %.4f, \"gbs\": %.1f",
                    B, N, ps, ms, bytes / ms / 1e6);
        if (ps == 0) std::printf(", \"checked_ms\": %.4f", checked);
        std::printf("}\n");
        std::fflush(stdout);
      }
    }
    cudaFree(flush);
  }
  return 0;
}
