// The HIP kernels' fragment maps (backends/hip/src/attention_fragments.hpp) run through a host model
// of the MFMA instruction (mfma_model.hpp): layouts, tile GEMMs of every product the forward and
// backward kernels issue, the softmax row reductions and one wavefront's whole forward, against
// plain host arithmetic. Needs no HIP compiler: only the host-callable index functions are included.
#include <catch2/catch_get_random_seed.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "../../backends/common/online_softmax.hpp"
#include "../../backends/hip/src/attention_fragments.hpp"
#include "kfa/detail/tile_rules.hpp"
#include "mfma_model.hpp"

namespace model = kfa::test::mfma_model;
namespace mfma = kfa::hip::mfma;
namespace frag = kfa::hip::frag;
using Coord = mfma::Coord;
using model::Input;

namespace {

std::mt19937_64& rng() {
  static std::mt19937_64 g(Catch::getSeed());
  return g;
}

/// Row-major matrix of floats.
struct Mat {
  int rows = 0, cols = 0;
  std::vector<float> v;
  Mat(int r, int c) : rows(r), cols(c), v(static_cast<std::size_t>(r) * c, 0.0f) {}
  float& at(int r, int c) { return v[static_cast<std::size_t>(r) * cols + c]; }
  float at(int r, int c) const { return v[static_cast<std::size_t>(r) * cols + c]; }
  Mat transposed() const {
    Mat t(cols, rows);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) t.at(c, r) = at(r, c);
    return t;
  }
};

/// Small integers: every product and sum is exact in fp32, so model and host must agree exactly.
Mat random_ints(int rows, int cols) {
  std::uniform_int_distribution<int> d(-4, 4);
  Mat m(rows, cols);
  for (float& x : m.v) x = static_cast<float>(d(rng()));
  return m;
}

Mat random_normal(int rows, int cols, double sigma, Input t) {
  std::normal_distribution<double> d(0.0, sigma);
  Mat m(rows, cols);
  for (float& x : m.v) x = model::round_input(static_cast<float>(d(rng())), t);
  return m;
}

Mat matmul(const Mat& a, const Mat& b) {
  Mat c(a.rows, b.cols);
  for (int i = 0; i < a.rows; ++i)
    for (int j = 0; j < b.cols; ++j) {
      double s = 0;
      for (int kk = 0; kk < a.cols; ++kk) s += double(a.at(i, kk)) * double(b.at(kk, j));
      c.at(i, j) = static_cast<float>(s);
    }
  return c;
}

using Map = std::function<Coord(int lane)>;  // a frag map at a fixed k-step (and block), element 0

/// What kfa::hip::load_operand does: 4 contiguous elements from the map's element-0 position of a
/// row-major tile with leading dimension ld (here the tile's cols).
model::Operand load_operand(const Mat& tile, const Map& at0) {
  model::Operand o;
  for (int lane = 0; lane < model::lanes; ++lane) {
    const Coord c = at0(lane);
    for (int i = 0; i < model::items; ++i) o.v[lane][i] = tile.at(c.row, c.col + i);
  }
  return o;
}

/// What kfa::hip::acc_as_operand does: registers 4 kk .. 4 kk + 3 rounded to the input type.
model::Operand acc_as_operand(const model::Accum& acc, int kk, Input t) {
  model::Operand o;
  for (int lane = 0; lane < model::lanes; ++lane)
    for (int i = 0; i < model::items; ++i) o.v[lane][i] = model::round_input(acc.v[lane][mfma::acc_reg_as_b(kk, i)], t);
  return o;
}

/// Reads an accumulator into a matrix through a map {row, col} = map(lane, reg).
void scatter(const model::Accum& acc, const std::function<Coord(int, int)>& map, Mat& out) {
  for (int lane = 0; lane < model::lanes; ++lane)
    for (int r = 0; r < model::acc_regs; ++r) {
      const Coord c = map(lane, r);
      out.at(c.row, c.col) = acc.v[lane][r];
    }
}

int mismatches(const Mat& a, const Mat& b) {
  int n = 0;
  for (std::size_t i = 0; i < a.v.size(); ++i) n += a.v[i] != b.v[i];
  return n;
}

