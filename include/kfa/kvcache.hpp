#pragma once
// KV-cache attention for inference: kfa::forward_kvcache. A few query tokens per sequence attend to
// a cache of keys and values that grows in place: contiguous ([batch, capacity, heads_kv, dim]) or
// paged ([num_pages, page_size, heads_kv, dim] with a block table), each sequence with its own length,
// and optionally new keys/values appended at each sequence's end first (the lengths are the caller's
// to advance). Decode is bound by memory bandwidth: the native kernels split the keys of a sequence
// across blocks and merge the parts (the math of kfa::merge_attention_states).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <string>
#include <type_traits>

#include "kfa/detail/kvcache_args.hpp"
#include "kfa/detail/view_args.hpp"
#include "kfa/params.hpp"

namespace kfa {

/// Stands for an argument that is not given (no append, no page table).
struct NoView {};

/// Options of forward_kvcache beyond Params. Built fluently:
///   kfa::KvCacheOptions<>{}.append(k_new, v_new).paged(block_table)
template <class KNew = NoView, class VNew = NoView, class Table = NoView>
struct KvCacheOptions {
  /// [batch, seqlen_new, heads_kv, head_dim], written into the cache at positions cache_seqlens[b] ..
  /// cache_seqlens[b] + seqlen_new - 1 before attending (so the queries see them).
  KNew k_new{};
  VNew v_new{};
  /// int32 [batch, max_pages]: page p of sequence b is page block_table(b, p) of the paged caches.
  Table block_table{};
  /// Split-KV parts per sequence (native kernels); 0 = chosen to fill the device. The result does not
  /// depend on it beyond rounding.
  int num_splits = 0;
  /// Check cache_seqlens (and the page table entries in use) on the host before anything is written:
  /// a small copy and a fence on device spaces. Off: the caller guarantees them (out-of-range
  /// lengths or pages are then undefined behavior).
  bool check_indices = true;

  template <class K2, class V2>
  KvCacheOptions<K2, V2, Table> append(const K2& k, const V2& v) const {
    return {k, v, block_table, num_splits, check_indices};
  }
  template <class T2>
  KvCacheOptions<KNew, VNew, T2> paged(const T2& table) const {
    return {k_new, v_new, table, num_splits, check_indices};
  }
};

namespace detail {
/// Defined in the library for each enabled Kokkos execution space: appends, then attends (native
/// decode kernel when it takes the case, else the portable algorithm).
template <class ExecSpace>
void kvcache_dispatch(const ExecSpace& exec, const KvCacheArgs& args, const Params& params);

template <class X>
constexpr bool is_given = !std::is_same_v<X, NoView>;

/// The host copy of cache_seqlens and the checks that need the values: each length plus the append
/// fits the capacity; with a page table, every page a sequence uses exists.
template <class ExecSpace, class Lens, class Table>
void check_cache_indices(const Lens& lens, const Table* table, std::int64_t capacity, std::int64_t added,
                         std::int64_t page_size, std::int64_t num_pages) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), lens);
  for (std::size_t b = 0; b < h.extent(0); ++b) {
    const std::int64_t len = h(b);
    if (len < 0)
      throw Error("cache_seqlens[" + std::to_string(b) + "] = " + std::to_string(len) + " is negative");
    if (len + added > capacity)
      throw Error("cache_seqlens[" + std::to_string(b) + "] = " + std::to_string(len) +
                  (added > 0 ? " plus the " + std::to_string(added) + " appended keys" : std::string()) +
                  " exceeds the cache capacity " + std::to_string(capacity));
  }
  if constexpr (is_given<Table>) {
    auto t = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), *table);
    for (std::size_t b = 0; b < h.extent(0); ++b) {
      const std::int64_t pages = (std::int64_t(h(b)) + added + page_size - 1) / page_size;
      for (std::int64_t p = 0; p < pages; ++p)
        if (t(b, p) < 0 || t(b, p) >= num_pages)
          throw Error("block_table(" + std::to_string(b) + ", " + std::to_string(p) + ") = " +
                      std::to_string(t(b, p)) + " is not a page of the cache (0.." + std::to_string(num_pages - 1) +
                      "); sequence " + std::to_string(b) + " uses " + std::to_string(pages) + " pages");
    }
  }
}

