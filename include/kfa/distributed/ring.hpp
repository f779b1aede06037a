#pragma once
// kfa::distributed: context-parallel (ring) attention, for sequences split across processes: the
// algorithm, over any transport (kfa/distributed.hpp: MPI; kfa/distributed_nccl.hpp: NCCL).
//
// Each rank holds its slice of one self-attention sequence: q, k, v [batch, n_r, heads(_kv), head_dim]
// with the same positions for queries and keys. The K/V slices travel around the ring (rank r sends to
// r + 1 and receives from r - 1, the next block's transfer overlapping the current block's compute);
// each rank attends its queries to every block it sees with kfa::forward and folds the partial results
// into its output with kfa::merge_attention_states. The backward rotates K, V together with their dK,
// dV accumulators, which arrive back at their owner after a full turn; every block's backward is
// kfa::backward with the global LSE of the forward, so the sum over blocks is the exact gradient.
//
// Layouts (RingLayout): `contiguous`, rank r holds positions [sum of n_s for s < r, + n_r) (any n_r,
// rank by rank); `zigzag`, for causal load balance, the sequence is cut into 2P equal chunks and rank r
// holds chunks r and 2P - 1 - r (n_r even and equal on every rank). Under causal attention a (query
// chunk, key chunk) pair is full below the diagonal, causal on it and skipped above it.
//
// Packed sequences (ring_attention_forward_varlen / _backward_varlen): the ring holds the sequences of
// cu_seqlens; q, k, v, o are packed [n_r, heads(_kv), head_dim] as kfa::forward_varlen takes them, and
// attention stays within each sequence. Each (query rank, key rank) pair is one kfa::forward_varlen call
// over per-sequence pieces of the two slices. `contiguous`: rank r holds a run of the token stream (the
// concatenation of the sequences, any n_r), a pair covers the sequences the two runs share, and under
// causal attention the earlier ranks' keys are all visible, the own run's causal and later ranks'
// skipped, so rank r does r + 1 blocks of work. `zigzag`, for causal load balance: every sequence is
// cut into 2P equal chunks (its length a multiple of 2P) and rank r holds, sequence by sequence, chunk
// r then chunk 2P - 1 - r; under causal attention the own pair is causal within each sequence's two
// chunks, a key rank s < r gives every query its first chunk only, and a key rank s > r is seen only by
// the second query chunk, in full, so every rank does the same work. kfa::forward_varlen's pieces are
// consecutive rows, so the rows a pair leaves out between its pieces (a key rank's second chunks, or
// the first query chunks) become pieces with no queries or no keys: they cost no attention, their
// rows get o = 0, lse = -inf (a no-op for the merge) and zero gradients.
//
// Supported: causal or not, softmax_scale, softcap, GQA/MQA, deterministic; every element type and
// execution space kfa::forward takes, with the transport reading the execution space's memory (MPI:
// host spaces, or a GPU-aware MPI for device memory; NCCL: device memory). Not supported (a
// kfa::Error): sliding windows, ALiBi, dropout and block masks (their positions are global, the
// blocks' local). Collective: every rank of `comm` calls, with the same batch, heads, heads_kv,
// head_dim, options and layout.
//
// A transport (TransportOf<Comm>::type, made from the communicator and the execution space) gives
// rank(), size(), allgather(mine, n, all) of int64 host values, post(send, send_count, recv,
// recv_count, to, from, tag) of a transfer that may run while the caller computes, and wait() for
// every posted transfer. Transfers between the same two ranks are posted in the same order on both.
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kfa/backward.hpp"
#include "kfa/error.hpp"
#include "kfa/forward.hpp"
#include "kfa/merge.hpp"
#include "kfa/params.hpp"
#include "kfa/varlen.hpp"

namespace kfa::distributed {

enum class RingLayout { contiguous, zigzag };

struct RingOptions {
  RingLayout layout = RingLayout::contiguous;
};

namespace detail {

/// A part of a rank's slice: global chunk index (sequence order), offset and length in the slice.
struct Chunk {
  std::int64_t index, offset, length;
};

struct Ring {
  int rank = 0, size = 1;
  std::vector<std::int64_t> lengths;  // n_r of every rank
  std::int64_t batch = 0, heads = 0, heads_kv = 0, head_dim = 0;
  RingLayout layout = RingLayout::contiguous;