/// S^T[key][query] = K Q^T for key sub-tile n (32 keys) of a staged K tile and 32 queries, with the
/// forward kernel's maps (the dQ kernel's are the same products with n = 0).
model::Accum scores_t(Input t, const Mat& k_stage, const Mat& q32, int n = 0) {
  model::Accum st;
  for (int kk = 0; kk < k_stage.cols / mfma::tile_k; ++kk)
    model::mfma_32x32x8(t, load_operand(k_stage, [&](int l) { return frag::shift_rows(frag::fwd::k_operand(l, kk, 0), 32 * n); }),
                        load_operand(q32, [&](int l) { return frag::fwd::q_operand(l, kk, 0); }), st);
  return st;
}

}  // namespace

TEST_CASE("MFMA model: the kernels' layout functions are the inverse of the instruction's layout", "[mfma]") {
  std::vector<int> seen_a(model::m * model::k, 0), seen_b(model::k * model::n, 0), seen_d(model::m * model::n, 0);
  for (int lane = 0; lane < mfma::wave_size; ++lane) {
    for (int i = 0; i < mfma::operand_elems; ++i) {
      const Coord a = mfma::a_coord(lane, i), b = mfma::b_coord(lane, i);
      CHECK(model::a_slot(a.row, a.col) == model::Slot{lane, i});
      CHECK(model::b_slot(b.row, b.col) == model::Slot{lane, i});
      ++seen_a[a.row * model::k + a.col];
      ++seen_b[b.row * model::n + b.col];
    }
    for (int r = 0; r < mfma::acc_regs; ++r) {
      const Coord d = mfma::acc_coord(lane, r);
      CHECK(model::d_slot(d.row, d.col) == model::Slot{lane, r});
      ++seen_d[d.row * model::n + d.col];
    }
  }
  for (int x : seen_a) CHECK(x == 1);
  for (int x : seen_b) CHECK(x == 1);
  for (int x : seen_d) CHECK(x == 1);
  // the chaining identity: accumulator registers 4kk..4kk+3 are B operand step kk's slots of the lane
  for (int lane = 0; lane < mfma::wave_size; ++lane)
    for (int kk = 0; kk < 4; ++kk)
      for (int i = 0; i < 4; ++i) {
        const Coord acc = mfma::acc_coord(lane, mfma::acc_reg_as_b(kk, i));
        const Coord b = mfma::b_coord(lane, i);
        CHECK(acc.row == mfma::tile_k * kk + b.row);
        CHECK(acc.col == b.col);
      }
}

TEST_CASE("MFMA model: every operand read of the kernels is 4 contiguous elements", "[mfma]") {
  for (int lane = 0; lane < mfma::wave_size; ++lane)
    for (int kk = 0; kk < 32; ++kk)
      for (int i = 0; i < 4; ++i) {
        const Coord r0 = frag::rows_operand(lane, kk, 0), ri = frag::rows_operand(lane, kk, i);
        CHECK((ri.row == r0.row && ri.col == r0.col + i));
        for (int blk = 0; blk < 8; ++blk) {
          // transposed tiles are stored [wide][n]: contiguous along n (the .row of the map)
          const Coord t0 = frag::transposed_operand(lane, blk, kk % 4, 0), ti = frag::transposed_operand(lane, blk, kk % 4, i);
          CHECK((ti.col == t0.col && ti.row == t0.row + i));
        }
      }
}

