// The fp64 analytic gradients (tests/common/fp64_backward.hpp) agree with central differences of
// the fp64 forward, so the ground truth of the backward tests is itself checked.
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cmath>
#include <random>

#include "backward_harness.hpp"

using namespace kfa::test;

namespace {

std::vector<double> normal(std::size_t n) {
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng());
  return v;
}

/// max |analytic - central difference| over every element of q, k and v.
double finite_difference_error(HostQKV in, const std::vector<double>& dout, const RefOptions& opt,
                               double& max_grad) {
  const HostGrads g = reference_backward(in, dout, opt);
  const double h = 1e-5;
  double err = 0;
  max_grad = 0;
  std::vector<double>* inputs[3] = {&in.q, &in.k, &in.v};
  const std::vector<double>* grads[3] = {&g.dq, &g.dk, &g.dv};
  for (int t = 0; t < 3; ++t)
    for (std::size_t e = 0; e < inputs[t]->size(); ++e) {
      double& x = (*inputs[t])[e];
      const double x0 = x;
      x = x0 + h;
      const double up = reference_loss(in, dout, opt);
      x = x0 - h;
      const double down = reference_loss(in, dout, opt);
      x = x0;
      err = std::max(err, std::abs((up - down) / (2 * h) - (*grads[t])[e]));
      max_grad = std::max(max_grad, std::abs((*grads[t])[e]));
    }
  return err;
}

}  // namespace

TEST_CASE("backward reference: analytic fp64 gradients match central differences", "[backward][reference]") {
  RefOptions plain, causal, window, modified;
  causal.causal = true;
  window.window_left = 2;
  window.window_right = 1;
  window.scale = 0.7;
  modified.softcap = 1.5;
  modified.alibi = {0.5f, 0.125f, 0.25f, 1.0f};
  modified.causal = true;
  const auto [name, opt] = GENERATE_COPY(table<const char*, RefOptions>(
      {{"plain", plain}, {"causal", causal}, {"window", window}, {"softcap+alibi", modified}}));
  // GQA with seqlen_q != seqlen_k, so that both the mask alignment and the group sum are exercised
  const auto [sq, sk] = GENERATE(table<std::int64_t, std::int64_t>({{5, 7}, {7, 4}}));
  HostQKV in;
  in.n = {2, sq, sk, 4, 2, 3};
  in.q = normal(in.n.batch * sq * 4 * 3);
  in.k = normal(in.n.batch * sk * 2 * 3);
  in.v = normal(in.n.batch * sk * 2 * 3);
  for (double& x : in.q) x *= 2;  // scores of order one or more, where the softcap bends
  const std::vector<double> dout = normal(in.q.size());
  double max_grad = 0;
  const double err = finite_difference_error(in, dout, opt, max_grad);
  INFO(name << " sq " << sq << " sk " << sk << ": max |analytic - central difference| " << err << ", max |grad| "
            << max_grad);
  CHECK(max_grad > 0.05);  // the gradients are not trivially zero
  CHECK(err < 1e-7 * std::max(1.0, max_grad));
}