  std::vector<Chunk> chunks(int r) const {
    const std::int64_t n = lengths[r];
    if (layout == RingLayout::contiguous) return {{r, 0, n}};
    return {{r, 0, n / 2}, {2 * std::int64_t(size) - 1 - r, n / 2, n / 2}};
  }
  std::int64_t max_length() const { return *std::max_element(lengths.begin(), lengths.end()); }
};

/// The transport of a communicator type: specialized by kfa/distributed.hpp (MPI_Comm) and
/// kfa/distributed_nccl.hpp (kfa::distributed::NcclComm).
template <class Comm>
struct TransportOf;

/// Checks the call's options and shapes on every rank (the same decision everywhere: the shapes of all
/// ranks are gathered first) and returns the ring's description.
template <class Transport, class Q, class K>
Ring make_ring(Transport& comm, const Q& q, const K& k, const Params& p, const RingOptions& opt) {
  Ring ring;
  ring.rank = comm.rank();
  ring.size = comm.size();
  ring.layout = opt.layout;
  const std::int64_t mine[6] = {std::int64_t(q.extent(0)), std::int64_t(q.extent(1)), std::int64_t(q.extent(2)),
                                std::int64_t(k.extent(2)), std::int64_t(q.extent(3)), std::int64_t(k.extent(1))};
  std::vector<std::int64_t> all(6 * std::size_t(ring.size));
  comm.allgather(mine, 6, all.data());
  if (p.window_left >= 0 || p.window_right >= 0 || !p.alibi_slopes.empty() || p.dropout_p != 0.0 ||
      p.block_mask != nullptr)
    throw Error("kfa ring attention: sliding windows, ALiBi, dropout and block masks are not supported "
                "(they are defined on global positions); causal, softcap, softmax_scale and GQA are");
  for (int r = 0; r < ring.size; ++r) {
    const std::int64_t* s = &all[6 * std::size_t(r)];
    if (s[0] != all[0] || s[2] != all[2] || s[3] != all[3] || s[4] != all[4])
      throw Error("kfa ring attention: rank " + std::to_string(r) +
                  " has a different batch, heads, heads_kv or head_dim than rank 0");
    if (s[1] != s[5])
      throw Error("kfa ring attention: rank " + std::to_string(r) + " holds " + std::to_string(s[1]) +
                  " queries but " + std::to_string(s[5]) + " keys; each rank holds the same positions of q and k, v");
    if (opt.layout == RingLayout::zigzag && (s[1] != all[1] || s[1] % 2 != 0))
      throw Error("kfa ring attention: the zigzag layout needs the same even length on every rank (rank " +
                  std::to_string(r) + " has " + std::to_string(s[1]) + ", rank 0 " + std::to_string(all[1]) + ")");
    ring.lengths.push_back(s[1]);
  }
  ring.batch = all[0], ring.heads = all[2], ring.heads_kv = all[3], ring.head_dim = all[4];
  return ring;
}

enum class PairKind { skip, full, diagonal };

inline PairKind pair_kind(const Chunk& qc, const Chunk& kc, bool causal) {
  if (qc.length == 0 || kc.length == 0) return PairKind::skip;
  if (!causal || kc.index < qc.index) return PairKind::full;
  return kc.index == qc.index ? PairKind::diagonal : PairKind::skip;
}

/// f(q chunk, k chunk, params) for every pair of this rank's query chunks and block src's key chunks
/// that is computed, with causal set for the pairs on the diagonal (the others are full or skipped).
template <class F>
void for_each_pair(const Ring& ring, const std::vector<Chunk>& qchunks, int src, const Params& params, F&& f) {
  for (const Chunk& qc : qchunks)
    for (const Chunk& kc : ring.chunks(src)) {
      const PairKind kind = pair_kind(qc, kc, params.causal);
      if (kind == PairKind::skip) continue;
      Params pp = params;
      pp.causal = kind == PairKind::diagonal;
      f(qc, kc, pp);
    }
}

/// Rows [offset, offset + length) of a [batch, seqlen, heads, head_dim] View, and of an lse View.
template <class V>
auto rows(const V& x, const Chunk& c) {
  return Kokkos::subview(x, Kokkos::ALL, std::make_pair(c.offset, c.offset + c.length), Kokkos::ALL, Kokkos::ALL);
}
template <class V>
auto lse_rows(const V& x, const Chunk& c) {
  return Kokkos::subview(x, Kokkos::ALL, Kokkos::ALL, std::make_pair(c.offset, c.offset + c.length));
}

/// A [batch, n, heads_kv, head_dim] window on a flat buffer (contiguous, so one message).
template <class T, class Mem>
using Block = Kokkos::View<T****, Kokkos::LayoutRight, Mem, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

template <class T, class Mem>
Block<T, Mem> block(T* data, const Ring& ring, std::int64_t n) {
  return Block<T, Mem>(data, ring.batch, n, ring.heads_kv, ring.head_dim);
}

/// Message tags of the four rotating tensors (for transports that match by tag); a tensor's pieces
/// take consecutive tags (8192 pieces of 1 GiB at most, within the 32767 every MPI allows).
inline constexpr int kTagK = 0, kTagV = 8192, kTagDK = 16384, kTagDV = 24576;

/// acc += x, element by element, for two [batch, n, heads, head_dim] Views.
template <class Exec, class A, class X>
void add_into(const Exec& exec, const A& acc, const X& x) {
  Kokkos::parallel_for(
      "kfa ring: accumulate",
      Kokkos::MDRangePolicy<Exec, Kokkos::Rank<4>>(exec, {0, 0, 0, 0},
                                                   {acc.extent(0), acc.extent(1), acc.extent(2), acc.extent(3)}),
      KOKKOS_LAMBDA(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) { acc(b, s, h, d) += x(b, s, h, d); });
}

template <class T, class Mem>
using Flat = Kokkos::View<T*, Mem>;

/// The packed ring over the sequences cu (host prefix sums, the same on every rank): contiguous, rank r
/// holds tokens [start[r], start[r] + lengths[r]) of their stream; zigzag, chunks r and 2P - 1 - r of
/// every sequence (cu.back() / P tokens on every rank). Checked on every rank alike.
template <class Transport, class Q, class K>
Ring make_packed_ring(Transport& comm, const Q& q, const K& k, const std::vector<std::int32_t>& cu, const Params& p,
                      RingLayout layout, std::vector<std::int64_t>& start) {
  static_assert(Q::rank() == 3 && K::rank() == 3, "kfa ring attention (packed): q, k, v are [n_r, heads, head_dim]");
  Ring ring;
  ring.rank = comm.rank();
  ring.size = comm.size();
  const std::int64_t mine[5] = {std::int64_t(q.extent(0)), std::int64_t(q.extent(1)), std::int64_t(k.extent(1)),
                                std::int64_t(q.extent(2)), std::int64_t(k.extent(0))};
  std::vector<std::int64_t> all(5 * std::size_t(ring.size));
  comm.allgather(mine, 5, all.data());
  if (p.window_left >= 0 || p.window_right >= 0 || !p.alibi_slopes.empty() || p.dropout_p != 0.0 ||
      p.block_mask != nullptr)
    throw Error("kfa ring attention: sliding windows, ALiBi, dropout and block masks are not supported "
                "(they are defined on global positions); causal, softcap, softmax_scale and GQA are");
  if (cu.empty() || cu.front() != 0)
    throw Error("kfa ring attention (packed): cu_seqlens must start at 0");
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1]) throw Error("kfa ring attention (packed): cu_seqlens must be non-decreasing");
  ring.layout = layout;
  const std::int64_t parts = 2 * std::int64_t(ring.size);
  for (std::size_t i = 0; layout == RingLayout::zigzag && i + 1 < cu.size(); ++i) {
    const std::int64_t len = std::int64_t(cu[i + 1]) - cu[i];
    if (len % parts != 0)
      throw Error("kfa ring attention (packed, zigzag): sequence " + std::to_string(i) + " has length " +
                  std::to_string(len) + ", not a multiple of 2P = " + std::to_string(parts) +
                  " (every sequence is cut into 2P equal chunks)");
  }
  std::int64_t total = 0;
  for (int r = 0; r < ring.size; ++r) {
    const std::int64_t* x = &all[5 * std::size_t(r)];
    if (x[1] != all[1] || x[2] != all[2] || x[3] != all[3])
      throw Error("kfa ring attention: rank " + std::to_string(r) + " has different heads, heads_kv or head_dim than rank 0");
    if (x[0] != x[4])
      throw Error("kfa ring attention: rank " + std::to_string(r) + " holds " + std::to_string(x[0]) +
                  " queries but " + std::to_string(x[4]) + " keys; each rank holds the same tokens of q and k, v");
    start.push_back(total);
    ring.lengths.push_back(x[0]);
    total += x[0];
  }
  if (total != cu.back())
    throw Error("kfa ring attention (packed): the ranks hold " + std::to_string(total) +
                " tokens but cu_seqlens ends at " + std::to_string(cu.back()));
  for (int r = 0; layout == RingLayout::zigzag && r < ring.size; ++r)
    if (ring.lengths[r] != total / ring.size)
      throw Error("kfa ring attention (packed, zigzag): rank " + std::to_string(r) + " holds " +
                  std::to_string(ring.lengths[r]) + " tokens, but two chunks of every sequence make " +
                  std::to_string(total / ring.size) + " (cu_seqlens.back() / P)");
  ring.batch = 1, ring.heads = all[1], ring.heads_kv = all[2], ring.head_dim = all[3];
  return ring;
}