TEMPLATE_TEST_CASE_SIG("MFMA model: forward products S^T = K Q^T and O^T = V^T P^T", "[mfma]", ((Input T), T),
                       Input::f16, Input::bf16) {
  const int d = GENERATE(32, 64, 128);
  const int keys = 64;  // two 32-key sub-tiles, as the forward kernel stages for d <= 128
  const Mat q = random_ints(32, d), k = random_ints(keys, d), v = random_ints(keys, d);
  const Mat s_ref = matmul(q, k.transposed());  // [query][key]
  Mat s(32, keys);
  std::vector<model::Accum> st(keys / 32);
  for (int n = 0; n < keys / 32; ++n) {
    st[n] = scores_t(T, k, q, n);
    scatter(st[n], [&](int l, int r) { Coord c = frag::fwd::score(l, r); return Coord{c.col, n * 32 + c.row}; }, s);
  }
  CHECK(mismatches(s, s_ref) == 0);

  // P: small integers written into the score accumulators (the kernel overwrites them with exp2(...))
  Mat p = random_ints(32, keys);
  for (int n = 0; n < keys / 32; ++n)
    for (int lane = 0; lane < 64; ++lane)
      for (int r = 0; r < 16; ++r) {
        const Coord c = frag::fwd::score(lane, r);
        st[n].v[lane][r] = p.at(c.col, n * 32 + c.row);
      }
  const Mat vt = v.transposed();  // the kernel stages V^T [dim][key] in LDS
  const Mat o_ref = matmul(p, v);
  Mat o(32, d);
  for (int blk = 0; blk < d / 32; ++blk) {
    model::Accum acc;
    for (int n = 0; n < keys / 32; ++n)
      for (int kk = 0; kk < 4; ++kk)
        model::mfma_32x32x8(T, load_operand(vt, [&](int l) {
                              return frag::in_transposed_tile(frag::shift_rows(frag::fwd::v_operand(l, blk, kk, 0), n * 32));
                            }),
                            acc_as_operand(st[n], kk, T), acc);
    scatter(acc, [&](int l, int r) { return frag::fwd::out(l, blk, r); }, o);
  }
  CHECK(mismatches(o, o_ref) == 0);
}

TEMPLATE_TEST_CASE_SIG("MFMA model: backward products of the dK/dV and dQ kernels", "[mfma]", ((Input T), T),
                       Input::f16, Input::bf16) {
  const int d = GENERATE(32, 64, 128);
  const Mat q = random_ints(32, d), k = random_ints(32, d), v = random_ints(32, d), dout = random_ints(32, d);
  const Mat p = random_ints(32, 32), ds = random_ints(32, 32);  // [query][key]
  const Mat qt = q.transposed(), dot = dout.transposed(), kt = k.transposed();

  SECTION("dK/dV kernel: S = Q K^T, dP = dO V^T, dV^T += dO^T P, dK^T += Q^T dS") {
    model::Accum s, dp, sp, sds;
    for (int kk = 0; kk < d / 8; ++kk) {
      const model::Operand kf = load_operand(k, [&](int l) { return frag::dkv::k_operand(l, kk, 0); });
      const model::Operand vf = load_operand(v, [&](int l) { return frag::dkv::k_operand(l, kk, 0); });
      model::mfma_32x32x8(T, load_operand(q, [&](int l) { return frag::dkv::q_operand(l, kk, 0); }), kf, s);
      model::mfma_32x32x8(T, load_operand(dout, [&](int l) { return frag::dkv::q_operand(l, kk, 0); }), vf, dp);
    }
    Mat s_got(32, 32), dp_got(32, 32);
    scatter(s, frag::dkv::score, s_got);
    scatter(dp, frag::dkv::score, dp_got);
    CHECK(mismatches(s_got, matmul(q, k.transposed())) == 0);
    CHECK(mismatches(dp_got, matmul(dout, v.transposed())) == 0);
    for (int lane = 0; lane < 64; ++lane)
      for (int r = 0; r < 16; ++r) {
        const Coord c = frag::dkv::score(lane, r);  // {query, key}
        sp.v[lane][r] = p.at(c.row, c.col);
        sds.v[lane][r] = ds.at(c.row, c.col);
      }
    Mat dv(32, d), dk(32, d);
    for (int blk = 0; blk < d / 32; ++blk) {
      model::Accum adv, adk;
      for (int kk = 0; kk < 4; ++kk) {
        const Map at = [&](int l) { return frag::in_transposed_tile(frag::dkv::t_operand(l, blk, kk, 0)); };
        model::mfma_32x32x8(T, load_operand(dot, at), acc_as_operand(sp, kk, T), adv);
        model::mfma_32x32x8(T, load_operand(qt, at), acc_as_operand(sds, kk, T), adk);
      }
      scatter(adv, [&](int l, int r) { return frag::dkv::grad(l, blk, r); }, dv);
      scatter(adk, [&](int l, int r) { return frag::dkv::grad(l, blk, r); }, dk);
    }
    CHECK(mismatches(dv, matmul(p.transposed(), dout)) == 0);
    CHECK(mismatches(dk, matmul(ds.transposed(), q)) == 0);
  }

  SECTION("dQ kernel: S^T = K Q^T, dP^T = V dO^T, dQ^T += K^T dS^T") {
    model::Accum st, dpt, sds;
    for (int kk = 0; kk < d / 8; ++kk) {
      model::mfma_32x32x8(T, load_operand(k, [&](int l) { return frag::dq::k_operand(l, kk, 0); }),
                          load_operand(q, [&](int l) { return frag::dq::q_operand(l, kk, 0); }), st);
      model::mfma_32x32x8(T, load_operand(v, [&](int l) { return frag::dq::k_operand(l, kk, 0); }),
                          load_operand(dout, [&](int l) { return frag::dq::q_operand(l, kk, 0); }), dpt);
    }
    Mat st_got(32, 32), dpt_got(32, 32);
    scatter(st, frag::dq::score, st_got);
    scatter(dpt, frag::dq::score, dpt_got);
    CHECK(mismatches(st_got, matmul(k, q.transposed())) == 0);
    CHECK(mismatches(dpt_got, matmul(v, dout.transposed())) == 0);
    for (int lane = 0; lane < 64; ++lane)
      for (int r = 0; r < 16; ++r) {
        const Coord c = frag::dq::score(lane, r);  // {key, query}
        sds.v[lane][r] = ds.at(c.col, c.row);
      }
    Mat dq(32, d);
    for (int blk = 0; blk < d / 32; ++blk) {
      model::Accum acc;
      for (int kk = 0; kk < 4; ++kk)
        model::mfma_32x32x8(T, load_operand(kt, [&](int l) { return frag::in_transposed_tile(frag::dq::kt_operand(l, blk, kk, 0)); }),
                            acc_as_operand(sds, kk, T), acc);
      scatter(acc, [&](int l, int r) { return frag::dq::grad(l, blk, r); }, dq);
    }
    CHECK(mismatches(dq, matmul(ds, k)) == 0);
  }
}

