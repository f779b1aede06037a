#pragma once
// Measures what one call allocates, in any Kokkos memory space, through Kokkos' in-process tool
// callbacks (no tool library needed): every View and every scratch pool Kokkos allocates is
// reported with its pointer and size, so the live bytes and their peak are exact, on host and GPU
// alike (a malloc counter would miss device memory).
//
// Kokkos keeps team scratch in a per-thread pool that outlives the call (it only grows), so a
// kernel that uses team scratch is charged the whole pool in use, not just what it grew.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>

namespace kfa::bench {

class AllocTracker {
 public:
  struct Usage {
    std::uint64_t transient = 0;  ///< peak live bytes during the call beyond what was live before
    std::uint64_t scratch = 0;    ///< team-scratch pool bytes live after the call
    std::uint64_t total(bool uses_team_scratch) const { return transient + (uses_team_scratch ? scratch : 0); }
  };

  /// Installs the callbacks; allocations made before are unknown to it, so call it right after
  /// Kokkos::initialize. They stay installed so that every free is seen (their cost, a few
  /// microseconds per kernel launch, is far below the timed calls').
  static void start() {
    Kokkos::Tools::Experimental::set_allocate_data_callback(&on_alloc);
    Kokkos::Tools::Experimental::set_deallocate_data_callback(&on_free);
  }

  /// Runs `call` (which must fence before returning) and returns what it allocated.
  template <class F>
  static Usage measure(F&& call) {
    State& s = state();
    std::uint64_t before;
    {
      std::lock_guard<std::mutex> g(s.mutex);
      s.peak = before = s.live;
    }
    call();
    std::lock_guard<std::mutex> g(s.mutex);
    Usage u;
    u.transient = s.peak - before;
    u.scratch = s.scratch_live;
    return u;
  }

 private:
  struct Block {
    std::uint64_t bytes;
    bool scratch;
  };
  struct State {
    std::mutex mutex;
    std::map<const void*, Block> blocks;
    std::uint64_t live = 0, peak = 0, scratch_live = 0;
  };
  static State& state() {
    static State s;
    return s;
  }
  static void on_alloc(Kokkos::Tools::SpaceHandle, const char* label, const void* ptr, std::uint64_t size) {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mutex);
    // team-scratch pools: "Kokkos::OpenMP::scratch_mem", "Kokkos::CudaSpace::TeamScratchMemory", ...
    const bool scratch = label && (std::strstr(label, "scratch_mem") || std::strstr(label, "TeamScratch"));
    s.blocks[ptr] = Block{size, scratch};
    s.live += size;
    if (scratch) s.scratch_live += size;
    if (s.live > s.peak) s.peak = s.live;
  }
  static void on_free(Kokkos::Tools::SpaceHandle, const char*, const void* ptr, std::uint64_t) {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mutex);
    auto it = s.blocks.find(ptr);
    if (it == s.blocks.end()) return;  // allocated before bookkeeping started
    s.live -= it->second.bytes;
    if (it->second.scratch) s.scratch_live -= it->second.bytes;
    s.blocks.erase(it);
  }
};

}  // namespace kfa::bench