/// Checks a KV-cache call's Views and describes them for the launchers (kfa::Error when invalid).
template <class ExecSpace, class Q, class KC, class VC, class O, class L, class Lens, class KNew, class VNew,
          class Table>
KvCacheArgs kvcache_args(const Q& q, const KC& k_cache, const VC& v_cache, const O& o, const L& lse,
                         const Lens& cache_seqlens, const KvCacheOptions<KNew, VNew, Table>& opt) {
  using T = typename Q::non_const_value_type;
  check_view<ExecSpace>(q, "q", 4);
  check_view<ExecSpace>(k_cache, "k_cache", 4);
  check_view<ExecSpace>(v_cache, "v_cache", 4);
  static_assert(std::is_same_v<typename KC::non_const_value_type, T> && std::is_same_v<typename VC::non_const_value_type, T>,
                "kfa: k_cache and v_cache must hold q's element type");
  static_assert(Kokkos::is_view_v<Lens> && Lens::rank() == 1 &&
                    std::is_same_v<typename Lens::non_const_value_type, std::int32_t>,
                "kfa: cache_seqlens must be a rank-1 Kokkos::View of int32");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename Lens::memory_space>::accessible,
                "kfa: cache_seqlens must be accessible from the execution space");
  static_assert(is_given<KNew> == is_given<VNew>, "kfa: append takes both k_new and v_new");
  constexpr bool paged = is_given<Table>;
  KvCacheArgs a;
  Shape& s = a.attn.shape;
  s.batch = q.extent(0);
  s.seqlen_q = q.extent(1);
  s.heads = q.extent(2);
  s.head_dim = q.extent(3);
  s.heads_kv = k_cache.extent(2);
  if (s.batch == 0 || s.seqlen_q == 0 || s.heads == 0 || s.head_dim == 0)
    throw Error("q has an empty extent " + extents_str(q) + "; expected [batch, seqlen_q, heads, head_dim] all > 0");
  if (k_cache.extent(0) == 0 || k_cache.extent(1) == 0 || s.heads_kv == 0)
    throw Error("k_cache has an empty extent " + extents_str(k_cache) +
                (paged ? "; expected [num_pages, page_size, heads_kv, head_dim] all > 0"
                       : "; expected [batch, capacity, heads_kv, head_dim] all > 0"));
  const std::int64_t e0 = k_cache.extent(0), e1 = k_cache.extent(1);
  const char* cache_dims = paged ? "[num_pages, page_size, heads_kv, head_dim]" : "[batch, capacity, heads_kv, head_dim]";
  if (!paged) check_extents(k_cache, "k_cache", {s.batch, e1, s.heads_kv, s.head_dim}, cache_dims);
  else check_extents(k_cache, "k_cache", {e0, e1, s.heads_kv, s.head_dim}, cache_dims);
  check_extents(v_cache, "v_cache", {e0, e1, s.heads_kv, s.head_dim}, cache_dims);
  if (s.heads % s.heads_kv != 0)
    throw Error("heads (" + std::to_string(s.heads) + ") must be a multiple of heads_kv (" +
                std::to_string(s.heads_kv) + ")");
  check_view<ExecSpace>(o, "o", 4);
  static_assert(std::is_same_v<typename O::value_type, T>, "kfa: o must be a writable View of q's element type");
  check_extents(o, "o", {s.batch, s.seqlen_q, s.heads, s.head_dim}, "[batch, seqlen_q, heads, head_dim]");
  check_lse<ExecSpace, T>(lse, s);
  if (static_cast<std::int64_t>(cache_seqlens.extent(0)) != s.batch)
    throw Error("cache_seqlens has " + std::to_string(cache_seqlens.extent(0)) + " entries, expected batch = " +
                std::to_string(s.batch));
  if (cache_seqlens.data() == nullptr) throw Error("cache_seqlens is not allocated (null data)");

  KvCache& kv = a.attn.kv;
  kv.seqlens = cache_seqlens.data();
  std::int64_t capacity = e1;
  if constexpr (paged) {
    const Table& t = opt.block_table;
    static_assert(Kokkos::is_view_v<Table> && Table::rank() == 2 &&
                      std::is_same_v<typename Table::non_const_value_type, std::int32_t>,
                  "kfa: block_table must be a rank-2 Kokkos::View of int32 ([batch, max_pages])");
    static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename Table::memory_space>::accessible,
                  "kfa: block_table must be accessible from the execution space");
    if (static_cast<std::int64_t>(t.extent(0)) != s.batch || t.extent(1) == 0)
      throw Error("block_table has extents " + extents_str(t) + ", expected [batch, max_pages] = [" +
                  std::to_string(s.batch) + ", >= 1]");
    if (t.data() == nullptr) throw Error("block_table is not allocated (null data)");
    if (t.stride(1) != 1) throw Error("block_table: the last dimension must have unit stride");
    kv.block_table = t.data();
    kv.table_stride = static_cast<std::int64_t>(t.stride(0));
    kv.page_size = static_cast<std::int32_t>(e1);
    kv.num_pages = e0;
    capacity = e1 * static_cast<std::int64_t>(t.extent(1));
  }
  if (capacity >= (std::int64_t(1) << 31))
    throw Error("the cache capacity " + std::to_string(capacity) + " must be below 2^31 keys (int32 lengths)");
  s.seqlen_k = capacity;

  if constexpr (is_given<KNew>) {
    check_view<ExecSpace>(opt.k_new, "k_new", 4);
    check_view<ExecSpace>(opt.v_new, "v_new", 4);
    static_assert(std::is_same_v<typename KNew::non_const_value_type, T> &&
                      std::is_same_v<typename VNew::non_const_value_type, T>,
                  "kfa: k_new and v_new must hold q's element type");
    static_assert(std::is_same_v<typename KC::value_type, T> && std::is_same_v<typename VC::value_type, T>,
                  "kfa: appending writes the caches: k_cache and v_cache must be writable Views");
    a.seqlen_new = opt.k_new.extent(1);
    check_extents(opt.k_new, "k_new", {s.batch, a.seqlen_new, s.heads_kv, s.head_dim}, "[batch, seqlen_new, heads_kv, head_dim]");
    check_extents(opt.v_new, "v_new", {s.batch, a.seqlen_new, s.heads_kv, s.head_dim}, "[batch, seqlen_new, heads_kv, head_dim]");
    check_no_overlap(k_cache, "k_cache", v_cache, "v_cache");
    check_no_overlap(k_cache, "k_cache", opt.k_new, "k_new");
    check_no_overlap(k_cache, "k_cache", opt.v_new, "v_new");
    check_no_overlap(v_cache, "v_cache", opt.k_new, "k_new");
    check_no_overlap(v_cache, "v_cache", opt.v_new, "v_new");
    check_no_overlap(k_cache, "k_cache", q, "q");
    check_no_overlap(v_cache, "v_cache", q, "q");
    check_no_overlap(k_cache, "k_cache", cache_seqlens, "cache_seqlens");
    check_no_overlap(v_cache, "v_cache", cache_seqlens, "cache_seqlens");
    if constexpr (paged) {
      check_no_overlap(k_cache, "k_cache", opt.block_table, "block_table");
      check_no_overlap(v_cache, "v_cache", opt.block_table, "block_table");
    }
    a.k_new = tensor4(opt.k_new);
    a.v_new = tensor4(opt.v_new);
    if (a.seqlen_new >= (std::int64_t(1) << 31)) throw Error("seqlen_new must be below 2^31");
    kv.added = static_cast<std::int32_t>(a.seqlen_new);
  }
  if (opt.num_splits < 0) throw Error("num_splits must be >= 0 (0 = automatic)");
  a.num_splits = opt.num_splits;
  check_no_overlap(o, "o", q, "q");
  check_no_overlap(o, "o", k_cache, "k_cache");
  check_no_overlap(o, "o", v_cache, "v_cache");
  check_no_overlap(o, "o", lse, "lse");
  check_no_overlap(o, "o", cache_seqlens, "cache_seqlens");
  check_no_overlap(lse, "lse", q, "q");
  check_no_overlap(lse, "lse", k_cache, "k_cache");
  check_no_overlap(lse, "lse", v_cache, "v_cache");
  check_no_overlap(lse, "lse", cache_seqlens, "cache_seqlens");
  if constexpr (is_given<KNew>) {
    check_no_overlap(o, "o", opt.k_new, "k_new");
    check_no_overlap(o, "o", opt.v_new, "v_new");
    check_no_overlap(lse, "lse", opt.k_new, "k_new");
    check_no_overlap(lse, "lse", opt.v_new, "v_new");
  }
  if constexpr (paged) {
    check_no_overlap(o, "o", opt.block_table, "block_table");
    check_no_overlap(lse, "lse", opt.block_table, "block_table");
  }
  if (opt.check_indices)
    check_cache_indices<ExecSpace>(cache_seqlens, paged ? &opt.block_table : nullptr, capacity, a.seqlen_new, e1, e0);

  a.attn.dtype = dtype_of<T>();
  a.attn.q = tensor4(q);
  a.attn.k = tensor4(k_cache);
  a.attn.v = tensor4(v_cache);
  a.attn.o = tensor4(o);
  a.attn.lse = tensor3(lse);
  return a;
}
}  // namespace detail

