#pragma once
// A BlockMask as the launchers see it: checked against the call, and in the execution space's
// memory. Host-accessible spaces read the mask's own arrays; other spaces get a copy made on first
// use and cached inside the BlockMask (keyed by memory space), so repeated calls do not copy.
#include <Kokkos_Core.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "kfa/block_mask.hpp"
#include "kfa/detail/args.hpp"
#include "kfa/detail/feature_policy.hpp"
#include "kfa/error.hpp"
#include "kfa/params.hpp"

namespace kfa::detail {

/// Checks that `m` was built for this call: same lengths (the maximal lengths of packed sequences),
/// batch and heads equal to the call's or 1 (broadcast).
inline void check_block_mask(const BlockMask& m, const Shape& s) {
  if (m.empty()) throw Error("block_mask points to an empty BlockMask; build one with a BlockMask builder");
  const BlockMaskShape& ms = m.shape();
  if (ms.seqlen_q != s.seqlen_q || ms.seqlen_k != s.seqlen_k)
    throw Error("block_mask was built for seqlen_q " + std::to_string(ms.seqlen_q) + ", seqlen_k " +
                std::to_string(ms.seqlen_k) + " but the call has seqlen_q " + std::to_string(s.seqlen_q) +
                ", seqlen_k " + std::to_string(s.seqlen_k));
  if (ms.batch != 1 && ms.batch != s.batch)
    throw Error("block_mask has batch " + std::to_string(ms.batch) + ", expected 1 (broadcast) or " +
                std::to_string(s.batch));
  if (ms.heads != 1 && ms.heads != s.heads)
    throw Error("block_mask has heads " + std::to_string(ms.heads) + ", expected 1 (broadcast) or " +
                std::to_string(s.heads));
}

template <class MemSpace>
struct BlockMaskCopy {
  std::vector<Kokkos::View<char*, MemSpace>> arrays;
};

/// The mask's arrays in ExecSpace's memory (cached for non-host spaces).
template <class ExecSpace>
BlockSparseSpec block_sparse_spec(const ExecSpace& exec, const BlockMask& m) {
  using Mem = typename ExecSpace::memory_space;
  BlockSparseSpec spec = m.host_spec();
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    return spec;
  } else {
    auto& cache = m.device_copies();
    std::lock_guard<std::mutex> lock(cache.mutex);
    std::shared_ptr<BlockMaskCopy<Mem>> copy;
    for (auto& [name, ptr] : cache.by_space)
      if (name == Mem::name()) copy = std::static_pointer_cast<BlockMaskCopy<Mem>>(ptr);
    const auto host = m.arrays();
    if (!copy) {
      copy = std::make_shared<BlockMaskCopy<Mem>>();
      for (const auto& a : host) {
        Kokkos::View<char*, Mem> d(Kokkos::view_alloc(Kokkos::WithoutInitializing, "kfa::block_mask"), a.bytes);
        Kokkos::View<const char*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(
            static_cast<const char*>(a.data), a.bytes);
        if (a.bytes) Kokkos::deep_copy(exec, d, h);
        copy->arrays.push_back(d);
      }
      cache.by_space.emplace_back(Mem::name(), copy);
    }
    auto p = [&](int i) { return copy->arrays[i].data(); };
    spec.row_ptr = reinterpret_cast<const std::int32_t*>(p(0));
    spec.col_idx = reinterpret_cast<const std::int32_t*>(p(1));
    spec.partial_row_ptr = reinterpret_cast<const std::int32_t*>(p(2));
    spec.partial_col_idx = reinterpret_cast<const std::int32_t*>(p(3));
    spec.partial_bits = reinterpret_cast<const std::uint32_t*>(p(4));
    spec.col_ptr = reinterpret_cast<const std::int32_t*>(p(5));
    spec.row_idx = reinterpret_cast<const std::int32_t*>(p(6));
    spec.partial_col_ptr = reinterpret_cast<const std::int32_t*>(p(7));
    spec.partial_row_idx = reinterpret_cast<const std::int32_t*>(p(8));
    spec.col_partial_entry = reinterpret_cast<const std::int32_t*>(p(9));
    spec.block_state = reinterpret_cast<const std::int32_t*>(p(10));
    return spec;
  }
}

/// Fills `score.blocks` from Params::block_mask (disabled when null), after checking it.
template <class ExecSpace>
void resolve_block_mask(const ExecSpace& exec, const Params& p, const Shape& s, ScoreSpec& score) {
  score.blocks = BlockSparseSpec{};
  if (p.block_mask == nullptr) return;
  check_block_mask(*p.block_mask, s);
  score.blocks = block_sparse_spec(exec, *p.block_mask);
}

/// The part of a "no native kernel" message that names a feature the native kernels decline.
inline std::string native_decline_reason(const ScoreSpec& sc) {
  if (!native_block_sizes(sc.blocks))
    return ", block mask with blocks " + std::to_string(sc.blocks.block_q) + " x " + std::to_string(sc.blocks.block_k) +
           " (native kernels take 64, 128 or 256)";
  return "";
}

}  // namespace kfa::detail
