/* The C API (include/kfa/c/kfa.h) from C11 on the host: forward, backward, packed sequences and a KV
 * cache with an append, in float and double, against a plain fp64 attention written here, with the
 * tolerance rule (kfa's error <= 2x the error of the same plain attention in the input precision + a
 * tiny epsilon); outputs poisoned with NaN first; bad input returns KFA_ERROR_INVALID_ARGUMENT with a
 * message and writes nothing. Exits non-zero on any failure. */
#include <kfa/c/kfa.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define EXPECT(cond, ...)                 \
  do {                                    \
    if (!(cond)) {                        \
      ++failures;                         \
      printf("FAILED %s:%d: ", __FILE__, __LINE__); \
      printf(__VA_ARGS__);                \
      printf("\n");                       \
    }                                     \
  } while (0)

static unsigned long long rng_state = 88172645463325252ull;
static double uniform(void) { /* xorshift64*: a fresh sequence per seed, in [-1, 1) */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Plain attention of one (batch, head): rows sq x keys sk, row strides in elements; double (ref) or
 * with every product and sum rounded to float (the plain computation in float precision). */
static void plain_row(const double* q, const double* k, const double* v, int sk, int d, double scale, int causal,
                      int row, int sq, int lowp, double* out, double* lse) {
  double s[512], m = -INFINITY, sum = 0;
  const int last = causal ? row + sk - sq : sk - 1;
  for (int j = 0; j < sk; ++j) {
    if (j > last) { s[j] = -INFINITY; continue; }
    double dot = 0;
    for (int c = 0; c < d; ++c) dot = lowp ? (float)(dot + (float)(q[c] * k[(long)j * d + c])) : dot + q[c] * k[(long)j * d + c];
    s[j] = lowp ? (float)(dot * scale) : dot * scale;
    if (s[j] > m) m = s[j];
  }
  for (int c = 0; c < d; ++c) out[c] = 0;
  if (m == -INFINITY) { *lse = -INFINITY; return; }
  for (int j = 0; j < sk; ++j) { s[j] = lowp ? (float)exp(s[j] - m) : exp(s[j] - m); sum += s[j]; }
  for (int j = 0; j < sk; ++j)
    for (int c = 0; c < d; ++c) out[c] += s[j] / sum * v[(long)j * d + c];
  *lse = m + log(sum);
}

typedef struct { int b, sq, sk, h, hk, d, causal; } Dims;

/* q [b, sq, h, d], k/v [b, sk, hk, d] (doubles holding the stored values) -> out [b, sq, h, d], lse [b, h, sq]. */
static void plain_attention(const Dims* n, const double* q, const double* k, const double* v, int lowp, double* out,
                            double* lse) {
  double qr[256], kr[512 * 64], vr[512 * 64];
  const double scale = 1.0 / sqrt((double)n->d);
  for (int b = 0; b < n->b; ++b)
    for (int h = 0; h < n->h; ++h) {
      const int hk = h / (n->h / n->hk);
      for (int j = 0; j < n->sk; ++j)
        for (int c = 0; c < n->d; ++c) {
          kr[j * n->d + c] = k[(((long)b * n->sk + j) * n->hk + hk) * n->d + c];
          vr[j * n->d + c] = v[(((long)b * n->sk + j) * n->hk + hk) * n->d + c];
        }
      for (int i = 0; i < n->sq; ++i) {
        for (int c = 0; c < n->d; ++c) qr[c] = q[(((long)b * n->sq + i) * n->h + h) * n->d + c];
        plain_row(qr, kr, vr, n->sk, n->d, scale, n->causal, i, n->sq, lowp,
                  out + (((long)b * n->sq + i) * n->h + h) * n->d, lse + ((long)b * n->h + h) * n->sq + i);
      }
    }
}

static double max_diff(const double* a, const double* b, long n) {
  double m = 0;
  for (long i = 0; i < n; ++i) {
    if (isnan(a[i]) || isnan(b[i])) return INFINITY;
    if (isinf(a[i]) || isinf(b[i])) { if (a[i] != b[i]) return INFINITY; continue; }
    if (fabs(a[i] - b[i]) > m) m = fabs(a[i] - b[i]);
  }
  return m;
}

/* Buffers of one element type: `f` float or double storage, and the stored values as doubles. */
typedef struct { void* data; double* vals; long n; int dt; } Buf;

static Buf buf_new(long n, int dt, int random) {
  Buf x = {malloc((size_t)n * (dt == KFA_DTYPE_F64 ? 8 : 4)), malloc((size_t)n * 8), n, dt};
  for (long i = 0; i < n; ++i) {
    double v = random ? uniform() : NAN;
    if (dt == KFA_DTYPE_F64) ((double*)x.data)[i] = v;
    else { ((float*)x.data)[i] = (float)v; v = (float)v; }
    x.vals[i] = v;
  }
  return x;
}
static void buf_read(Buf* x) {
  for (long i = 0; i < x->n; ++i) x->vals[i] = x->dt == KFA_DTYPE_F64 ? ((double*)x->data)[i] : ((float*)x->data)[i];
}
static void buf_free(Buf* x) { free(x->data); free(x->vals); }
static kfa_tensor tens(Buf* x, int rank, int64_t e0, int64_t e1, int64_t e2, int64_t e3) {
  const int64_t e[4] = {e0, e1, e2, e3};
  return kfa_tensor_contiguous(x->data, x->dt, rank, e, KFA_MEMORY_HOST);
}

static void check_forward(kfa_context ctx, int dt, int causal) {
  Dims n = {2, 37, 45, 4, 2, 16, causal};
  const long nq = (long)n.b * n.sq * n.h * n.d, nk = (long)n.b * n.sk * n.hk * n.d, nl = (long)n.b * n.h * n.sq;
  Buf q = buf_new(nq, dt, 1), k = buf_new(nk, dt, 1), v = buf_new(nk, dt, 1), o = buf_new(nq, dt, 0), l = buf_new(nl, dt, 0);
  kfa_tensor tq = tens(&q, 4, n.b, n.sq, n.h, n.d), tk = tens(&k, 4, n.b, n.sk, n.hk, n.d), tv = tens(&v, 4, n.b, n.sk, n.hk, n.d);
  kfa_tensor to = tens(&o, 4, n.b, n.sq, n.h, n.d), tl = tens(&l, 3, n.b, n.h, n.sq, 0);
  kfa_params p;
  kfa_params_default(&p);
  p.causal = causal;
  kfa_status st = kfa_forward(ctx, &tq, &tk, &tv, &to, &tl, &p);
  kfa_context_fence(ctx);
  EXPECT(st == KFA_SUCCESS, "kfa_forward: %s", kfa_last_error());
  buf_read(&o);
  buf_read(&l);
  double* ro = malloc(nq * 8), *rl = malloc(nl * 8), *po = malloc(nq * 8), *pl = malloc(nl * 8);
  plain_attention(&n, q.vals, k.vals, v.vals, 0, ro, rl);
  plain_attention(&n, q.vals, k.vals, v.vals, dt != KFA_DTYPE_F64, po, pl);
  for (long i = 0; i < nq; ++i) if (dt != KFA_DTYPE_F64) po[i] = (float)po[i];
  const double eps = dt == KFA_DTYPE_F64 ? 1e-12 : 1e-6;
  const double eo = max_diff(o.vals, ro, nq), el = max_diff(l.vals, rl, nl);
  const double bo = 2 * max_diff(po, ro, nq) + eps, bl = 2 * max_diff(pl, rl, nl) + eps * 10;
  EXPECT(eo <= bo, "forward %s causal %d: o error %g > %g", dt == KFA_DTYPE_F64 ? "f64" : "f32", causal, eo, bo);
  EXPECT(el <= bl, "forward %s causal %d: lse error %g > %g", dt == KFA_DTYPE_F64 ? "f64" : "f32", causal, el, bl);

  /* backward: dq, dk, dv against the fp64 gradients of the plain attention */
  Buf dout = buf_new(nq, dt, 1), dq = buf_new(nq, dt, 0), dk = buf_new(nk, dt, 0), dv = buf_new(nk, dt, 0);
  kfa_tensor tdo = tens(&dout, 4, n.b, n.sq, n.h, n.d), tdq = tens(&dq, 4, n.b, n.sq, n.h, n.d);
  kfa_tensor tdk = tens(&dk, 4, n.b, n.sk, n.hk, n.d), tdv = tens(&dv, 4, n.b, n.sk, n.hk, n.d);
  st = kfa_backward(ctx, &tdo, &tq, &tk, &tv, &to, &tl, &tdq, &tdk, &tdv, &p);
  kfa_context_fence(ctx);
  EXPECT(st == KFA_SUCCESS, "kfa_backward: %s", kfa_last_error());
  buf_read(&dq);
  buf_read(&dk);
  buf_read(&dv);
  /* fp64 gradients: P = softmax rows, dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO o)), dQ = dS K scale, dK = dS^T Q scale */
  double* gq = calloc(nq, 8), *gk = calloc(nk, 8), *gv = calloc(nk, 8);
  const double scale = 1.0 / sqrt((double)n.d);
  for (int b = 0; b < n.b; ++b)
    for (int h = 0; h < n.h; ++h) {
      const int hk = h / (n.h / n.hk);
      for (int i = 0; i < n.sq; ++i) {
        const double* qi = q.vals + (((long)b * n.sq + i) * n.h + h) * n.d;
        const double* doi = dout.vals + (((long)b * n.sq + i) * n.h + h) * n.d;
        const double* oi = ro + (((long)b * n.sq + i) * n.h + h) * n.d;
        const double lse_i = rl[((long)b * n.h + h) * n.sq + i];
        double di = 0;
        for (int c = 0; c < n.d; ++c) di += doi[c] * oi[c];
        for (int j = 0; j < n.sk; ++j) {
          if (causal && j > i + n.sk - n.sq) continue;
          const double* kj = k.vals + (((long)b * n.sk + j) * n.hk + hk) * n.d;
          const double* vj = v.vals + (((long)b * n.sk + j) * n.hk + hk) * n.d;
          double s = 0, dp = 0;
          for (int c = 0; c < n.d; ++c) { s += qi[c] * kj[c]; dp += doi[c] * vj[c]; }
          const double pij = exp(s * scale - lse_i), ds = pij * (dp - di);
          for (int c = 0; c < n.d; ++c) {
            gv[(((long)b * n.sk + j) * n.hk + hk) * n.d + c] += pij * doi[c];
            gq[(((long)b * n.sq + i) * n.h + h) * n.d + c] += ds * kj[c] * scale;
            gk[(((long)b * n.sk + j) * n.hk + hk) * n.d + c] += ds * qi[c] * scale;
          }
        }
      }
    }
  /* fp64 runs to rounding; fp32 to a relative bound (the gradients of a plain fp32 attention err by
   * about 1e-6 relative here, and the bound is 2e-4 of the largest gradient) */
  double gmax = 1;
  for (long i = 0; i < nq; ++i) gmax = fmax(gmax, fabs(gq[i]));
  for (long i = 0; i < nk; ++i) gmax = fmax(gmax, fmax(fabs(gk[i]), fabs(gv[i])));
  const double gtol = (dt == KFA_DTYPE_F64 ? 1e-10 : 2e-4) * gmax;
  const double eq = max_diff(dq.vals, gq, nq), ek = max_diff(dk.vals, gk, nk), ev = max_diff(dv.vals, gv, nk);
  EXPECT(eq <= gtol && ek <= gtol && ev <= gtol, "backward %s causal %d: errors dq %g dk %g dv %g (bound %g)",
         dt == KFA_DTYPE_F64 ? "f64" : "f32", causal, eq, ek, ev, gtol);

  /* the same gradients through a caller-owned workspace (NaN-poisoned outputs); one byte short of the
   * size it asks for is an error that writes nothing */
  size_t wsb = 0;
  st = kfa_backward_workspace_size(ctx, &tq, &tk, &p, &wsb);
  EXPECT(st == KFA_SUCCESS && wsb > 0, "kfa_backward_workspace_size: %s (%zu bytes)", kfa_last_error(), wsb);
  void* ws = malloc(wsb + 8);
  Buf dq2 = buf_new(nq, dt, 0), dk2 = buf_new(nk, dt, 0), dv2 = buf_new(nk, dt, 0);
  kfa_tensor tdq2 = tens(&dq2, 4, n.b, n.sq, n.h, n.d);
  kfa_tensor tdk2 = tens(&dk2, 4, n.b, n.sk, n.hk, n.d), tdv2 = tens(&dv2, 4, n.b, n.sk, n.hk, n.d);
  st = kfa_backward_with_workspace(ctx, &tdo, &tq, &tk, &tv, &to, &tl, &tdq2, &tdk2, &tdv2, &p, ws, wsb - 1);
  kfa_context_fence(ctx);
  buf_read(&dq2);
  EXPECT(st == KFA_ERROR_INVALID_ARGUMENT && isnan(dq2.vals[0]) && isnan(dq2.vals[nq - 1]),
         "a workspace too small: status %d, dq[0] %g", (int)st, dq2.vals[0]);
  st = kfa_backward_with_workspace(ctx, &tdo, &tq, &tk, &tv, &to, &tl, &tdq2, &tdk2, &tdv2, &p, ws, wsb);
  kfa_context_fence(ctx);
  EXPECT(st == KFA_SUCCESS, "kfa_backward_with_workspace: %s", kfa_last_error());
  buf_read(&dq2);
  buf_read(&dk2);
  buf_read(&dv2);
  const double wq = max_diff(dq2.vals, gq, nq), wk = max_diff(dk2.vals, gk, nk), wv = max_diff(dv2.vals, gv, nk);
  EXPECT(wq <= gtol && wk <= gtol && wv <= gtol, "backward with workspace %s causal %d: errors dq %g dk %g dv %g (bound %g)",
         dt == KFA_DTYPE_F64 ? "f64" : "f32", causal, wq, wk, wv, gtol);
  free(ws);
  buf_free(&dq2); buf_free(&dk2); buf_free(&dv2);
  free(ro); free(rl); free(po); free(pl); free(gq); free(gk); free(gv);
  buf_free(&q); buf_free(&k); buf_free(&v); buf_free(&o); buf_free(&l);
  buf_free(&dout); buf_free(&dq); buf_free(&dk); buf_free(&dv);
}

/* Packed sequences (lengths 20 and 0 and 33) and a KV cache (lengths 10 and 0, 3 keys appended), each
 * against the plain fp64 attention of every sequence alone. */
static void check_varlen_and_kvcache(kfa_context ctx, int dt) {
  const int h = 2, hk = 1, d = 16, lens[3] = {20, 0, 33}, total = 53;
  Buf q = buf_new((long)total * h * d, dt, 1), k = buf_new((long)total * hk * d, dt, 1), v = buf_new((long)total * hk * d, dt, 1);
  Buf o = buf_new((long)total * h * d, dt, 0), l = buf_new((long)h * total, dt, 0);
  int32_t cu[4] = {0, 20, 20, 53};
  const int64_t ecu[1] = {4};
  kfa_tensor tcu = kfa_tensor_contiguous(cu, KFA_DTYPE_I32, 1, ecu, KFA_MEMORY_HOST);
  kfa_tensor tq = tens(&q, 3, total, h, d, 0), tk = tens(&k, 3, total, hk, d, 0), tv = tens(&v, 3, total, hk, d, 0);
  kfa_tensor to = tens(&o, 3, total, h, d, 0), tl = tens(&l, 2, h, total, 0, 0);
  kfa_params p;
  kfa_params_default(&p);
  p.causal = 1;
  kfa_status st = kfa_forward_varlen(ctx, &tq, &tk, &tv, &to, &tl, &tcu, &tcu, 33, 33, &p);
  kfa_context_fence(ctx);
  EXPECT(st == KFA_SUCCESS, "kfa_forward_varlen: %s", kfa_last_error());
  buf_read(&o);
  const double tol = dt == KFA_DTYPE_F64 ? 1e-12 : 1e-5;
  for (int s = 0; s < 3; ++s) {
    if (lens[s] == 0) continue;
    Dims n = {1, lens[s], lens[s], h, hk, d, 1};
    double ro[33 * 2 * 16], rl[2 * 33];
    plain_attention(&n, q.vals + (long)cu[s] * h * d, k.vals + (long)cu[s] * hk * d, v.vals + (long)cu[s] * hk * d, 0, ro, rl);
    const double e = max_diff(o.vals + (long)cu[s] * h * d, ro, (long)lens[s] * h * d);
    EXPECT(e <= tol, "varlen sequence %d: o error %g", s, e);
  }

  /* the cache: capacity 16, lengths {10, 0}, append 3 keys; the queries (2 tokens) see 13 and 3 keys */
  const int b = 2, cap = 16, snew = 3, sq = 2;
  Buf kc = buf_new((long)b * cap * hk * d, dt, 1), vc = buf_new((long)b * cap * hk * d, dt, 1);
  Buf kn = buf_new((long)b * snew * hk * d, dt, 1), vn = buf_new((long)b * snew * hk * d, dt, 1);
  Buf cq = buf_new((long)b * sq * h * d, dt, 1), co = buf_new((long)b * sq * h * d, dt, 0), cl = buf_new((long)b * h * sq, dt, 0);
  int32_t clen[2] = {10, 0};
  const int64_t elen[1] = {2};
  kfa_tensor tlen = kfa_tensor_contiguous(clen, KFA_DTYPE_I32, 1, elen, KFA_MEMORY_HOST);
  kfa_tensor tkc = tens(&kc, 4, b, cap, hk, d), tvc = tens(&vc, 4, b, cap, hk, d), tkn = tens(&kn, 4, b, snew, hk, d),
             tvn = tens(&vn, 4, b, snew, hk, d), tcq = tens(&cq, 4, b, sq, h, d), tco = tens(&co, 4, b, sq, h, d),
             tcl = tens(&cl, 3, b, h, sq, 0);
  st = kfa_forward_kvcache(ctx, &tcq, &tkc, &tvc, &tco, &tcl, &tlen, &tkn, &tvn, NULL, 0, 1, &p);
  kfa_context_fence(ctx);
  EXPECT(st == KFA_SUCCESS, "kfa_forward_kvcache: %s", kfa_last_error());
  buf_read(&co);
  for (int s = 0; s < b; ++s) {
    const int len = clen[s] + snew;
    double kk[16 * 16], vv[16 * 16], ro[2 * 2 * 16], rl[4];
    for (int j = 0; j < len; ++j)
      for (int c = 0; c < d; ++c) {
        const int from_new = j >= clen[s];
        kk[j * d + c] = from_new ? kn.vals[((long)s * snew + j - clen[s]) * d + c] : kc.vals[((long)s * cap + j) * d + c];
        vv[j * d + c] = from_new ? vn.vals[((long)s * snew + j - clen[s]) * d + c] : vc.vals[((long)s * cap + j) * d + c];
      }
    Dims n = {1, sq, len, h, hk, d, 1};
    plain_attention(&n, cq.vals + (long)s * sq * h * d, kk, vv, 0, ro, rl);
    const double e = max_diff(co.vals + (long)s * sq * h * d, ro, (long)sq * h * d);
    EXPECT(e <= tol, "kvcache sequence %d: o error %g", s, e);
  }
  /* the append landed in the cache */
  buf_read(&kc);
  EXPECT(kc.vals[(10L) * d] == kn.vals[0] && kc.vals[((long)cap) * d] == kn.vals[(long)snew * d], "append not in place");
  buf_free(&q); buf_free(&k); buf_free(&v); buf_free(&o); buf_free(&l);
  buf_free(&kc); buf_free(&vc); buf_free(&kn); buf_free(&vn); buf_free(&cq); buf_free(&co); buf_free(&cl);
}

static void check_errors(kfa_context ctx) {
  Buf q = buf_new(2 * 8 * 2 * 16, KFA_DTYPE_F32, 1), o = buf_new(2 * 8 * 2 * 16, KFA_DTYPE_F32, 0), l = buf_new(2 * 2 * 8, KFA_DTYPE_F32, 0);
  kfa_tensor tq = tens(&q, 4, 2, 8, 2, 16), to = tens(&o, 4, 2, 8, 2, 16), tl = tens(&l, 3, 2, 2, 8, 0);
  kfa_tensor bad = tens(&q, 3, 16, 2, 16, 0);
  kfa_status st = kfa_forward(ctx, &tq, &bad, &tq, &to, &tl, NULL);
  EXPECT(st == KFA_ERROR_INVALID_ARGUMENT && strstr(kfa_last_error(), "k must have rank 4") != NULL,
         "wrong rank: status %d, message '%s'", st, kfa_last_error());
  kfa_tensor small = tens(&q, 4, 2, 8, 2, 8); /* head_dim 8 against q's 16 */
  st = kfa_forward(ctx, &tq, &small, &small, &to, &tl, NULL);
  EXPECT(st == KFA_ERROR_INVALID_ARGUMENT && strlen(kfa_last_error()) > 0, "wrong extents: status %d", st);
  st = kfa_forward(ctx, &tq, &tq, &tq, &tq, &tl, NULL); /* o aliases q */
  EXPECT(st == KFA_ERROR_INVALID_ARGUMENT && strstr(kfa_last_error(), "overlap") != NULL, "aliasing: status %d", st);
  kfa_tensor dev = tq;
  dev.memory = KFA_MEMORY_DEVICE;
  st = kfa_forward(ctx, &dev, &dev, &dev, &to, &tl, NULL);
  EXPECT(st == KFA_ERROR_INVALID_ARGUMENT, "memory space mismatch: status %d", st);
  buf_read(&o);
  int untouched = 1;
  for (long i = 0; i < o.n; ++i) untouched = untouched && isnan(o.vals[i]);
  EXPECT(untouched, "a failed call wrote its output");
  EXPECT(kfa_forward(NULL, &tq, &tq, &tq, &to, &tl, NULL) == KFA_ERROR_INVALID_ARGUMENT, "NULL context accepted");
  buf_free(&q); buf_free(&o); buf_free(&l);
}

/* A block mask through the C API: all blocks computed equals no mask; a block row that is skipped gives
 * its queries zeros and lse -inf, the other rows unchanged; bad block sizes are refused. */
static void check_block_mask(kfa_context ctx) {
  const int64_t b = 1, s = 40, h = 2, d = 16, nb = 3; /* 16-row blocks, the last one partial */
  const long nq = b * s * h * d, nl = b * h * s;
  Buf q = buf_new(nq, KFA_DTYPE_F64, 1), k = buf_new(nq, KFA_DTYPE_F64, 1), v = buf_new(nq, KFA_DTYPE_F64, 1);
  Buf o0 = buf_new(nq, KFA_DTYPE_F64, 0), l0 = buf_new(nl, KFA_DTYPE_F64, 0);
  Buf o1 = buf_new(nq, KFA_DTYPE_F64, 0), l1 = buf_new(nl, KFA_DTYPE_F64, 0);
  kfa_tensor tq = tens(&q, 4, b, s, h, d), tk = tens(&k, 4, b, s, h, d), tv = tens(&v, 4, b, s, h, d);
  kfa_tensor to0 = tens(&o0, 4, b, s, h, d), tl0 = tens(&l0, 3, b, h, s, 0);
  kfa_tensor to1 = tens(&o1, 4, b, s, h, d), tl1 = tens(&l1, 3, b, h, s, 0);
  uint8_t blocks[9];
  for (int i = 0; i < 9; ++i) blocks[i] = i >= nb; /* block row 0 skipped, the rest computed */
  kfa_block_mask mask = NULL;
  EXPECT(kfa_block_mask_create(&mask, s, s, 16, 16, 1, 1, blocks) == KFA_SUCCESS, "block mask: %s", kfa_last_error());
  kfa_params p;
  kfa_params_default(&p);
  EXPECT(kfa_forward(ctx, &tq, &tk, &tv, &to0, &tl0, &p) == KFA_SUCCESS, "forward: %s", kfa_last_error());
  p.block_mask = mask;
  EXPECT(kfa_forward(ctx, &tq, &tk, &tv, &to1, &tl1, &p) == KFA_SUCCESS, "masked forward: %s", kfa_last_error());
  kfa_context_fence(ctx);
  buf_read(&o0); buf_read(&l0); buf_read(&o1); buf_read(&l1);
  int ok = 1;
  for (long i = 0; i < nq; ++i) {
    const long row = (i / (h * d)) % s;
    ok = ok && (row < 16 ? o1.vals[i] == 0.0 : fabs(o1.vals[i] - o0.vals[i]) < 1e-12);
  }
  for (long i = 0; i < nl; ++i) ok = ok && (i % s < 16 ? isinf(l1.vals[i]) && l1.vals[i] < 0 : fabs(l1.vals[i] - l0.vals[i]) < 1e-12);
  EXPECT(ok, "block mask: the skipped block row is not zero / -inf, or the others changed");
  kfa_block_mask_destroy(mask);
  EXPECT(kfa_block_mask_create(&mask, s, s, 10, 10, 1, 1, blocks) == KFA_ERROR_INVALID_ARGUMENT && mask == NULL,
         "block size 10 accepted");
  buf_free(&q); buf_free(&k); buf_free(&v); buf_free(&o0); buf_free(&l0); buf_free(&o1); buf_free(&l1);
}

int main(void) {
  kfa_context ctx = NULL;
  EXPECT(kfa_forward(ctx, NULL, NULL, NULL, NULL, NULL, NULL) == KFA_ERROR_NOT_INITIALIZED, "call before initialize");
  if (kfa_initialize() != KFA_SUCCESS || kfa_context_create(&ctx, KFA_MEMORY_HOST, NULL) != KFA_SUCCESS) {
    printf("kfa-tests-c: setup failed: %s\n", kfa_last_error());
    return 1;
  }
  for (int causal = 0; causal < 2; ++causal) {
    check_forward(ctx, KFA_DTYPE_F32, causal);
    check_forward(ctx, KFA_DTYPE_F64, causal);
  }
  check_varlen_and_kvcache(ctx, KFA_DTYPE_F32);
  check_varlen_and_kvcache(ctx, KFA_DTYPE_F64);
  check_errors(ctx);
  check_block_mask(ctx);
  kfa_context_destroy(ctx);
  kfa_finalize();
  printf("kfa-tests-c: %s (%d failures)\n", failures ? "FAILED" : "all checks passed", failures);
  return failures ? 1 : 0;
}
