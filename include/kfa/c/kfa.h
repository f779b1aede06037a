/* kfa C API (C11): exact attention (FlashAttention-style forward and backward, packed variable-length
 * sequences, KV-cache decode) for C and Fortran codes. Tensors are described by plain descriptors
 * (pointer, element type, rank, extents, strides in elements, memory space); a context binds the calls
 * to one Kokkos execution-space instance (on CUDA: a cudaStream_t; on HIP: a hipStream_t). Every call
 * validates its arguments exactly as the C++ API does (the C API builds the same Kokkos Views and calls
 * the same entry points), returns a kfa_status, and never lets a C++ exception cross it; the message
 * of the last failure of the calling thread is kfa_last_error(). Nothing is written when a call fails
 * validation. Calls are asynchronous on the context's instance; kfa_context_fence waits.
 *
 * Layouts are kfa's: q, o [batch, seqlen_q, heads, head_dim], k, v [batch, seqlen_k, heads_kv,
 * head_dim], lse [batch, heads, seqlen_q] (float; double for double inputs), unit stride in the last
 * dimension, any other strides. (A Fortran array q(head_dim, heads, seqlen, batch) is exactly this.) */
#ifndef KFA_C_KFA_H
#define KFA_C_KFA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t kfa_status;
#define KFA_SUCCESS 0
#define KFA_ERROR_INVALID_ARGUMENT 1 /* shapes, dtypes, layouts, aliasing, option values, indices */
#define KFA_ERROR_UNSUPPORTED 2      /* a dtype or memory space this build does not have */
#define KFA_ERROR_LAUNCH 3           /* a kernel launch or device allocation failed */
#define KFA_ERROR_NOT_INITIALIZED 4  /* kfa_initialize (or Kokkos::initialize) has not run */
#define KFA_ERROR_INTERNAL 5         /* any other failure */

/* Element types */
#define KFA_DTYPE_F32 0
#define KFA_DTYPE_F64 1
#define KFA_DTYPE_F16 2 /* IEEE half; only in GPU builds, where Kokkos has a 16-bit half_t */
#define KFA_DTYPE_BF16 3
#define KFA_DTYPE_I32 4 /* cu_seqlens, cache_seqlens, block_table */

/* Memory spaces */
#define KFA_MEMORY_HOST 0
#define KFA_MEMORY_DEVICE 1 /* the default execution space's memory (CUDA / HIP device memory) */

#define KFA_MAX_RANK 5

/* A strided tensor. extents[r], strides[r] for r < rank; strides in elements. */
typedef struct kfa_tensor {
  void* data;
  int64_t extents[KFA_MAX_RANK];
  int64_t strides[KFA_MAX_RANK];
  int32_t dtype;
  int32_t rank;
  int32_t memory;
  int32_t reserved; /* 0 */
} kfa_tensor;

/* A row-major (C order) tensor of the given extents. */
kfa_tensor kfa_tensor_contiguous(void* data, int32_t dtype, int32_t rank, const int64_t* extents, int32_t memory);

/* A block-sparse mask (kfa::BlockMask): which (query block, key block) pairs of the scores are computed;
 * skipped blocks cost nothing. See kfa_block_mask_create. */
typedef struct kfa_block_mask_s* kfa_block_mask;

/* Options of a call (kfa::Params). kfa_params_default gives plain softmax(Q K^T / sqrt(d)) V. */
typedef struct kfa_params {
  double softmax_scale;        /* used when has_softmax_scale != 0; else 1 / sqrt(head_dim) */
  double softcap;              /* 0 = off */
  double dropout_p;            /* 0 = off (forward and backward; not with kvcache) */
  int64_t window_left;         /* -1 = unbounded */
  int64_t window_right;        /* -1 = unbounded */
  uint64_t seed, offset;       /* dropout's Philox key */
  const float* alibi_slopes;   /* host pointer to `heads` slopes; NULL = off */
  int64_t num_alibi_slopes;
  int32_t has_softmax_scale;
  int32_t causal;              /* bottom-right aligned */
  int32_t deterministic;       /* backward: bitwise reproducible */
  int32_t backend;             /* 0 automatic, 1 portable, 2 native */
  kfa_block_mask block_mask;   /* NULL = none; combines with causal / window (forward, backward, varlen) */
} kfa_params;

void kfa_params_default(kfa_params* params);

/* Kokkos: kfa_initialize initializes Kokkos unless the application already has (then it does nothing
 * and kfa_finalize will not finalize it). */
kfa_status kfa_initialize(void);
kfa_status kfa_finalize(void);

/* A context: calls on `memory` tensors run on that memory's execution space; `stream` (a cudaStream_t
 * or hipStream_t, or NULL for the default instance) is used for KFA_MEMORY_DEVICE. */
