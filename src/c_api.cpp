// The C API (include/kfa/c/kfa.h) over the C++ entry points. Each descriptor becomes an unmanaged
// LayoutStride Kokkos View of its element type in its memory space, and the call goes to the same
// kfa::forward / backward / forward_varlen / backward_varlen / forward_kvcache a C++ code calls, so
// every check of the C++ API (shapes, layouts, aliasing, lengths, pages) applies unchanged. What the
// Views cannot express is checked here first: a descriptor's rank, element type and memory space.
// Exceptions become status codes and the calling thread's last-error message.
#include "kfa/c/kfa.h"

#include <Kokkos_Core.hpp>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kfa/kfa.hpp"

struct kfa_block_mask_s {
  kfa::BlockMask mask;
};

struct kfa_context_s {
  std::int32_t memory = KFA_MEMORY_HOST;
  Kokkos::DefaultHostExecutionSpace host;
  Kokkos::DefaultExecutionSpace device;
};

namespace {

thread_local std::string last_error;
bool kokkos_owned = false;

/// A failure the C layer detects itself, with its status code.
struct CallError : std::runtime_error {
  kfa_status code;
  CallError(kfa_status c, const std::string& what) : std::runtime_error("kfa: " + what), code(c) {}
};

template <class F>
kfa_status guarded(F&& f) {
  try {
    f();
    return KFA_SUCCESS;
  } catch (const CallError& e) {
    last_error = e.what();
    return e.code;
  } catch (const kfa::Error& e) {
    last_error = e.what();
    return KFA_ERROR_INVALID_ARGUMENT;
  } catch (const kfa::LaunchError& e) {
    last_error = e.what();
    return KFA_ERROR_LAUNCH;
  } catch (const std::exception& e) {
    last_error = std::string("kfa: ") + e.what();
    return KFA_ERROR_INTERNAL;
  } catch (...) {
    last_error = "kfa: unknown failure";
    return KFA_ERROR_INTERNAL;
  }
}

constexpr bool has_device = !std::is_same_v<Kokkos::DefaultExecutionSpace, Kokkos::DefaultHostExecutionSpace>;

kfa_context_s& context(kfa_context ctx) {
  if (!Kokkos::is_initialized()) throw CallError(KFA_ERROR_NOT_INITIALIZED, "call kfa_initialize first");
  if (ctx == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "the context is NULL");
  return *ctx;
}

/// f(exec, memory_space{}) for the context's execution space.
template <class F>
void with_space(const kfa_context_s& c, F&& f) {
  if (c.memory == KFA_MEMORY_HOST) {
    f(c.host, Kokkos::DefaultHostExecutionSpace::memory_space{});
  } else if constexpr (has_device) {
    f(c.device, Kokkos::DefaultExecutionSpace::memory_space{});
  } else {
    throw CallError(KFA_ERROR_UNSUPPORTED, "this build has no device execution space");
  }
}

template <class T>
struct Tag {
  using type = T;
};

/// f(Tag<T>{}) for the element type `dtype` (the 16-bit types only where Kokkos stores them in 16 bits).
template <class F>
void with_type(std::int32_t dtype, F&& f) {
  using half = Kokkos::Experimental::half_t;
  using bhalf = Kokkos::Experimental::bhalf_t;
  switch (dtype) {
    case KFA_DTYPE_F32: return f(Tag<float>{});
    case KFA_DTYPE_F64: return f(Tag<double>{});
    case KFA_DTYPE_F16:
      if constexpr (sizeof(half) == 2) return f(Tag<half>{});
      throw CallError(KFA_ERROR_UNSUPPORTED, "half tensors need a build whose Kokkos has a 16-bit half_t (a GPU build)");
    case KFA_DTYPE_BF16:
      if constexpr (sizeof(bhalf) == 2) return f(Tag<bhalf>{});
      throw CallError(KFA_ERROR_UNSUPPORTED, "bfloat16 tensors need a build whose Kokkos has a 16-bit bhalf_t (a GPU build)");
    default: throw CallError(KFA_ERROR_INVALID_ARGUMENT, "unknown element type " + std::to_string(dtype));
  }
}

const char* dtype_name(std::int32_t d) {
  switch (d) {
    case KFA_DTYPE_F32: return "f32";
    case KFA_DTYPE_F64: return "f64";
    case KFA_DTYPE_F16: return "f16";
    case KFA_DTYPE_BF16: return "bf16";
    case KFA_DTYPE_I32: return "i32";
    default: return "?";
  }
}

/// The descriptor `t` (named `name`) checked for what a View cannot say: present, rank, element type,
/// memory space, non-negative extents and strides.
const kfa_tensor& described(const kfa_tensor* t, const char* name, int rank, std::int32_t dtype, std::int32_t memory) {
  if (t == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, std::string(name) + " is NULL");
  if (t->rank != rank)
    throw CallError(KFA_ERROR_INVALID_ARGUMENT, std::string(name) + " must have rank " + std::to_string(rank) +
                                                    ", got rank " + std::to_string(t->rank));
  if (t->dtype != dtype)
    throw CallError(KFA_ERROR_INVALID_ARGUMENT, std::string(name) + " has element type " + dtype_name(t->dtype) +
                                                    ", expected " + dtype_name(dtype));
  if (t->memory != memory)
    throw CallError(KFA_ERROR_INVALID_ARGUMENT, std::string(name) + " is in the " +
                                                    (t->memory == KFA_MEMORY_HOST ? "host" : "device") +
                                                    " memory space, but the context's is the " +
                                                    (memory == KFA_MEMORY_HOST ? "host" : "device"));
  for (int r = 0; r < rank; ++r)
    if (t->extents[r] < 0 || t->strides[r] < 0)
      throw CallError(KFA_ERROR_INVALID_ARGUMENT, std::string(name) + " has a negative extent or stride");
  return *t;
}

template <class T, int R>
struct Data;
template <class T>
struct Data<T, 1> { using type = T*; };
template <class T>
struct Data<T, 2> { using type = T**; };
template <class T>
struct Data<T, 3> { using type = T***; };
template <class T>
struct Data<T, 4> { using type = T****; };

template <class T, int R, class Mem>
using UView = Kokkos::View<typename Data<T, R>::type, Kokkos::LayoutStride, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

/// The unmanaged View of descriptor `t` (element type T, const for inputs), after `described`.
template <class T, int R, class Mem>
UView<T, R, Mem> view_of(Mem, const kfa_tensor* t, const char* name, std::int32_t dtype, std::int32_t memory) {
  const kfa_tensor& d = described(t, name, R, dtype, memory);
  Kokkos::LayoutStride l;
  for (int r = 0; r < R; ++r) {
    l.dimension[r] = static_cast<std::size_t>(d.extents[r]);
    l.stride[r] = static_cast<std::size_t>(d.strides[r]);
  }
  return UView<T, R, Mem>(static_cast<T*>(d.data), l);
}

/// The LSE element type code of inputs of type `dtype`.
std::int32_t lse_dtype(std::int32_t dtype) { return dtype == KFA_DTYPE_F64 ? KFA_DTYPE_F64 : KFA_DTYPE_F32; }

kfa::Params to_params(const kfa_params* p) {
  kfa::Params r;
  if (p == nullptr) return r;
  if (p->has_softmax_scale) r.softmax_scale = p->softmax_scale;
  r.causal = p->causal != 0;
  r.window_left = p->window_left;
  r.window_right = p->window_right;
  r.softcap = p->softcap;
  if (p->num_alibi_slopes < 0 || (p->num_alibi_slopes > 0 && p->alibi_slopes == nullptr))
    throw CallError(KFA_ERROR_INVALID_ARGUMENT, "alibi_slopes is NULL but num_alibi_slopes is " +
                                                    std::to_string(p->num_alibi_slopes));
  if (p->num_alibi_slopes > 0) r.alibi_slopes.assign(p->alibi_slopes, p->alibi_slopes + p->num_alibi_slopes);
  r.dropout_p = p->dropout_p;
  r.seed = p->seed;
  r.offset = p->offset;
  r.deterministic = p->deterministic != 0;
  r.block_mask = p->block_mask != nullptr ? &p->block_mask->mask : nullptr;
  switch (p->backend) {
    case 0: r.backend = kfa::Backend::automatic; break;
    case 1: r.backend = kfa::Backend::portable; break;
    case 2: r.backend = kfa::Backend::native; break;
    default: throw CallError(KFA_ERROR_INVALID_ARGUMENT, "backend must be 0 (automatic), 1 (portable) or 2 (native)");
  }
  return r;
}

std::int32_t dtype_of_first(const kfa_tensor* q) {
  if (q == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "q is NULL");
  return q->dtype;
}

}  // namespace

