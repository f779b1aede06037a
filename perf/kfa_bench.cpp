// kfa-bench: kfa::forward against the standard (unfused) attention on the default execution space.
// For each case: median time of repeated calls (warm-up first, fenced), TFLOP/s, the memory the call
// allocates beyond its inputs and outputs, and the max error of O against an fp64 host reference.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "alloc_tracker.hpp"
#include "bench_options.hpp"
#include "kfa/kfa.hpp"
#include "fp64_backward.hpp"
#include "sampled_reference.hpp"
#ifdef KFA_BENCH_CBLAS
#include "blas_attention.hpp"
#endif

namespace kfa::bench {

using Exec = Kokkos::DefaultExecutionSpace;
using Mem = Exec::memory_space;
constexpr bool kHostExec = std::is_same_v<Exec, Kokkos::DefaultHostExecutionSpace>;

/// The standard attention's forward for element type T: two BLAS GEMMs around a stored score matrix on
/// the host (float, double) when kfa-bench has cblas, else kfa's unfused reference (kfa::reference).
template <class T>
constexpr bool blas_standard() {
#ifdef KFA_BENCH_CBLAS
  return kHostExec && (std::is_same_v<T, float> || std::is_same_v<T, double>);
#else
  return false;
#endif
}

struct Case {
  std::string dtype;
  std::int64_t batch, heads, seqlen, head_dim;
  bool causal;
};

/// One implementation's measurements on one case.
struct Result {
  bool ran = false;
  std::string note;       // why it did not run
  double ms = 0;          // median
  double tflops = 0;
  std::uint64_t bytes = 0;  // extra memory of one call
  double max_err = 0;     // max |O - O_fp64| over the checked rows
};

struct Row {
  Case c;
  Result kfa, standard;
};

constexpr bool half_is_float() {
#if defined(KOKKOS_HALF_T_IS_FLOAT) && KOKKOS_HALF_T_IS_FLOAT
  return true;
#else
  return false;
#endif
}
constexpr bool bhalf_is_float() {
#if defined(KOKKOS_BHALF_T_IS_FLOAT) && KOKKOS_BHALF_T_IS_FLOAT
  return true;
#else
  return false;
#endif
}

/// Forward FLOPs 4*B*H*N*N*d (halved when causal); the backward counts 2.5x the forward (the
/// FlashAttention-2 convention: five N x N x d products against two).
double flops(const Case& c, const std::string& mode) {
  const double f = 4.0 * c.batch * c.heads * double(c.seqlen) * double(c.seqlen) * c.head_dim;
  const double fwd = c.causal ? f / 2 : f;
  return mode == "fwd" ? fwd : mode == "bwd" ? 2.5 * fwd : 3.5 * fwd;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

template <class T>
struct Buffers {
  using L = kfa::lse_type<T>;
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> q, k, v, o;
  Kokkos::View<L***, Kokkos::LayoutRight, Mem> lse;
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dout, dq, dk, dv;  // backward modes only
};

/// Random normal inputs rounded to T; `vals` receives the rounded values (what the fp64 reference sees).
template <class T>
Kokkos::View<T****, Kokkos::LayoutRight, Mem> random_tensor(const Case& c, std::mt19937_64& g, std::vector<double>& vals) {
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> t(Kokkos::view_alloc(Kokkos::WithoutInitializing, "bench input"),
                                                   c.batch, c.seqlen, c.heads, c.head_dim);
  auto h = Kokkos::create_mirror_view(t);
  std::normal_distribution<double> dist(0.0, 1.0);
  vals.resize(t.size());
  T* p = h.data();
  for (std::size_t i = 0; i < t.size(); ++i) {
    p[i] = static_cast<T>(dist(g));
    vals[i] = static_cast<double>(p[i]);
  }
  Kokkos::deep_copy(t, h);
  return t;
}

/// Max |O - reference| over the checked rows; NaN or infinity count as infinitely wrong.
template <class T>
double max_error(const Buffers<T>& b, const Case& c, const std::vector<std::int64_t>& rows, const std::vector<double>& ref) {
  auto oh = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), b.o);
  double err = 0;
  for (std::int64_t bb = 0; bb < c.batch; ++bb)
    for (std::int64_t h = 0; h < c.heads; ++h)
      for (std::size_t r = 0; r < rows.size(); ++r)
        for (std::int64_t d = 0; d < c.head_dim; ++d) {
          const double x = static_cast<double>(oh(bb, rows[r], h, d));
          const double e = std::abs(x - ref[((bb * c.heads + h) * rows.size() + r) * c.head_dim + d]);
          if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
          err = std::max(err, e);
        }
  return err;
}

