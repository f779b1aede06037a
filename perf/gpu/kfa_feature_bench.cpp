// kfa-feature-bench: kfa's feature paths on Kokkos::Cuda, the cases of the peers' feature benchmark
// (shared/tools/peer_feature_bench.py), forward and backward, one JSON object per line:
//   sparse     B 4, H 16, N 8192, d 128 under 128 x 128 block masks read from .npy files (bool [64, 64],
//              as the peer script draws them), and the same shape dense;
//   varlen     packed causal sequences (the peer's lengths), and dense causal calls of similar lengths;
//   modifiers  B 4, H 16, N 4096, d 128: plain, dropout 0.1, softcap 30, ALiBi (each its cost over plain).
// Timing: CUDA events, L2 flushed before each call, median of the repetitions (bench_util.hpp).
//   kfa-feature-bench [--cases sparse,varlen,modifiers] [--masks a.npy,b.npy,...] [--lens 3145,...] [--reps N]
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <iterator>
#include <numeric>

#include "bench_util.hpp"
#include "kfa/kfa.hpp"

namespace {

using namespace kfa::bench;
using Packed3 = Kokkos::View<bf16***, Kokkos::LayoutRight, Kokkos::CudaSpace>;
using Lse2 = Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::CudaSpace>;

/// A bool (or uint8) [n, n] matrix saved by numpy.save.
std::vector<std::uint8_t> read_npy_blocks(const std::string& file, long& n) {
  std::ifstream f(file, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < 12) throw std::runtime_error("cannot read " + file);
  // header length: little-endian uint16 at offset 8 (format version 1.x)
  const std::size_t hlen = std::uint8_t(bytes[8]) | (std::size_t(std::uint8_t(bytes[9])) << 8);
  const std::size_t data = 10 + hlen;
  const std::size_t count = bytes.size() - data;
  n = static_cast<long>(std::lround(std::sqrt(static_cast<double>(count))));
  return std::vector<std::uint8_t>(bytes.begin() + data, bytes.end());
}

struct Dense {
  View4 q, k, v, o, dout, dq, dk, dv;
  View3 lse;
  Dense(long b, long n, long h, long d)
      : q("q", b, n, h, d), k("k", b, n, h, d), v("v", b, n, h, d), o("o", b, n, h, d), dout("do", b, n, h, d),
        dq("dq", b, n, h, d), dk("dk", b, n, h, d), dv("dv", b, n, h, d), lse("lse", b, h, n) {
    fill_random(q, 1);
    fill_random(k, 2);
    fill_random(v, 3);
    fill_random(dout, 4);
  }
};

struct Bench {
  Kokkos::Cuda exec;
  int reps = 15;
  void* flush = nullptr;
  std::size_t flush_bytes = 256u << 20;
  Bench() { check(cudaMalloc(&flush, flush_bytes), "flush buffer"); }
  ~Bench() { cudaFree(flush); }

