/* Causal attention forward and backward from C through kfa's C API, on the host. */
#include <kfa/c/kfa.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
  enum { B = 2, N = 128, H = 8, D = 64 };
  const int64_t e4[4] = {B, N, H, D}, e3[3] = {B, H, N};
  const size_t n = (size_t)B * N * H * D;
  float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4), *lse = malloc((size_t)B * H * N * 4);
  float *dout = malloc(n * 4), *dq = malloc(n * 4), *dk = malloc(n * 4), *dv = malloc(n * 4);
  for (size_t i = 0; i < n; ++i) {
    q[i] = sinf(0.1f * (float)i);
    k[i] = cosf(0.3f * (float)i);
    v[i] = sinf(0.7f * (float)i);
    dout[i] = cosf(0.05f * (float)i);
  }
  kfa_context ctx;
  if (kfa_initialize() != KFA_SUCCESS || kfa_context_create(&ctx, KFA_MEMORY_HOST, NULL) != KFA_SUCCESS) {
    fprintf(stderr, "%s\n", kfa_last_error());
    return 1;
  }
  kfa_tensor tq = kfa_tensor_contiguous(q, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tk = kfa_tensor_contiguous(k, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tv = kfa_tensor_contiguous(v, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor to = kfa_tensor_contiguous(o, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tl = kfa_tensor_contiguous(lse, KFA_DTYPE_F32, 3, e3, KFA_MEMORY_HOST);
  kfa_tensor tdo = kfa_tensor_contiguous(dout, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tdq = kfa_tensor_contiguous(dq, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tdk = kfa_tensor_contiguous(dk, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_tensor tdv = kfa_tensor_contiguous(dv, KFA_DTYPE_F32, 4, e4, KFA_MEMORY_HOST);
  kfa_params p;
  kfa_params_default(&p);
  p.causal = 1;
  kfa_status st = kfa_forward(ctx, &tq, &tk, &tv, &to, &tl, &p);
  if (st == KFA_SUCCESS) st = kfa_backward(ctx, &tdo, &tq, &tk, &tv, &to, &tl, &tdq, &tdk, &tdv, &p);
  if (st == KFA_SUCCESS) st = kfa_context_fence(ctx);
  if (st != KFA_SUCCESS) {
    fprintf(stderr, "kfa failed (%d): %s\n", (int)st, kfa_last_error());
    return 1;
  }
  const size_t mid = n / 4 + 5;  /* row N / 2 of the first batch: it sees N / 2 + 1 keys */
  printf("o = %f, lse = %f, dq = %f at element %zu\n", o[mid], lse[N / 2], dq[mid], mid);
  kfa_context_destroy(ctx);
  kfa_finalize();
  free(q); free(k); free(v); free(o); free(lse); free(dout); free(dq); free(dk); free(dv);
  return 0;
}