extern "C" {

kfa_tensor kfa_tensor_contiguous(void* data, int32_t dtype, int32_t rank, const int64_t* extents, int32_t memory) {
  kfa_tensor t;
  std::memset(&t, 0, sizeof(t));
  t.data = data;
  t.dtype = dtype;
  t.rank = rank;
  t.memory = memory;
  std::int64_t stride = 1;
  for (int r = rank - 1; r >= 0 && r < KFA_MAX_RANK; --r) {
    t.extents[r] = extents[r];
    t.strides[r] = stride;
    stride *= extents[r];
  }
  return t;
}

void kfa_params_default(kfa_params* p) {
  if (p == nullptr) return;
  std::memset(p, 0, sizeof(*p));
  p->window_left = -1;
  p->window_right = -1;
}

const char* kfa_last_error(void) { return last_error.c_str(); }

kfa_status kfa_block_mask_create(kfa_block_mask* mask, int64_t seqlen_q, int64_t seqlen_k, int64_t block_q,
                                 int64_t block_k, int64_t batch, int64_t heads, const uint8_t* blocks) {
  return guarded([&] {
    if (mask == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "mask is NULL");
    *mask = nullptr;
    if (blocks == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "blocks is NULL");
    const kfa::BlockMaskShape shape{seqlen_q, seqlen_k, block_q, block_k, batch, heads};
    if (seqlen_q < 1 || seqlen_k < 1 || block_q < 1 || block_k < 1 || batch < 1 || heads < 1)
      throw CallError(KFA_ERROR_INVALID_ARGUMENT, "block mask: lengths, block sizes, batch and heads must be >= 1");
    const std::int64_t n = batch * heads * ((seqlen_q + block_q - 1) / block_q) * ((seqlen_k + block_k - 1) / block_k);
    auto* m = new kfa_block_mask_s{kfa::BlockMask::from_blocks(shape, std::vector<std::uint8_t>(blocks, blocks + n))};
    *mask = m;
  });
}

kfa_status kfa_block_mask_destroy(kfa_block_mask mask) {
  return guarded([&] { delete mask; });
}

kfa_status kfa_initialize(void) {
  return guarded([] {
    if (Kokkos::is_initialized()) return;
    if (Kokkos::is_finalized()) throw CallError(KFA_ERROR_INTERNAL, "Kokkos was finalized and cannot start again");
    Kokkos::initialize();
    kokkos_owned = true;
  });
}

kfa_status kfa_finalize(void) {
  return guarded([] {
    if (kokkos_owned && Kokkos::is_initialized()) Kokkos::finalize();
    kokkos_owned = false;
  });
}

kfa_status kfa_context_create(kfa_context* ctx, int32_t memory, void* stream) {
  return guarded([&] {
    if (ctx == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "ctx is NULL");
    *ctx = nullptr;
    if (!Kokkos::is_initialized()) throw CallError(KFA_ERROR_NOT_INITIALIZED, "call kfa_initialize first");
    if (memory != KFA_MEMORY_HOST && memory != KFA_MEMORY_DEVICE)
      throw CallError(KFA_ERROR_INVALID_ARGUMENT, "memory must be KFA_MEMORY_HOST or KFA_MEMORY_DEVICE");
    if (memory == KFA_MEMORY_DEVICE && !has_device)
      throw CallError(KFA_ERROR_UNSUPPORTED, "this build has no device execution space");
    auto* c = new kfa_context_s;
    c->memory = memory;
#if defined(KOKKOS_ENABLE_CUDA)
    if (stream != nullptr) c->device = Kokkos::Cuda(static_cast<cudaStream_t>(stream));
#elif defined(KOKKOS_ENABLE_HIP)
    if (stream != nullptr) c->device = Kokkos::HIP(static_cast<hipStream_t>(stream));
#else
    if (stream != nullptr) {
      delete c;
      throw CallError(KFA_ERROR_UNSUPPORTED, "a stream was given, but this build has no GPU execution space");
    }
#endif
    *ctx = c;
  });
}

kfa_status kfa_context_destroy(kfa_context ctx) {
  return guarded([&] { delete ctx; });
}

kfa_status kfa_context_fence(kfa_context ctx) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    with_space(c, [](const auto& exec, auto) { exec.fence("kfa_context_fence"); });
  });
}