/// One packed pair call: consecutive rows of the query slice and of the key slice (local offsets), cut
/// into pieces (one per sequence, or rows the call leaves out: a piece with no queries or no keys) by
/// the pieces' prefix sums.
struct PackedPair {
  Chunk q{0, 0, 0}, k{0, 0, 0};              // rows of the query slice / key slice the call covers
  std::vector<std::int32_t> cu_q, cu_k;      // prefix sums of the pieces, from 0
  std::int64_t max_q = 0, max_k = 0;
  bool empty() const { return cu_q.size() < 2; }
  /// Appends a piece of nq query rows and nk key rows, after the previous pieces' rows.
  void add(std::int64_t nq, std::int64_t nk) {
    if (cu_q.empty()) cu_q.push_back(0), cu_k.push_back(0);
    cu_q.push_back(static_cast<std::int32_t>(cu_q.back() + nq));
    cu_k.push_back(static_cast<std::int32_t>(cu_k.back() + nk));
    max_q = std::max(max_q, nq), max_k = std::max(max_k, nk);
    q.length += nq, k.length += nk;
  }
};

/// Contiguous layout: the sequences a query slice [qa, qb) and a key slice [ka, kb) of the stream share.
inline PackedPair packed_pair(const std::vector<std::int32_t>& cu, std::int64_t qa, std::int64_t qb, std::int64_t ka,
                              std::int64_t kb) {
  PackedPair pp;
  for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
    const std::int64_t s0 = cu[i], s1 = cu[i + 1];
    const std::int64_t a = std::max(s0, qa), b = std::min(s1, qb), c = std::max(s0, ka), d = std::min(s1, kb);
    if (a >= b || c >= d) continue;  // the sequence is not in both slices
    if (pp.empty()) pp.q.offset = a - qa, pp.k.offset = c - ka;
    pp.add(b - a, d - c);
  }
  return pp;
}

