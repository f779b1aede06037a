#pragma once
// Command line of kfa-bench.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kfa::bench {

struct Options {
  std::vector<std::int64_t> seqlens{1024, 2048, 4096};
  std::vector<std::int64_t> head_dims{64};
  std::vector<int> causal{0, 1};
  std::vector<std::string> dtypes{"f32"};
  std::int64_t batch = 1, heads = 12;
  int warmup = 1, reps = 5, std_warmup = 0, std_reps = 3;
  bool standard = true;          // also run kfa::reference::attention
  double max_std_gib = 8.0;      // skip the standard attention when its score matrix is larger
  std::int64_t check_rows = 64;  // query rows per head checked against fp64 (0: all)
  std::int64_t check_bwd_max = 1024;  // longest seqlen whose gradients are checked against fp64
  std::string json;
  std::string mode = "fwd";
  bool demo = false;
};

inline const char* usage() {
  return "kfa-bench: kfa::forward and the standard attention (kfa::reference::attention) on the default\n"
         "execution space; time (median), TFLOP/s, extra memory, max error against fp64.\n"
         "  --demo               GPT-2-small-like case: batch 1, 12 heads, d 64, seqlen 1k/2k/4k, fp32,\n"
         "                       causal and not (add --seqlen to change the lengths)\n"
         "  --seqlen LIST        sequence lengths (seqlen_q = seqlen_k), e.g. 1024,4096   [1024,2048,4096]\n"
         "  --head-dim LIST      head dimensions                                         [64]\n"
         "  --causal LIST        0 and/or 1                                              [0,1]\n"
         "  --dtype LIST         f32,f64,f16,bf16                                        [f32]\n"
         "  --batch N --heads N                                                          [1, 12]\n"
         "  --warmup N --reps N  untimed and timed calls of kfa                          [1, 5]\n"
         "  --std-warmup N --std-reps N  the same for the standard attention (it allocates  [0, 3]\n"
         "                       and first-touches its score matrix on every call anyway)\n"
         "  --no-standard        kfa only\n"
         "  --max-std-gib X      skip the standard attention above this score-matrix size [8]\n"
         "  --check-rows N       query rows per head checked against fp64, 0 = all       [64]\n"
         "  --mode M             fwd, bwd (kfa::backward after one untimed forward) or fwdbwd   [fwd]\n"
         "                       FLOPs: bwd = 2.5 x fwd, fwdbwd = 3.5 x fwd\n"
         "  --check-bwd-max N    check gradients against a full fp64 backward up to this seqlen [1024]\n"
         "  --json FILE          also write the results as JSON\n";
}

template <class T>
std::vector<T> parse_list(const std::string& s) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    if constexpr (std::is_same_v<T, std::string>) {
      out.push_back(item);
    } else {
      double x = std::stod(item);
      // accept 1k / 4k
      if (item.back() == 'k' || item.back() == 'K') x *= 1024;
      out.push_back(static_cast<T>(x));
    }
  }
  if (out.empty()) throw std::invalid_argument("empty list: " + s);
  return out;
}

inline Options parse_options(int argc, char** argv) {
  Options o;
  bool seqlen_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") { std::cout << usage(); std::exit(0); }
    else if (a == "--demo") o.demo = true;
    else if (a == "--seqlen") { o.seqlens = parse_list<std::int64_t>(next()); seqlen_given = true; }
    else if (a == "--head-dim") o.head_dims = parse_list<std::int64_t>(next());
    else if (a == "--causal") o.causal = parse_list<int>(next());
    else if (a == "--dtype") o.dtypes = parse_list<std::string>(next());
    else if (a == "--batch") o.batch = std::stoll(next());
    else if (a == "--heads") o.heads = std::stoll(next());
    else if (a == "--warmup") o.warmup = std::stoi(next());
    else if (a == "--reps") o.reps = std::stoi(next());
    else if (a == "--std-reps") o.std_reps = std::stoi(next());
    else if (a == "--std-warmup") o.std_warmup = std::stoi(next());
    else if (a == "--no-standard") o.standard = false;
    else if (a == "--max-std-gib") o.max_std_gib = std::stod(next());
    else if (a == "--check-rows") o.check_rows = std::stoll(next());
    else if (a == "--json") o.json = next();
    else if (a == "--mode") o.mode = next();
    else if (a == "--check-bwd-max") o.check_bwd_max = std::stoll(next());
    else if (a.rfind("--kokkos", 0) == 0) continue;  // Kokkos' own flags
    else throw std::invalid_argument("unknown option " + a + " (see --help)");
  }
  if (o.demo) {
    if (!seqlen_given) o.seqlens = {1024, 2048, 4096};
    o.head_dims = {64};
    o.causal = {0, 1};
    o.dtypes = {"f32"};
    o.batch = 1;
    o.heads = 12;
    o.std_reps = 2;
  }
  if (o.mode != "fwd" && o.mode != "bwd" && o.mode != "fwdbwd")
    throw std::invalid_argument("--mode " + o.mode + ": fwd, bwd or fwdbwd");
  for (const auto& t : o.dtypes)
    if (t != "f32" && t != "f64" && t != "f16" && t != "bf16") throw std::invalid_argument("unknown --dtype " + t);
  if (o.reps < 1 || o.std_reps < 1 || o.warmup < 0 || o.std_warmup < 0) throw std::invalid_argument("--reps/--std-reps >= 1, --warmup >= 0");
  return o;
}

}  // namespace kfa::bench