kfa_status kfa_forward(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k, const kfa_tensor* v,
                       const kfa_tensor* o, const kfa_tensor* lse, const kfa_params* params) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        kfa::forward(exec, view_of<const T, 4>(mem, q, "q", dt, m), view_of<const T, 4>(mem, k, "k", dt, m),
                     view_of<const T, 4>(mem, v, "v", dt, m), view_of<T, 4>(mem, o, "o", dt, m),
                     view_of<L, 3>(mem, lse, "lse", lse_dtype(dt), m), p);
      });
    });
  });
}

kfa_status kfa_backward(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q, const kfa_tensor* k,
                        const kfa_tensor* v, const kfa_tensor* out, const kfa_tensor* lse, const kfa_tensor* dq,
                        const kfa_tensor* dk, const kfa_tensor* dv, const kfa_params* params) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        kfa::backward(exec, view_of<const T, 4>(mem, dout, "dout", dt, m), view_of<const T, 4>(mem, q, "q", dt, m),
                      view_of<const T, 4>(mem, k, "k", dt, m), view_of<const T, 4>(mem, v, "v", dt, m),
                      view_of<const T, 4>(mem, out, "out", dt, m), view_of<const L, 3>(mem, lse, "lse", lse_dtype(dt), m),
                      view_of<T, 4>(mem, dq, "dq", dt, m), view_of<T, 4>(mem, dk, "dk", dt, m),
                      view_of<T, 4>(mem, dv, "dv", dt, m), p);
      });
    });
  });
}