/// Zigzag layout: query rank r with key rank s. Each rank's slice is, sequence by sequence, its first
/// chunk (global chunk r, c rows) then its second (chunk 2P - 1 - r), so a sequence's rows start at the
/// same local offset on every rank. Without causal, or for s == r, all rows against all rows (causal
/// for s == r: the local order is the global one); s < r: every query against the first key chunk only
/// (chunk s is earlier than both query chunks, chunk 2P - 1 - s later than both), the second key chunks
/// between them pieces without queries; s > r: the second query chunk only, against both key chunks
/// (both earlier than it and later than the first query chunk), the first query chunks between them
/// pieces without keys.
inline PackedPair zigzag_pair(const std::vector<std::int32_t>& cu, int P, int r, int s, bool causal) {
  PackedPair pp;
  std::int64_t prev = 0;  // the chunk length of the previous non-empty sequence
  for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
    const std::int64_t c = (std::int64_t(cu[i + 1]) - cu[i]) / (2 * std::int64_t(P));
    if (c == 0) continue;  // an empty sequence has no rows
    const bool first = pp.empty();
    if (!causal || s == r) {
      pp.add(2 * c, 2 * c);
    } else if (s < r) {
      if (!first) pp.add(0, prev);  // the previous sequence's second key chunk
      pp.add(2 * c, c);
    } else {
      if (first) pp.q.offset = c;  // the first query chunk
      else pp.add(c, 0);
      pp.add(c, 2 * c);
    }
    prev = c;
  }
  return pp;
}

/// Rows of a packed [n, heads, head_dim] View, and of a packed lse [heads, n].
template <class V>
auto packed_rows(const V& x, const Chunk& c) {
  return Kokkos::subview(x, std::make_pair(c.offset, c.offset + c.length), Kokkos::ALL, Kokkos::ALL);
}
template <class V>
auto packed_lse_rows(const V& x, const Chunk& c) {
  return Kokkos::subview(x, Kokkos::ALL, std::make_pair(c.offset, c.offset + c.length));
}

/// One block's packed call of this rank: the pair, its options and its prefix sums on the execution
/// space (made once per entry point for every block, not per step).
template <class Mem>
struct PackedCall {
  bool on = false;
  PackedPair pair;
  Params params;
  Kokkos::View<std::int32_t*, Mem> cu_q, cu_k;
};