/// Max |dX - reference| over dQ, dK and dV (all elements); NaN or infinity count as infinitely wrong.
template <class T>
double max_grad_error(const Buffers<T>& b, const test::HostGrads& ref) {
  double err = 0;
  auto one = [&](const auto& view, const std::vector<double>& r) {
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), view);
    const T* p = h.data();  // LayoutRight [b, s, h, d], the reference's order
    for (std::size_t e = 0; e < r.size(); ++e) {
      const double x = static_cast<double>(p[e]);
      err = std::isfinite(x) ? std::max(err, std::abs(x - r[e])) : std::numeric_limits<double>::infinity();
    }
  };
  one(b.dq, ref.dq);
  one(b.dk, ref.dk);
  one(b.dv, ref.dv);
  return err;
}

template <class T, class Call, class Poison, class Error>
Result measure(const Case& c, const std::string& mode, int warmup, int reps, bool uses_team_scratch, Call call,
               Poison poison, Error error) {
  Exec exec;
  auto once = [&] {
    call(exec);
    exec.fence("kfa-bench: call done");
  };
  for (int i = 0; i < warmup; ++i) once();
  // Every timed call also counts its allocations (the callbacks cost microseconds); the last one
  // runs on NaN-poisoned outputs, which the error check then reads.
  std::vector<double> ms;
  AllocTracker::Usage u;
  for (int i = 0; i < reps; ++i) {
    if (i + 1 == reps) poison();
    Kokkos::fence("kfa-bench: before timing");
    const auto t0 = std::chrono::steady_clock::now();
    const AllocTracker::Usage ui = AllocTracker::measure(once);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    u.transient = std::max(u.transient, ui.transient);
    u.scratch = std::max(u.scratch, ui.scratch);
  }
  Result r;
  r.ran = true;
  r.ms = median(ms);
  r.tflops = flops(c, mode) / (r.ms * 1e-3) / 1e12;
  r.bytes = u.total(uses_team_scratch);
  r.max_err = error();
  return r;
}