kfa_status kfa_backward_workspace_size(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k,
                                       const kfa_params* params, size_t* bytes) {
  return guarded([&] {
    if (bytes == nullptr) throw CallError(KFA_ERROR_INVALID_ARGUMENT, "bytes is NULL");
    *bytes = 0;
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto&, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        *bytes = kfa::backward_workspace_bytes(view_of<const T, 4>(mem, q, "q", dt, m),
                                               view_of<const T, 4>(mem, k, "k", dt, m), p);
      });
    });
  });
}

kfa_status kfa_backward_with_workspace(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q,
                                       const kfa_tensor* k, const kfa_tensor* v, const kfa_tensor* out,
                                       const kfa_tensor* lse, const kfa_tensor* dq, const kfa_tensor* dk,
                                       const kfa_tensor* dv, const kfa_params* params, void* workspace,
                                       size_t workspace_bytes) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        using Mem = decltype(mem);
        // kfa::backward checks the workspace's size and alignment before it writes anything
        const Kokkos::View<unsigned char*, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>> ws(
            static_cast<unsigned char*>(workspace), workspace_bytes);
        kfa::backward(exec, view_of<const T, 4>(mem, dout, "dout", dt, m), view_of<const T, 4>(mem, q, "q", dt, m),
                      view_of<const T, 4>(mem, k, "k", dt, m), view_of<const T, 4>(mem, v, "v", dt, m),
                      view_of<const T, 4>(mem, out, "out", dt, m), view_of<const L, 3>(mem, lse, "lse", lse_dtype(dt), m),
                      view_of<T, 4>(mem, dq, "dq", dt, m), view_of<T, 4>(mem, dk, "dk", dt, m),
                      view_of<T, 4>(mem, dv, "dv", dt, m), p, ws);
      });
    });
  });
}

kfa_status kfa_forward_varlen(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k, const kfa_tensor* v,
                              const kfa_tensor* o, const kfa_tensor* lse, const kfa_tensor* cu_seqlens_q,
                              const kfa_tensor* cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                              const kfa_params* params) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        kfa::forward_varlen(exec, view_of<const T, 3>(mem, q, "q", dt, m), view_of<const T, 3>(mem, k, "k", dt, m),
                            view_of<const T, 3>(mem, v, "v", dt, m), view_of<T, 3>(mem, o, "o", dt, m),
                            view_of<L, 2>(mem, lse, "lse", lse_dtype(dt), m),
                            view_of<const std::int32_t, 1>(mem, cu_seqlens_q, "cu_seqlens_q", KFA_DTYPE_I32, m),
                            view_of<const std::int32_t, 1>(mem, cu_seqlens_k, "cu_seqlens_k", KFA_DTYPE_I32, m),
                            max_seqlen_q, max_seqlen_k, p);
      });
    });
  });
}