namespace {

/// The kernels' row reduction: a lane's partial over its registers, then combined with the lane
/// `partner_xor` away (kfa::hip::column_max / column_sum do it with one __shfl_xor).
template <class Op>
std::vector<float> column_reduce(const model::Accum& acc, int partner_xor, Op op) {
  std::vector<float> partial(64), full(64);
  for (int lane = 0; lane < 64; ++lane) {
    partial[lane] = acc.v[lane][0];
    for (int r = 1; r < 16; ++r) partial[lane] = op(partial[lane], acc.v[lane][r]);
  }
  for (int lane = 0; lane < 64; ++lane) full[lane] = op(partial[lane], partial[lane ^ partner_xor]);
  return full;
}

float fmax2(float a, float b) { return std::max(a, b); }
float fsum2(float a, float b) { return a + b; }

}  // namespace

TEST_CASE("MFMA model: softmax row reductions over a lane and its column partner", "[mfma]") {
  const Mat k = random_normal(32, 64, 1.0, Input::f16), q = random_normal(32, 64, 1.0, Input::f16);
  const model::Accum st = scores_t(Input::f16, k, q);
  Mat s(32, 32);  // [query][key]
  scatter(st, [](int l, int r) { const Coord c = frag::fwd::score(l, r); return Coord{c.col, c.row}; }, s);
  const std::vector<float> mx = column_reduce(st, mfma::column_partner_xor, fmax2);
  const std::vector<float> sum = column_reduce(st, mfma::column_partner_xor, fsum2);
  for (int lane = 0; lane < 64; ++lane) {
    const int query = frag::fwd::query_of_lane(lane);
    CHECK(frag::fwd::query_of_lane(lane ^ mfma::column_partner_xor) == query);
    double m = -INFINITY, t = 0;
    for (int key = 0; key < 32; ++key) {
      m = std::max<double>(m, s.at(query, key));
      t += s.at(query, key);
    }
    CHECK(mx[lane] == static_cast<float>(m));
    CHECK(std::abs(sum[lane] - t) <= 1e-4 * (1 + std::abs(t)));
  }
  // every register of a lane belongs to the lane's query, and lane + partner cover the 32 keys once
  for (int lane = 0; lane < 32; ++lane) {
    std::vector<int> keys(32, 0);
    for (int r = 0; r < 16; ++r) {
      for (int who : {lane, lane ^ mfma::column_partner_xor}) {
        const Coord c = frag::fwd::score(who, r);
        CHECK(c.col == frag::fwd::query_of_lane(lane));
        ++keys[c.row];
      }
    }
    for (int x : keys) CHECK(x == 1);
  }
}