template <class T>
Row run_case(const Case& c, const Options& opt, std::mt19937_64& g) {
  Row row{c, {}, {}};
  HostProblem hp{c.batch, c.heads, c.seqlen, c.seqlen, c.head_dim, c.causal, {}, {}, {}};
  Buffers<T> b;
  b.q = random_tensor<T>(c, g, hp.q);
  b.k = random_tensor<T>(c, g, hp.k);
  b.v = random_tensor<T>(c, g, hp.v);
  b.o = decltype(b.o)("bench o", c.batch, c.seqlen, c.heads, c.head_dim);
  b.lse = decltype(b.lse)("bench lse", c.batch, c.heads, c.seqlen);
  kfa::Params params;
  params.causal = c.causal;
  const T nan = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
  const bool fwd = opt.mode == "fwd";

  // What each mode times, and how its result is checked: the forward's O on sampled rows; the
  // gradients against a full fp64 backward (only up to --check-bwd-max, it costs O(N^2 d) on one core).
  std::function<void()> poison;
  std::function<double()> error;
  if (fwd) {
    const auto rows = sample_rows(c.seqlen, opt.check_rows);
    auto ref = std::make_shared<std::vector<double>>(reference_rows(hp, rows));
    poison = [&b, nan] { Kokkos::deep_copy(b.o, nan); };
    error = [&b, c, rows, ref] { return max_error(b, c, rows, *ref); };
  } else {
    test::HostQKV in;
    in.n = test::Dims{c.batch, c.seqlen, c.seqlen, c.heads, c.heads, c.head_dim};
    std::vector<double> dout_vals;
    b.dout = random_tensor<T>(c, g, dout_vals);
    b.dq = decltype(b.dq)("bench dq", c.batch, c.seqlen, c.heads, c.head_dim);
    b.dk = decltype(b.dk)("bench dk", c.batch, c.seqlen, c.heads, c.head_dim);
    b.dv = decltype(b.dv)("bench dv", c.batch, c.seqlen, c.heads, c.head_dim);
    std::shared_ptr<test::HostGrads> ref;
    if (c.seqlen <= opt.check_bwd_max) {
      in.q = hp.q;
      in.k = hp.k;
      in.v = hp.v;
      test::RefOptions ro;
      ro.causal = c.causal;
      ref = std::make_shared<test::HostGrads>(test::reference_backward(in, dout_vals, ro));
    }
    poison = [&b, nan] {
      Kokkos::deep_copy(b.dq, nan);
      Kokkos::deep_copy(b.dk, nan);
      Kokkos::deep_copy(b.dv, nan);
    };
    error = [&b, ref] { return ref ? max_grad_error(b, *ref) : std::numeric_limits<double>::quiet_NaN(); };
    // the backward reads the forward's O and LSE: computed once, by kfa, before any timing
    kfa::forward(Exec(), b.q, b.k, b.v, b.o, b.lse, params);
    Exec().fence();
  }
  auto kfa_call = [&](const Exec& e) {
    if (opt.mode != "bwd") kfa::forward(e, b.q, b.k, b.v, b.o, b.lse, params);
    if (!fwd) kfa::backward(e, b.dout, b.q, b.k, b.v, b.o, b.lse, b.dq, b.dk, b.dv, params);
  };
  auto std_call = [&](const Exec& e) {
    if (opt.mode != "bwd") {
      if constexpr (blas_standard<T>()) {
#ifdef KFA_BENCH_CBLAS
        blas_attention(b.q, b.k, b.v, b.o, b.lse, params);
#endif
      } else {
        kfa::reference::attention(e, b.q, b.k, b.v, b.o, b.lse, params);
      }
    }
    if (!fwd) kfa::reference::attention_backward(e, b.dout, b.q, b.k, b.v, b.o, b.lse, b.dq, b.dk, b.dv, params);
  };

  // kfa's portable kernels keep their tiles in team scratch; the standard attention is charged
  // only the scratch it makes Kokkos grow.
  row.kfa = measure<T>(c, opt.mode, opt.warmup, opt.reps, true, kfa_call, poison, error);
  // the standard backward holds P and dS: two score matrices
  const double matrices = fwd ? 1 : 2;
  const double score_gib = matrices * c.batch * c.heads * c.seqlen * c.seqlen * sizeof(T) / double(1 << 30);
  if (!opt.standard) {
    row.standard.note = "off";
  } else if (score_gib > opt.max_std_gib) {
    row.standard.note = "skipped (scores > --max-std-gib)";
  } else {
    row.standard = measure<T>(c, opt.mode, opt.std_warmup, opt.std_reps, false, std_call, poison, error);
  }
  return row;
}

std::string human_bytes(std::uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1ull << 20));
  else std::snprintf(buf, sizeof buf, "%.0f KiB", b / 1024.0);
  return buf;
}

/// "1176x", "74x", "1.53x", "0.114x": whole numbers from 100 up, three digits below.
std::string ratio_str(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, r >= 100 ? "%.0fx" : "%.3gx", r);
  return buf;
}

/// The standard attention's extra memory over kfa's, or "-" where kfa needs none (the GPU forward
/// keeps everything on chip: the ratio has no finite value).
std::string mem_ratio_str(const Row& r) {
  return r.kfa.bytes == 0 ? std::string("-") : ratio_str(double(r.standard.bytes) / double(r.kfa.bytes));
}