/// This rank's packed call with each block src, by the ring's layout (contiguous under causal: the own
/// slice causal, earlier slices full, later ones skipped; zigzag: zigzag_pair; off where the slices
/// share no sequence).
template <class Mem, class Exec>
std::vector<PackedCall<Mem>> packed_calls(const Exec& exec, const Ring& ring, const std::vector<std::int64_t>& start,
                                          const std::vector<std::int32_t>& cu, const Params& params) {
  const int r = ring.rank;
  std::vector<PackedCall<Mem>> calls(ring.size);
  const auto to_view = [&](const std::vector<std::int32_t>& v) {
    Kokkos::View<std::int32_t*, Mem> d("kfa ring cu_seqlens", v.size());
    Kokkos::View<const std::int32_t*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(v.data(), v.size());
    Kokkos::deep_copy(exec, d, h);
    return d;
  };
  for (int src = 0; src < ring.size; ++src) {
    PackedCall<Mem>& c = calls[src];
    if (ring.layout == RingLayout::zigzag) {
      c.pair = zigzag_pair(cu, ring.size, r, src, params.causal);
    } else {
      if (params.causal && src > r) continue;
      c.pair = packed_pair(cu, start[r], start[r] + ring.lengths[r], start[src], start[src] + ring.lengths[src]);
    }
    if (c.pair.empty()) continue;
    c.on = true;
    c.params = params;
    c.params.causal = params.causal && src == r;
    c.cu_q = to_view(c.pair.cu_q);
    c.cu_k = to_view(c.pair.cu_k);
  }
  exec.fence("kfa ring: prefix sums staged");
  return calls;
}

/// This rank's slice into a [batch, n, h, d] block of the ring and back: the View itself, or a packed
/// [n, h, d] one as batch 1.
template <class Exec, class B, class X>
void copy_to_block(const Exec& exec, const B& block4, const X& x) {
  if constexpr (X::rank() == 3) Kokkos::deep_copy(exec, Kokkos::subview(block4, 0, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL), x);
  else Kokkos::deep_copy(exec, block4, x);
}
template <class Exec, class X, class B>
void copy_from_block(const Exec& exec, const X& x, const B& block4) {
  if constexpr (X::rank() == 3) Kokkos::deep_copy(exec, x, Kokkos::subview(block4, 0, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL));
  else Kokkos::deep_copy(exec, x, block4);
}

/// The forward's ring: this rank's K and V, then each earlier rank's as they arrive (rank r sends to
/// r + 1, receives from r - 1, the next block's transfer overlapping the compute), each handed to
/// compute(src, kb, vb) as [batch, n_src, heads_kv, head_dim] Views.
template <class T, class Transport, class Exec, class K, class V, class F>
void ring_kv(Transport& comm, const Exec& exec, const Ring& ring, const K& k, const V& v, F&& compute) {
  using Mem = typename Exec::memory_space;
  const int P = ring.size, r = ring.rank;
  const std::int64_t per = ring.batch * ring.max_length() * ring.heads_kv * ring.head_dim;
  Flat<T, Mem> kbuf[2] = {Flat<T, Mem>("kfa ring k 0", per), Flat<T, Mem>("kfa ring k 1", per)};
  Flat<T, Mem> vbuf[2] = {Flat<T, Mem>("kfa ring v 0", per), Flat<T, Mem>("kfa ring v 1", per)};
  copy_to_block(exec, block<T, Mem>(kbuf[0].data(), ring, ring.lengths[r]), k);
  copy_to_block(exec, block<T, Mem>(vbuf[0].data(), ring, ring.lengths[r]), v);
  exec.fence("kfa ring: first block staged");
  for (int s = 0; s < P; ++s) {
    const int src = (r - s + P) % P, cur = s & 1;
    if (s + 1 < P) {  // the next block (rank src - 1's) arrives while this one is computed
      const int nsrc = (src - 1 + P) % P;
      const std::int64_t cnt = ring.batch * ring.lengths[src] * ring.heads_kv * ring.head_dim;
      const std::int64_t ncnt = ring.batch * ring.lengths[nsrc] * ring.heads_kv * ring.head_dim;
      comm.post(kbuf[cur].data(), cnt, kbuf[cur ^ 1].data(), ncnt, (r + 1) % P, (r - 1 + P) % P, kTagK);
      comm.post(vbuf[cur].data(), cnt, vbuf[cur ^ 1].data(), ncnt, (r + 1) % P, (r - 1 + P) % P, kTagV);
    }
    compute(src, block<T, Mem>(kbuf[cur].data(), ring, ring.lengths[src]),
            block<T, Mem>(vbuf[cur].data(), ring, ring.lengths[src]));
    exec.fence("kfa ring: block computed");
    comm.wait();
  }
}