  /// Forward and backward of `x` under `p`; prints one line with the FLOP rates (fwd, 2.5 x fwd for bwd).
  void time_dense(Dense& x, const kfa::Params& p, const std::string& cs, const std::string& label, double flops) {
    const double f = median_ms(exec, [&] { kfa::forward(exec, x.q, x.k, x.v, x.o, x.lse, p); }, reps, flush, flush_bytes);
    const double b = median_ms(
        exec, [&] { kfa::backward(exec, x.dout, x.q, x.k, x.v, x.o, x.lse, x.dq, x.dk, x.dv, p); }, reps, flush,
        flush_bytes);
    print(cs, label, f, b, flops);
  }
  static void print(const std::string& cs, const std::string& label, double f, double b, double flops) {
    std::printf("{\"kind\":\"%s\",\"case\":\"%s\",\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"fwd_tflops\":%.1f,\"bwd_tflops\":%.1f}\n",
                cs.c_str(), label.c_str(), f, b, flops / f / 1e9, 2.5 * flops / b / 1e9);
    std::fflush(stdout);
  }
};

void sparse(Bench& bench, const std::vector<std::string>& masks) {
  const long B = 4, H = 16, N = 8192, D = 128;
  Dense x(B, N, H, D);
  const double dense_flops = 4.0 * B * H * N * N * D;
  bench.time_dense(x, kfa::Params{}, "sparse", "dense", dense_flops);
  for (const std::string& file : masks) {
    long nb = 0;
    const std::vector<std::uint8_t> blocks = read_npy_blocks(file, nb);
    const kfa::BlockMask mask = kfa::BlockMask::from_blocks({N, N, N / nb, N / nb}, blocks);
    kfa::Params p;
    p.block_mask = &mask;
    char label[64];
    std::snprintf(label, sizeof label, "density %.4f", mask.density());
    bench.time_dense(x, p, "sparse", label, dense_flops * mask.density());
  }
}

void varlen(Bench& bench, const std::vector<long>& lens) {
  const long H = 16, D = 128;
  std::vector<std::int32_t> cu{0};
  long max_len = 0;
  double flops = 0;
  for (long l : lens) {
    cu.push_back(cu.back() + static_cast<std::int32_t>(l));
    max_len = std::max(max_len, l);
    flops += 4.0 * H * l * l * D / 2;
  }
  const long total = cu.back();
  Packed3 q("q", total, H, D), k("k", total, H, D), v("v", total, H, D), o("o", total, H, D), dout("do", total, H, D),
      dq("dq", total, H, D), dk("dk", total, H, D), dv("dv", total, H, D);
  Lse2 lse("lse", H, total);
  fill_random(q, 1);
  fill_random(k, 2);
  fill_random(v, 3);
  fill_random(dout, 4);
  Kokkos::View<std::int32_t*, Kokkos::CudaSpace> dcu("cu", cu.size());
  Kokkos::deep_copy(dcu, Kokkos::View<std::int32_t*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                             cu.data(), cu.size()));
  kfa::Params p;
  p.causal = true;
  Kokkos::Cuda& exec = bench.exec;
  const double f = median_ms(exec, [&] { kfa::forward_varlen(exec, q, k, v, o, lse, dcu, dcu, max_len, max_len, p); },
                             bench.reps, bench.flush, bench.flush_bytes);
  const double b = median_ms(
      exec,
      [&] { kfa::backward_varlen(exec, dout, q, k, v, o, lse, dq, dk, dv, dcu, dcu, max_len, max_len, p); },
      bench.reps, bench.flush, bench.flush_bytes);
  Bench::print("varlen", "packed causal", f, b, flops);
  // kfa's own dense causal calls at lengths like the packed ones (16k tokens)
  for (long n : {2048L, 4096L}) {
    Dense x(16384 / n, n, H, D);
    kfa::Params pc;
    pc.causal = true;
    bench.time_dense(x, pc, "varlen", "dense causal n" + std::to_string(n), 4.0 * (16384 / n) * H * n * n * D / 2);
  }
}

void modifiers(Bench& bench) {
  const long B = 4, H = 16, N = 4096, D = 128;
  Dense x(B, N, H, D);
  const double flops = 4.0 * B * H * N * N * D;
  for (bool causal : {false, true}) {
    const std::string c = causal ? " causal" : "";
    kfa::Params p;
    p.causal = causal;
    bench.time_dense(x, p, "modifiers", "plain" + c, flops / (causal ? 2 : 1));
    kfa::Params dp = p;
    dp.dropout_p = 0.1;
    dp.seed = 7;
    bench.time_dense(x, dp, "modifiers", "dropout 0.1" + c, flops / (causal ? 2 : 1));
    kfa::Params sp = p;
    sp.softcap = 30.0;
    bench.time_dense(x, sp, "modifiers", "softcap 30" + c, flops / (causal ? 2 : 1));
    kfa::Params ap = p;
    for (long h = 0; h < H; ++h) ap.alibi_slopes.push_back(std::pow(2.0f, -8.0f * (h + 1) / H));
    bench.time_dense(x, ap, "modifiers", "alibi" + c, flops / (causal ? 2 : 1));
  }
}

}  // namespace

int main(int argc, char* argv[]) {
  std::vector<std::string> cases = {"sparse", "varlen", "modifiers"}, masks;
  std::vector<long> lens = {3145, 2089, 520, 3821, 1234, 3300, 2275};
  int reps = 15;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--cases") cases = parse_words(next());
    else if (a == "--masks") masks = parse_words(next());
    else if (a == "--lens") lens = parse_list(next());
    else if (a == "--reps") reps = std::stoi(next());
  }
  Kokkos::ScopeGuard guard(argc, argv);
  {
    Bench bench;
    bench.reps = reps;
    for (const std::string& c : cases) {
      if (c == "sparse") sparse(bench, masks);
      if (c == "varlen") varlen(bench, lens);
      if (c == "modifiers") modifiers(bench);
    }
  }
  return 0;
}