TEMPLATE_TEST_CASE_SIG("MFMA model: one wavefront's forward (online softmax over key tiles) matches fp64", "[mfma]",
                       ((Input T), T), Input::f16, Input::bf16) {
  const bool causal = GENERATE(false, true);
  const int d = 64, sq = 32, sk = 150;  // 3 stages of 64 keys, the last one partial
  const double scale = 1.0 / std::sqrt(double(d));
  const Mat q = random_normal(sq, d, 1.0, T), k = random_normal(sk, d, 1.0, T), v = random_normal(sk, d, 1.0, T);
  kfa::detail::Shape shape;
  shape.batch = shape.heads = shape.heads_kv = 1;
  shape.seqlen_q = sq;
  shape.seqlen_k = sk;
  shape.head_dim = d;
  kfa::detail::ScoreSpec spec;
  spec.scale = scale;
  if (causal) spec.window_right = 0;

  // fp64 reference
  Mat o_ref(sq, d);
  std::vector<double> lse_ref(sq);
  for (int i = 0; i < sq; ++i) {
    std::vector<double> w(sk, 0.0);
    double mx = -INFINITY;
    for (int j = 0; j < sk; ++j) {
      if (!kfa::detail::key_visible(i, j, shape, spec)) continue;
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += double(q.at(i, c)) * k.at(j, c);
      w[j] = dot * scale;
      mx = std::max(mx, w[j]);
    }
    double sum = 0;
    for (int j = 0; j < sk; ++j)
      if (kfa::detail::key_visible(i, j, shape, spec)) sum += (w[j] = std::exp(w[j] - mx));
      else w[j] = 0;
    for (int c = 0; c < d; ++c) {
      double acc = 0;
      for (int j = 0; j < sk; ++j) acc += w[j] * v.at(j, c);
      o_ref.at(i, c) = static_cast<float>(acc / sum);
    }
    lse_ref[i] = mx + std::log(sum);
  }

  // the kernel's sequence on the model: per 64-key stage, S^T per sub-tile, mask, column max,
  // rescale, exp2, P^T rounded into B operands, O^T += V^T P^T; then 1 / l and the LSE
  const float sl2 = kfa::common::scale_log2(scale);
  std::vector<float> row_max(64, -INFINITY), lane_sum(64, 0.0f);
  std::vector<model::Accum> o(d / 32);
  const Mat vt_all = v.transposed();
  for (int k0 = 0; k0 < sk; k0 += 64) {
    Mat k_stage(64, d), vt_stage(d, 64);  // zero-filled past seqlen_k, as the copy layer does
    for (int r = 0; r < 64 && k0 + r < sk; ++r)
      for (int c = 0; c < d; ++c) {
        k_stage.at(r, c) = k.at(k0 + r, c);
        vt_stage.at(c, r) = vt_all.at(c, k0 + r);
      }
    std::vector<model::Accum> st(2);
    for (int n = 0; n < 2; ++n) st[n] = scores_t(T, k_stage, q, n);
    for (int n = 0; n < 2; ++n)
      for (int lane = 0; lane < 64; ++lane)
        for (int r = 0; r < 16; ++r) {
          const Coord c = frag::fwd::score(lane, r);
          if (!kfa::detail::key_visible(c.col, k0 + n * 32 + c.row, shape, spec)) st[n].v[lane][r] = -INFINITY;
        }
    model::Accum both_max;  // per-lane max over both sub-tiles, reduced like the kernel does
    for (int lane = 0; lane < 64; ++lane)
      for (int r = 0; r < 16; ++r) both_max.v[lane][r] = std::max(st[0].v[lane][r], st[1].v[lane][r]);
    const std::vector<float> tile_max = column_reduce(both_max, mfma::column_partner_xor, fmax2);
    for (int lane = 0; lane < 64; ++lane) {
      const float new_max = std::max(row_max[lane], tile_max[lane]);
      const float carry = kfa::common::rescale_factor(row_max[lane], new_max, sl2);
      const float offset = kfa::common::offset_max(new_max) * sl2;
      row_max[lane] = new_max;
      lane_sum[lane] *= carry;
      for (auto& acc : o)
        for (float& x : acc.v[lane]) x *= carry;
      for (int n = 0; n < 2; ++n)
        for (int r = 0; r < 16; ++r) {
          st[n].v[lane][r] = std::exp2(st[n].v[lane][r] * sl2 - offset);
          lane_sum[lane] += st[n].v[lane][r];
        }
    }
    for (int blk = 0; blk < d / 32; ++blk)
      for (int n = 0; n < 2; ++n)
        for (int kk = 0; kk < 4; ++kk)
          model::mfma_32x32x8(T, load_operand(vt_stage, [&](int l) {
                                return frag::in_transposed_tile(frag::shift_rows(frag::fwd::v_operand(l, blk, kk, 0), n * 32));
                              }),
                              acc_as_operand(st[n], kk, T), o[blk]);
  }
  Mat got(sq, d);
  std::vector<double> lse(sq);
  for (int lane = 0; lane < 64; ++lane) {
    const float row_sum = lane_sum[lane] + lane_sum[lane ^ mfma::column_partner_xor];
    const float inv = kfa::common::inverse_sum(row_sum);
    for (int blk = 0; blk < d / 32; ++blk)
      for (int r = 0; r < 16; ++r) {
        const Coord c = frag::fwd::out(lane, blk, r);
        got.at(c.row, c.col) = model::round_input(o[blk].v[lane][r] * inv, T);
      }
    lse[frag::fwd::query_of_lane(lane)] = kfa::common::row_lse(row_max[lane], row_sum, scale);
  }
  // P and O are rounded to the 16-bit type: allow a few units of its last place
  const double tol = T == Input::f16 ? 4e-3 : 3e-2;
  double worst = 0, worst_lse = 0;
  for (std::size_t i = 0; i < got.v.size(); ++i) worst = std::max(worst, double(std::abs(got.v[i] - o_ref.v[i])));
  for (int i = 0; i < sq; ++i) worst_lse = std::max(worst_lse, std::abs(lse[i] - lse_ref[i]));
  INFO("causal " << causal << ", max |O - O_fp64| " << worst << ", max |LSE - LSE_fp64| " << worst_lse);
  CHECK(worst <= tol);
  CHECK(worst_lse <= 1e-4);
  CHECK(std::isfinite(worst));
}

