// The host references of the standalone HIP runner (attention_reference.hpp): the forward equals
// tests/common's fp64 reference, and the backward equals finite differences of the forward.
#include <catch2/catch_get_random_seed.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <random>

#include "attention_reference.hpp"

using namespace kfa::test;

namespace {

HostQKV random_problem(const Dims& n) {
  static std::mt19937_64 g(Catch::getSeed());
  std::normal_distribution<double> dist(0.0, 1.0);
  HostQKV in;
  in.n = n;
  for (auto* t : {&in.q, &in.k, &in.v}) {
    const std::int64_t rows = t == &in.q ? n.seqlen_q * n.heads : n.seqlen_k * n.heads_kv;
    t->resize(n.batch * rows * n.head_dim);
    for (double& x : *t) x = dist(g);
  }
  return in;
}

double loss(const HostQKV& in, const RefOptions& opt, const std::vector<double>& dout) {
  std::vector<double> o, lse;
  attention_forward(in, opt, no_rounding, o, lse);
  double l = 0;
  for (std::size_t i = 0; i < o.size(); ++i) l += o[i] * dout[i];
  return l;
}

}  // namespace

TEST_CASE("runner reference: forward equals the fp64 reference of tests/common", "[reference]") {
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  opt.softcap = GENERATE(0.0, 2.0);
  if (opt.softcap != 0) opt.alibi = {0.5f, 0.25f, 0.125f, 0.0625f};
  const HostQKV in = random_problem({2, 9, 13, 4, 2, 8});
  std::vector<double> o1, l1, o2, l2;
  attention_forward(in, opt, no_rounding, o1, l1);
  reference_forward(in, opt, o2, l2);
  for (std::size_t i = 0; i < o1.size(); ++i) CHECK(std::abs(o1[i] - o2[i]) <= 1e-12);
  for (std::size_t i = 0; i < l1.size(); ++i) CHECK((l1[i] == l2[i] || std::abs(l1[i] - l2[i]) <= 1e-12));
}

TEST_CASE("runner reference: backward equals finite differences of the forward", "[reference]") {
  RefOptions opt;
  opt.causal = GENERATE(false, true);
  opt.softcap = GENERATE(0.0, 1.5);
  opt.scale = 0.4;
  if (opt.softcap != 0) opt.alibi = {0.3f, 0.1f, 0.2f, 0.05f};
  HostQKV in = random_problem({1, 7, 11, 4, 2, 8});  // GQA: dk, dv sum over 2 query heads
  std::vector<double> o, lse, dout;
  attention_forward(in, opt, no_rounding, o, lse);
  std::mt19937_64 g(7);
  std::normal_distribution<double> dist(0.0, 1.0);
  dout.resize(o.size());
  for (double& x : dout) x = dist(g);
  const Grads grads = attention_backward(in, opt, o, dout, no_rounding);
  const double h = 1e-6;
  int checked = 0;
  for (auto [t, gt] : {std::pair{&in.q, &grads.dq}, std::pair{&in.k, &grads.dk}, std::pair{&in.v, &grads.dv}}) {
    for (std::size_t i = 0; i < t->size(); i += 5) {
      const double x = (*t)[i];
      (*t)[i] = x + h;
      const double up = loss(in, opt, dout);
      (*t)[i] = x - h;
      const double down = loss(in, opt, dout);
      (*t)[i] = x;
      const double fd = (up - down) / (2 * h);
      INFO("element " << i << " analytic " << (*gt)[i] << " numeric " << fd);
      CHECK(std::abs((*gt)[i] - fd) <= 1e-6 * (1 + std::abs(fd)));
      ++checked;
    }
  }
  CHECK(checked > 50);
}