typedef struct kfa_context_s* kfa_context;
kfa_status kfa_context_create(kfa_context* ctx, int32_t memory, void* stream);
kfa_status kfa_context_destroy(kfa_context ctx);
kfa_status kfa_context_fence(kfa_context ctx);

/* A block mask from a dense block matrix blocks[batch][heads][n_qblocks][n_kblocks] in host memory
 * (row-major, nonzero = computed), n_qblocks = ceil(seqlen_q / block_q), n_kblocks likewise; batch or
 * heads 1 broadcasts over the call's. Block sizes are multiples of 16 (the native GPU kernels take 64,
 * 128 and 256). With packed sequences the block rows and columns count positions inside each sequence.
 * The mask is copied to a device on first use there and kept; destroy it only after the calls that use
 * it have completed (kfa_context_fence). */
kfa_status kfa_block_mask_create(kfa_block_mask* mask, int64_t seqlen_q, int64_t seqlen_k, int64_t block_q,
                                 int64_t block_k, int64_t batch, int64_t heads, const uint8_t* blocks);
kfa_status kfa_block_mask_destroy(kfa_block_mask mask);

/* The message of the calling thread's last failed call ("" when none). */
const char* kfa_last_error(void);

/* o, lse (written) = attention(q, k, v). */
kfa_status kfa_forward(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k, const kfa_tensor* v,
                       const kfa_tensor* o, const kfa_tensor* lse, const kfa_params* params);

/* dq, dk, dv (written) from dout and the forward's q, k, v, out, lse. */
kfa_status kfa_backward(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q, const kfa_tensor* k,
                        const kfa_tensor* v, const kfa_tensor* out, const kfa_tensor* lse, const kfa_tensor* dq,
                        const kfa_tensor* dk, const kfa_tensor* dv, const kfa_params* params);

/* Bytes of workspace a kfa_backward_with_workspace call on these q, k and params needs (O(N d)). */
kfa_status kfa_backward_workspace_size(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k,
                                       const kfa_params* params, size_t* bytes);

/* kfa_backward with a caller-owned workspace: at least kfa_backward_workspace_size bytes, 8-byte
 * aligned, in the context's memory, not overlapping any tensor of the call. The call then allocates
 * nothing and, on a GPU, is asynchronous on the context's stream (unless ALiBi slopes are copied in). */
kfa_status kfa_backward_with_workspace(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q,
                                       const kfa_tensor* k, const kfa_tensor* v, const kfa_tensor* out,
                                       const kfa_tensor* lse, const kfa_tensor* dq, const kfa_tensor* dk,
                                       const kfa_tensor* dv, const kfa_params* params, void* workspace,
                                       size_t workspace_bytes);

/* Packed sequences: q, o [total_q, heads, head_dim], k, v [total_k, heads_kv, head_dim], lse [heads,
 * total_q], cu_seqlens_q / cu_seqlens_k int32 [batch + 1]. */
kfa_status kfa_forward_varlen(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k, const kfa_tensor* v,
                              const kfa_tensor* o, const kfa_tensor* lse, const kfa_tensor* cu_seqlens_q,
                              const kfa_tensor* cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                              const kfa_params* params);
kfa_status kfa_backward_varlen(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q, const kfa_tensor* k,
                               const kfa_tensor* v, const kfa_tensor* out, const kfa_tensor* lse,
                               const kfa_tensor* dq, const kfa_tensor* dk, const kfa_tensor* dv,
                               const kfa_tensor* cu_seqlens_q, const kfa_tensor* cu_seqlens_k, int64_t max_seqlen_q,
                               int64_t max_seqlen_k, const kfa_params* params);

/* KV-cache attention (kfa::forward_kvcache): k_cache, v_cache [batch, capacity, heads_kv, head_dim] or,
 * with block_table (int32 [batch, max_pages]), [num_pages, page_size, heads_kv, head_dim];
 * cache_seqlens int32 [batch]; k_new, v_new [batch, seqlen_new, heads_kv, head_dim] appended first
 * (both NULL: no append); num_splits 0 = automatic; check_indices != 0 validates lengths and pages. */
kfa_status kfa_forward_kvcache(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k_cache,
                               const kfa_tensor* v_cache, const kfa_tensor* o, const kfa_tensor* lse,
                               const kfa_tensor* cache_seqlens, const kfa_tensor* k_new, const kfa_tensor* v_new,
                               const kfa_tensor* block_table, int32_t num_splits, int32_t check_indices,
                               const kfa_params* params);

#ifdef __cplusplus
}
#endif

#endif /* KFA_C_KFA_H */