TEST_CASE("MFMA model: deliberately wrong layouts are caught (the checks can fail)", "[mfma]") {
  const Mat k = random_ints(32, 64), q = random_ints(32, 64);
  const model::Accum st = scores_t(Input::f16, k, q);
  const Mat s_ref = matmul(k, q.transposed());  // [key][query]

  // a plausible misreading of the accumulator layout: each half-wave holding 16 consecutive rows
  const auto wrong_acc = [](int lane, int r) { return Coord{16 * (lane / 32) + r, lane % 32}; };
  Mat wrong(32, 32);
  scatter(st, wrong_acc, wrong);
  CHECK(mismatches(wrong, s_ref) > 0);
  Mat right(32, 32);
  scatter(st, frag::fwd::score, right);
  CHECK(mismatches(right, s_ref) == 0);

  // a wrong reduction partner (lane ^ 16 holds another query's column)
  const std::vector<float> bad = column_reduce(st, 16, fmax2);
  int bad_rows = 0;
  for (int lane = 0; lane < 64; ++lane) {
    float m = -INFINITY;
    for (int key = 0; key < 32; ++key) m = std::max(m, s_ref.at(key, frag::fwd::query_of_lane(lane)));
    bad_rows += bad[lane] != m;
  }
  CHECK(bad_rows > 0);

  // a B operand that forgets the 4 (lane / 32) depth offset gives a wrong product
  model::Accum st_wrong;
  for (int kk = 0; kk < 8; ++kk) {
    model::Operand b;
    for (int lane = 0; lane < 64; ++lane)
      for (int i = 0; i < 4; ++i) b.v[lane][i] = q.at(lane % 32, 8 * kk + i);
    model::mfma_32x32x8(Input::f16, load_operand(k, [&](int l) { return frag::fwd::k_operand(l, kk, 0); }), b,
                        st_wrong);
  }
  Mat s_wrong(32, 32);
  scatter(st_wrong, frag::fwd::score, s_wrong);
  CHECK(mismatches(s_wrong, s_ref) > 0);
}