/// Attention of new query tokens over a KV cache, for inference (FlashAttention's
/// flash_attn_with_kvcache):
///   q             [batch, seqlen_q, heads, head_dim]  (seqlen_q: 1 for decode, a few for speculative
///                 decoding, any value works)
///   k_cache, v_cache  [batch, capacity, heads_kv, head_dim], or with opt.paged(block_table)
///                 [num_pages, page_size, heads_kv, head_dim] and block_table int32 [batch, max_pages]
///   o             like q (written)           lse  [batch, heads, seqlen_q] of lse_type<T> (written)
///   cache_seqlens int32 [batch]: keys in each sequence's cache (0 allowed). Not modified: advancing it
///                 after an append is the caller's.
///   opt           optional append(k_new, v_new) ([batch, seqlen_new, heads_kv, head_dim], written at
///                 positions cache_seqlens[b] + i before attending), paged(block_table), num_splits,
///                 check_indices.
/// Sequence b attends to its L_b = cache_seqlens[b] + seqlen_new keys; causal and window masks align
/// to the bottom-right of each sequence (query i sees keys j <= i + L_b - seqlen_q), like ALiBi.
/// Params: softmax_scale, causal, window, softcap, ALiBi, backend; dropout and block masks are
/// training options and are rejected. Rows that see no key get o = 0 and lse = -inf.
/// Asynchronous on `exec` (with check_indices, the lengths are read first). Throws kfa::Error on
/// invalid input, before anything is written.
template <class ExecSpace, class Q, class KC, class VC, class O, class L, class Lens, class KNew = NoView,
          class VNew = NoView, class Table = NoView>
void forward_kvcache(const ExecSpace& exec, const Q& q, const KC& k_cache, const VC& v_cache, const O& o, const L& lse,
                     const Lens& cache_seqlens, const Params& params = {},
                     const KvCacheOptions<KNew, VNew, Table>& opt = {}) {
  detail::kvcache_dispatch(exec, detail::kvcache_args<ExecSpace>(q, k_cache, v_cache, o, lse, cache_seqlens, opt),
                           params);
}

}  // namespace kfa