/// The backward's ring: like ring_kv, with each block's dK, dV accumulators travelling along
/// (compute(src, kb, vb, dkb, dvb) adds into them); after the full turn this rank's own come home and
/// are copied to dk, dv.
template <class T, class Transport, class Exec, class K, class V, class DK, class DV, class F>
void ring_kv_grads(Transport& comm, const Exec& exec, const Ring& ring, const K& k, const V& v, const DK& dk,
                   const DV& dv, F&& compute) {
  using Mem = typename Exec::memory_space;
  const int P = ring.size, r = ring.rank;
  const std::int64_t per = ring.batch * ring.max_length() * ring.heads_kv * ring.head_dim;
  Flat<T, Mem> buf[2][4];  // [which][k, v, dk, dv]
  for (int w = 0; w < 2; ++w)
    for (int j = 0; j < 4; ++j) buf[w][j] = Flat<T, Mem>("kfa ring buffer", per);
  const auto blk = [&](int w, int j, int src) { return block<T, Mem>(buf[w][j].data(), ring, ring.lengths[src]); };
  copy_to_block(exec, blk(0, 0, r), k);
  copy_to_block(exec, blk(0, 1, r), v);
  Kokkos::deep_copy(exec, buf[0][2], T(0));
  Kokkos::deep_copy(exec, buf[0][3], T(0));
  exec.fence("kfa ring: first block staged");
  const int to = (r + 1) % P, from = (r - 1 + P) % P;
  for (int s = 0; s < P; ++s) {
    const int src = (r - s + P) % P, cur = s & 1, nsrc = (src - 1 + P) % P;
    // K and V of the next block come in during the compute; dK, dV move once this block's are added
    const std::int64_t cnt = ring.batch * ring.lengths[src] * ring.heads_kv * ring.head_dim;
    const std::int64_t ncnt = ring.batch * ring.lengths[nsrc] * ring.heads_kv * ring.head_dim;
    if (s + 1 < P) {
      comm.post(buf[cur][0].data(), cnt, buf[cur ^ 1][0].data(), ncnt, to, from, kTagK);
      comm.post(buf[cur][1].data(), cnt, buf[cur ^ 1][1].data(), ncnt, to, from, kTagV);
    }
    compute(src, blk(cur, 0, src), blk(cur, 1, src), blk(cur, 2, src), blk(cur, 3, src));
    exec.fence("kfa ring: block computed");
    // this block's dK, dV go on to the next rank (after the last step: home to their owner)
    comm.post(buf[cur][2].data(), cnt, buf[cur ^ 1][2].data(), ncnt, to, from, kTagDK);
    comm.post(buf[cur][3].data(), cnt, buf[cur ^ 1][3].data(), ncnt, to, from, kTagDV);
    comm.wait();
  }
  // after P steps the buffers hold this rank's own block (it came back from rank r - 1)
  copy_from_block(exec, dk, blk(P & 1, 2, r));
  copy_from_block(exec, dv, blk(P & 1, 3, r));
}

/// A packed [n, h, d] window of a [1, n, h, d] block.
template <class B4>
auto packed(const B4& x4) {
  return Kokkos::subview(x4, 0, Kokkos::ALL, Kokkos::ALL, Kokkos::ALL);
}

}  // namespace detail

/// o, lse (written) = attention of this rank's queries over the whole ring's keys. q [batch, n_r, heads,
/// head_dim], k, v [batch, n_r, heads_kv, head_dim], o like q, lse [batch, heads, n_r]; positions by
/// opt.layout. Collective over comm.
template <class Comm, class Exec, class Q, class K, class V, class O, class L>
void ring_attention_forward(const Comm& communicator, const Exec& exec, const Q& q, const K& k, const V& v, const O& o,
                            const L& lse, const Params& params, const RingOptions& opt = {}) {
  using namespace detail;
  typename TransportOf<Comm>::type comm(communicator, exec);
  using T = typename O::non_const_value_type;
  using LT = typename L::non_const_value_type;
  using Mem = typename Exec::memory_space;
  const Ring ring = make_ring(comm, q, k, params, opt);
  const std::int64_t nmax = ring.max_length();
  // The ring's buffers are LayoutRight on every memory space (a device View's default is LayoutLeft,
  // which kfa::forward declines: head_dim must have unit stride).
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> o_part("kfa ring o part", ring.batch, nmax, ring.heads, ring.head_dim);
  Kokkos::View<LT***, Kokkos::LayoutRight, Mem> lse_part("kfa ring lse part", ring.batch, ring.heads, nmax);
  // the accumulators: o = 0, lse = -inf, each block merged in
  Kokkos::deep_copy(exec, o, T(0));
  Kokkos::deep_copy(exec, lse, -Kokkos::Experimental::infinity<LT>::value);
  const std::vector<Chunk> qchunks = ring.chunks(ring.rank);
  ring_kv<T>(comm, exec, ring, k, v, [&](int src, const auto& kb, const auto& vb) {
    for_each_pair(ring, qchunks, src, params, [&](const Chunk& qc, const Chunk& kc, const Params& pp) {
      const Chunk local{0, 0, qc.length};
      const auto op = rows(o_part, local);
      const auto lp = lse_rows(lse_part, local);
      kfa::forward(exec, rows(q, qc), rows(kb, kc), rows(vb, kc), op, lp, pp);
      kfa::merge_attention_states(exec, rows(o, qc), lse_rows(lse, qc), op, lp);
    });
  });
}