void print_header() {
  std::printf("%-5s %6s %4s %6s | %9s %8s %10s %8s | %9s %8s %10s %8s | %7s %8s\n", "dtype", "seqlen", "d", "causal",
              "kfa ms", "TFLOP/s", "kfa mem", "err", "std ms", "TFLOP/s", "std mem", "err", "speedup", "mem x");
}

void print_row(const Row& r) {
  std::printf("%-5s %6lld %4lld %6s | %9.2f %8.4f %10s %8.1e | ", r.c.dtype.c_str(), (long long)r.c.seqlen,
              (long long)r.c.head_dim, r.c.causal ? "yes" : "no", r.kfa.ms, r.kfa.tflops, human_bytes(r.kfa.bytes).c_str(),
              r.kfa.max_err);
  if (r.standard.ran) {
    std::printf("%9.2f %8.4f %10s %8.1e | %6.1fx %8s\n", r.standard.ms, r.standard.tflops,
                human_bytes(r.standard.bytes).c_str(), r.standard.max_err, r.standard.ms / r.kfa.ms,
                mem_ratio_str(r).c_str());
  } else {
    std::printf("%s\n", r.standard.note.c_str());
  }
  std::fflush(stdout);
}

void json_result(std::ostream& os, const Result& r) {
  if (!r.ran) {
    os << "{\"ran\": false, \"note\": \"" << r.note << "\"}";
    return;
  }
  os << "{\"ran\": true, \"ms\": " << r.ms << ", \"tflops\": " << r.tflops << ", \"extra_bytes\": " << r.bytes
     << ", \"max_abs_err_vs_fp64\": ";
  if (std::isnan(r.max_err)) os << "null";  // not checked
  else if (std::isinf(r.max_err)) os << "\"inf\"";  // NaN or infinity in the output
  else os << r.max_err;
  os << "}";
}

void write_json(const std::string& path, const Options& opt, const std::vector<Row>& rows, const std::string& when) {
  std::ofstream os(path);
  os.precision(6);
  os << "{\n  \"tool\": \"kfa-bench\",\n  \"date_utc\": \"" << when << "\",\n  \"execution_space\": \""
     << Exec::name() << "\",\n  \"concurrency\": " << Exec().concurrency() << ",\n  \"mode\": \"" << opt.mode
     << "\",\n  \"batch\": " << opt.batch << ",\n  \"heads\": " << opt.heads << ",\n  \"reps\": " << opt.reps
     << ",\n  \"std_reps\": " << opt.std_reps << ",\n  \"check_rows_per_head\": " << opt.check_rows
     << ",\n  \"flops\": \"4*B*H*N*N*d, halved when causal\",\n"
     << "  \"memory\": \"peak live bytes of Kokkos allocations during one call beyond those live before it "
        "(tool callbacks), plus the team-scratch pool for kernels that use team scratch\",\n  \"results\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const bool as_float = (r.c.dtype == "f16" && half_is_float()) || (r.c.dtype == "bf16" && bhalf_is_float());
    os << "    {\"dtype\": \"" << r.c.dtype << "\", \"stored_as_float\": " << (as_float ? "true" : "false")
       << ", \"batch\": " << r.c.batch << ", \"heads\": " << r.c.heads
       << ", \"seqlen\": " << r.c.seqlen << ", \"head_dim\": " << r.c.head_dim
       << ", \"causal\": " << (r.c.causal ? "true" : "false") << ", \"flops\": " << flops(r.c, opt.mode) << ",\n     \"kfa\": ";
    json_result(os, r.kfa);
    os << ",\n     \"standard\": ";
    json_result(os, r.standard);
    if (r.kfa.ran && r.standard.ran)
      os << ",\n     \"speedup\": " << r.standard.ms / r.kfa.ms
         << ", \"memory_ratio\": "
         << (r.kfa.bytes == 0 ? std::string("null") : std::to_string(double(r.standard.bytes) / double(r.kfa.bytes)));
    os << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  os << "  ]\n}\n";
}