kfa_status kfa_backward_varlen(kfa_context ctx, const kfa_tensor* dout, const kfa_tensor* q, const kfa_tensor* k,
                               const kfa_tensor* v, const kfa_tensor* out, const kfa_tensor* lse,
                               const kfa_tensor* dq, const kfa_tensor* dk, const kfa_tensor* dv,
                               const kfa_tensor* cu_seqlens_q, const kfa_tensor* cu_seqlens_k, int64_t max_seqlen_q,
                               int64_t max_seqlen_k, const kfa_params* params) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        kfa::backward_varlen(
            exec, view_of<const T, 3>(mem, dout, "dout", dt, m), view_of<const T, 3>(mem, q, "q", dt, m),
            view_of<const T, 3>(mem, k, "k", dt, m), view_of<const T, 3>(mem, v, "v", dt, m),
            view_of<const T, 3>(mem, out, "out", dt, m), view_of<const L, 2>(mem, lse, "lse", lse_dtype(dt), m),
            view_of<T, 3>(mem, dq, "dq", dt, m), view_of<T, 3>(mem, dk, "dk", dt, m), view_of<T, 3>(mem, dv, "dv", dt, m),
            view_of<const std::int32_t, 1>(mem, cu_seqlens_q, "cu_seqlens_q", KFA_DTYPE_I32, m),
            view_of<const std::int32_t, 1>(mem, cu_seqlens_k, "cu_seqlens_k", KFA_DTYPE_I32, m), max_seqlen_q,
            max_seqlen_k, p);
      });
    });
  });
}

kfa_status kfa_forward_kvcache(kfa_context ctx, const kfa_tensor* q, const kfa_tensor* k_cache,
                               const kfa_tensor* v_cache, const kfa_tensor* o, const kfa_tensor* lse,
                               const kfa_tensor* cache_seqlens, const kfa_tensor* k_new, const kfa_tensor* v_new,
                               const kfa_tensor* block_table, int32_t num_splits, int32_t check_indices,
                               const kfa_params* params) {
  return guarded([&] {
    kfa_context_s& c = context(ctx);
    const std::int32_t dt = dtype_of_first(q), m = c.memory;
    const kfa::Params p = to_params(params);
    if ((k_new == nullptr) != (v_new == nullptr))
      throw CallError(KFA_ERROR_INVALID_ARGUMENT, "append takes both k_new and v_new (or neither)");
    with_space(c, [&](const auto& exec, auto mem) {
      with_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using L = kfa::lse_type<T>;
        const auto qv = view_of<const T, 4>(mem, q, "q", dt, m);
        const auto kc = view_of<T, 4>(mem, k_cache, "k_cache", dt, m);
        const auto vc = view_of<T, 4>(mem, v_cache, "v_cache", dt, m);
        const auto ov = view_of<T, 4>(mem, o, "o", dt, m);
        const auto lv = view_of<L, 3>(mem, lse, "lse", lse_dtype(dt), m);
        const auto lens = view_of<const std::int32_t, 1>(mem, cache_seqlens, "cache_seqlens", KFA_DTYPE_I32, m);
        kfa::KvCacheOptions<> opt;
        opt.num_splits = num_splits;
        opt.check_indices = check_indices != 0;
        auto run = [&](const auto& o2) { kfa::forward_kvcache(exec, qv, kc, vc, ov, lv, lens, p, o2); };
        auto with_table = [&](const auto& o2) {
          if (block_table == nullptr) return run(o2);
          run(o2.paged(view_of<const std::int32_t, 2>(mem, block_table, "block_table", KFA_DTYPE_I32, m)));
        };
        if (k_new == nullptr) return with_table(opt);
        with_table(opt.append(view_of<const T, 4>(mem, k_new, "k_new", dt, m), view_of<const T, 4>(mem, v_new, "v_new", dt, m)));
      });
    });
  });
}

}  // extern "C"