/// dq, dk, dv (written) of ring attention, from dout and the forward's q, k, v, o, lse (this rank's
/// slices, as ring_attention_forward took and gave them). Collective over comm.
template <class Comm, class Exec, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV>
void ring_attention_backward(const Comm& communicator, const Exec& exec, const DO& dout, const Q& q, const K& k, const V& v,
                             const O& o, const L& lse, const DQ& dq, const DK& dk, const DV& dv, const Params& params,
                             const RingOptions& opt = {}) {
  using namespace detail;
  typename TransportOf<Comm>::type comm(communicator, exec);
  using T = typename DQ::non_const_value_type;
  using Mem = typename Exec::memory_space;
  const Ring ring = make_ring(comm, q, k, params, opt);
  const std::int64_t nmax = ring.max_length();
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dq_part("kfa ring dq part", ring.batch, nmax, ring.heads, ring.head_dim);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dk_part("kfa ring dk part", ring.batch, nmax, ring.heads_kv, ring.head_dim);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dv_part("kfa ring dv part", ring.batch, nmax, ring.heads_kv, ring.head_dim);
  Kokkos::deep_copy(exec, dq, T(0));
  const std::vector<Chunk> qchunks = ring.chunks(ring.rank);
  ring_kv_grads<T>(comm, exec, ring, k, v, dk, dv,
                   [&](int src, const auto& kb, const auto& vb, const auto& dkb, const auto& dvb) {
    for_each_pair(ring, qchunks, src, params, [&](const Chunk& qc, const Chunk& kc, const Params& pp) {
      const Chunk ql{0, 0, qc.length}, kl{0, 0, kc.length};
      kfa::backward(exec, rows(dout, qc), rows(q, qc), rows(kb, kc), rows(vb, kc), rows(o, qc), lse_rows(lse, qc),
                    rows(dq_part, ql), rows(dk_part, kl), rows(dv_part, kl), pp);
      add_into(exec, rows(dq, qc), rows(dq_part, ql));
      add_into(exec, rows(dkb, kc), rows(dk_part, kl));
      add_into(exec, rows(dvb, kc), rows(dv_part, kl));
    });
  });
}

/// Packed sequences: o [n_r, heads, head_dim], lse [heads, n_r] (written) = attention of this rank's
/// tokens over the ring's keys of their own sequence. cu_seqlens (host, batch + 1 prefix sums from 0 of
/// the global sequence lengths, the same on every rank) cuts the token stream into sequences. q, k, v
/// [n_r, heads(_kv), head_dim]: this rank's tokens by opt.layout: contiguous, its run of the stream,
/// rank by rank in order (sequences may span ranks); zigzag, chunks r and 2P - 1 - r of each sequence,
/// sequence by sequence (every length a multiple of 2P, n_r = cu_seqlens.back() / P). o and lse follow
/// q's rows. Collective over comm.
template <class Comm, class Exec, class Q, class K, class V, class O, class L>
void ring_attention_forward_varlen(const Comm& communicator, const Exec& exec, const Q& q, const K& k, const V& v, const O& o,
                                   const L& lse, const std::vector<std::int32_t>& cu_seqlens, const Params& params,
                                   const RingOptions& opt = {}) {
  using namespace detail;
  typename TransportOf<Comm>::type comm(communicator, exec);
  using T = typename O::non_const_value_type;
  using LT = typename L::non_const_value_type;
  using Mem = typename Exec::memory_space;
  std::vector<std::int64_t> start;
  const Ring ring = make_packed_ring(comm, q, k, cu_seqlens, params, opt.layout, start);
  const std::int64_t nmax = ring.max_length(), n = ring.lengths[ring.rank];
  // the running output [1, n, heads, d] / lse [1, heads, n] (merge_attention_states' ranks), and a block's
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> o_acc("kfa ring o", 1, n, ring.heads, ring.head_dim);
  Kokkos::View<LT***, Kokkos::LayoutRight, Mem> lse_acc("kfa ring lse", 1, ring.heads, n);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> o_part("kfa ring o part", 1, nmax, ring.heads, ring.head_dim);
  Kokkos::View<LT***, Kokkos::LayoutRight, Mem> lse_part("kfa ring lse part", 1, ring.heads, nmax);
  Kokkos::deep_copy(exec, lse_acc, -Kokkos::Experimental::infinity<LT>::value);
  const std::vector<PackedCall<Mem>> calls = packed_calls<Mem>(exec, ring, start, cu_seqlens, params);
  ring_kv<T>(comm, exec, ring, k, v, [&](int src, const auto& kb, const auto& vb) {
    const PackedCall<Mem>& c = calls[src];
    if (!c.on) return;
    const PackedPair& pp = c.pair;
    const Chunk local{0, 0, pp.q.length};
    const auto op = rows(o_part, local);
    const auto lp = lse_rows(lse_part, local);
    kfa::forward_varlen(exec, packed_rows(q, pp.q), packed_rows(packed(kb), pp.k), packed_rows(packed(vb), pp.k),
                        packed(op), Kokkos::subview(lp, 0, Kokkos::ALL, Kokkos::ALL), c.cu_q, c.cu_k, pp.max_q,
                        pp.max_k, c.params);
    kfa::merge_attention_states(exec, rows(o_acc, pp.q), lse_rows(lse_acc, pp.q), op, lp);
  });
  Kokkos::deep_copy(exec, o, packed(o_acc));
  Kokkos::deep_copy(exec, lse, Kokkos::subview(lse_acc, 0, Kokkos::ALL, Kokkos::ALL));
}