void print_demo_summary(const std::vector<Row>& rows) {
  const bool blas = !rows.empty() && rows.front().c.dtype == "f32" && blas_standard<float>();
  std::printf("\nSeed claims, measured (kfa::forward vs the standard attention that stores the N x N scores: %s):\n",
              blas ? "two BLAS GEMMs around a row softmax" : "kfa's unfused reference kernels");
  for (const Row& r : rows) {
    if (!r.standard.ran) continue;
    std::printf("  N=%-5lld %-10s %5.1fx faster, %8s instead of %9s (std / kfa %s), max error vs fp64 %.1e (standard %.1e)\n",
                (long long)r.c.seqlen, r.c.causal ? "causal" : "non-causal", r.standard.ms / r.kfa.ms,
                human_bytes(r.kfa.bytes).c_str(), human_bytes(r.standard.bytes).c_str(),
                r.kfa.bytes == 0 ? "kfa needs none" : mem_ratio_str(r).c_str(), r.kfa.max_err,
                r.standard.max_err);
  }
}

std::string utc_now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

int run(const Options& opt) {
  std::mt19937_64 g(20261121);
  const std::string when = utc_now();
  std::printf("kfa-bench --mode %s, %s on %s (concurrency %d), batch %lld, heads %lld, median of %d kfa / %d standard calls "
              "after %d / %d warm-up; error: max |O - fp64| over %s query rows per head (bwd modes: max |dQ,dK,dV - fp64|, "
              "all elements, up to seqlen %lld)\n",
              opt.mode.c_str(), when.c_str(), Exec::name(), Exec().concurrency(), (long long)opt.batch, (long long)opt.heads, opt.reps,
              opt.std_reps, opt.warmup, opt.std_warmup, opt.check_rows > 0 ? std::to_string(opt.check_rows).c_str() : "all",
              (long long)opt.check_bwd_max);
  // Kokkos without a native half type for its backends (host-only builds) defines half_t and
  // bhalf_t as float: such runs measure fp32 storage, and the table says so.
  for (const auto& dt : opt.dtypes)
    if ((dt == "f16" && half_is_float()) || (dt == "bf16" && bhalf_is_float()))
      std::printf("note: this Kokkos build stores %s as float (no native type on its backends): the %s rows are fp32 runs\n",
                  dt == "f16" ? "half_t" : "bhalf_t", dt.c_str());
  print_header();
  std::vector<Row> rows;
  for (const auto& dt : opt.dtypes)
    for (auto d : opt.head_dims)
      for (int causal : opt.causal)
        for (auto n : opt.seqlens) {
          const Case c{dt, opt.batch, opt.heads, n, d, causal != 0};
          Row r;
          if (dt == "f32") r = run_case<float>(c, opt, g);
          else if (dt == "f64") r = run_case<double>(c, opt, g);
          else if (dt == "f16") r = run_case<Kokkos::Experimental::half_t>(c, opt, g);
          else r = run_case<Kokkos::Experimental::bhalf_t>(c, opt, g);
          print_row(r);
          rows.push_back(r);
        }
  if (opt.demo) print_demo_summary(rows);
  if (!opt.json.empty()) {
    write_json(opt.json, opt, rows, when);
    std::printf("wrote %s\n", opt.json.c_str());
  }
  return 0;
}

}  // namespace kfa::bench

int main(int argc, char** argv) {
  kfa::bench::Options opt;
  try {
    opt = kfa::bench::parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "kfa-bench: " << e.what() << "\n";
    return 2;
  }
  // the demo on a GPU: bfloat16, what the native kernels take (the host demo is fp32)
  if (opt.demo && !kfa::bench::kHostExec) opt.dtypes = {"bf16"};
  Kokkos::ScopeGuard guard(argc, argv);
  kfa::bench::AllocTracker::start();
  try {
    return kfa::bench::run(opt);
  } catch (const std::exception& e) {
    std::cerr << "kfa-bench: " << e.what() << "\n";
    return 1;
  }
}