/// Packed sequences: dq, dk, dv (written) of ring_attention_forward_varlen, from dout and its q, k, v,
/// o, lse (this rank's packed slices, as it took and gave them, with the same layout). Collective over comm.
template <class Comm, class Exec, class DO, class Q, class K, class V, class O, class L, class DQ, class DK, class DV>
void ring_attention_backward_varlen(const Comm& communicator, const Exec& exec, const DO& dout, const Q& q, const K& k,
                                    const V& v, const O& o, const L& lse, const DQ& dq, const DK& dk, const DV& dv,
                                    const std::vector<std::int32_t>& cu_seqlens, const Params& params,
                                    const RingOptions& opt = {}) {
  using namespace detail;
  typename TransportOf<Comm>::type comm(communicator, exec);
  using T = typename DQ::non_const_value_type;
  using Mem = typename Exec::memory_space;
  std::vector<std::int64_t> start;
  const Ring ring = make_packed_ring(comm, q, k, cu_seqlens, params, opt.layout, start);
  const std::int64_t nmax = ring.max_length(), n = ring.lengths[ring.rank];
  // rank-4 [1, rows, heads, d] windows, as add_into takes them
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dq_acc("kfa ring dq", 1, n, ring.heads, ring.head_dim);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dq_part("kfa ring dq part", 1, nmax, ring.heads, ring.head_dim);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dk_part("kfa ring dk part", 1, nmax, ring.heads_kv, ring.head_dim);
  Kokkos::View<T****, Kokkos::LayoutRight, Mem> dv_part("kfa ring dv part", 1, nmax, ring.heads_kv, ring.head_dim);
  const std::vector<PackedCall<Mem>> calls = packed_calls<Mem>(exec, ring, start, cu_seqlens, params);
  ring_kv_grads<T>(comm, exec, ring, k, v, dk, dv,
                   [&](int src, const auto& kb, const auto& vb, const auto& dkb, const auto& dvb) {
    const PackedCall<Mem>& c = calls[src];
    if (!c.on) return;
    const PackedPair& pp = c.pair;
    const Chunk ql{0, 0, pp.q.length}, kl{0, 0, pp.k.length};
    kfa::backward_varlen(exec, packed_rows(dout, pp.q), packed_rows(q, pp.q), packed_rows(packed(kb), pp.k),
                         packed_rows(packed(vb), pp.k), packed_rows(o, pp.q), packed_lse_rows(lse, pp.q),
                         packed(rows(dq_part, ql)), packed(rows(dk_part, kl)), packed(rows(dv_part, kl)), c.cu_q,
                         c.cu_k, pp.max_q, pp.max_k, c.params);
    add_into(exec, rows(dq_acc, pp.q), rows(dq_part, ql));
    add_into(exec, rows(dkb, pp.k), rows(dk_part, kl));
    add_into(exec, rows(dvb, pp.k), rows(dv_part, kl));
  });
  Kokkos::deep_copy(exec, dq, packed(dq_acc));
}

}  // namespace kfa::distributed
