#pragma once
// A host emulator of the small part of HIP that the kfa kernels use, to run their unmodified source
// on the CPU (compiled by a host clang, which knows ext_vector_type and _Float16): workgroups run one
// after another; the threads of a workgroup are cooperative fibers (ucontext) that switch only at
// collective operations: __syncthreads, the wavefront shuffle, and the MFMA instructions, which are
// executed by the instruction model of tests/hip/mfma_model.hpp on the 64 lanes' registers.
// A collective that not every live thread of its scope reaches (divergence) aborts with a message.
// What this cannot show: anything of the real hardware or of the AMDGPU compiler (timing, LDS
// banks, memory model beyond barriers, code generation), and out-of-bounds accesses inside LDS
// arrays (they are plain arrays here; the sanitizers see the global buffers).
#include <setjmp.h>
#include <ucontext.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "../mfma_model.hpp"

namespace kfa::emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

constexpr int wave_size = 64;

enum class State { ready, at_wave_barrier, at_block_barrier, done };

struct Fiber {
  ucontext_t ctx;     // only to enter the fiber the first time
  jmp_buf jb;         // later switches: _setjmp/_longjmp, which skip swapcontext's signal-mask syscalls
  bool started = false;
  State state = State::ready;
  Dim3 tid;
  int linear = 0;
};

struct Workgroup {
  Dim3 block_idx, block_dim, grid_dim;
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  jmp_buf scheduler_jb;
  Fiber* current = nullptr;
  std::function<void()> body;
  // exchange slots of the wave collectives
  std::vector<std::array<float, 16>> slot_a, slot_b;  // up to 16 values per lane
  std::vector<std::array<float, 16>> slot_c;
};

inline Workgroup*& group() {
  static Workgroup* g = nullptr;
  return g;
}

inline void fiber_entry() {
  Workgroup* g = group();
  g->body();
  g->current->state = State::done;
  _longjmp(g->scheduler_jb, 1);
}

/// Suspends the calling thread at a barrier of the given kind until the scheduler releases it.
inline void wait_at(State s) {
  Workgroup* g = group();
  g->current->state = s;
  if (_setjmp(g->current->jb) == 0) _longjmp(g->scheduler_jb, 1);
}

/// Runs fiber f until it waits at a barrier or finishes.
inline void resume(Workgroup& g, Fiber& f) {
  g.current = &f;
  if (_setjmp(g.scheduler_jb) != 0) return;
  if (!f.started) {
    f.started = true;
    setcontext(&f.ctx);
  }
  _longjmp(f.jb, 1);
}

/// Fiber stacks, allocated once (uninitialized) and reused by every workgroup.
inline char* fiber_stack(int thread, std::size_t bytes) {
  static std::vector<std::unique_ptr<char[]>> pool;
  while (static_cast<int>(pool.size()) <= thread) pool.emplace_back(new char[bytes]);
  return pool[thread].get();
}

inline int lane() { return group()->current->linear % wave_size; }
inline int wave() { return group()->current->linear / wave_size; }

/// Runs `kernel` for every workgroup of the grid.
template <class Kernel>
void launch(Dim3 grid, Dim3 block, Kernel kernel) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  constexpr std::size_t stack_bytes = 256 * 1024;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Workgroup g;
        g.block_idx = {bx, by, bz};
        g.block_dim = block;
        g.grid_dim = grid;
        g.body = kernel;
        g.fibers.resize(threads);
        g.slot_a.resize(threads);
        g.slot_b.resize(threads);
        g.slot_c.resize(threads);
        group() = &g;
        for (int t = 0; t < threads; ++t) {
          Fiber& f = g.fibers[t];
          f.linear = t;
          f.tid = {static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y),
                   static_cast<unsigned>(t / (block.x * block.y))};
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = fiber_stack(t, stack_bytes);
          f.ctx.uc_stack.ss_size = stack_bytes;
          f.ctx.uc_link = nullptr;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        const int waves = (threads + wave_size - 1) / wave_size;
        for (;;) {
          bool ran = false;
          for (Fiber& f : g.fibers)
            if (f.state == State::ready) {
              resume(g, f);
              ran = true;
            }
          // release wave barriers whose live lanes all arrived, then a block barrier
          bool released = false, all_done = true, all_at_block = true;
          for (int w = 0; w < waves; ++w) {
            int live = 0, at_wave = 0;
            for (int t = w * wave_size; t < std::min(threads, (w + 1) * wave_size); ++t) {
              const State s = g.fibers[t].state;
              live += s != State::done;
              at_wave += s == State::at_wave_barrier;
            }
            if (at_wave > 0 && at_wave == live) {
              for (int t = w * wave_size; t < std::min(threads, (w + 1) * wave_size); ++t)
                if (g.fibers[t].state == State::at_wave_barrier) g.fibers[t].state = State::ready;
              released = true;
            }
          }
          for (const Fiber& f : g.fibers) {
            all_done = all_done && f.state == State::done;
            all_at_block = all_at_block && (f.state == State::done || f.state == State::at_block_barrier);
          }
          if (all_done) break;
          if (!released && all_at_block) {
            int exited = 0;
            for (Fiber& f : g.fibers) {
              exited += f.state == State::done;
              if (f.state == State::at_block_barrier) f.state = State::ready;
            }
            if (exited > 0) {
              std::fprintf(stderr, "emulator: __syncthreads reached after %d threads exited\n", exited);
              std::abort();
            }
            released = true;
          }
          if (!ran && !released) {
            std::fprintf(stderr, "emulator: divergent collective (threads wait at different barriers) in block %u,%u,%u\n",
                         bx, by, bz);
            std::abort();
          }
        }
        group() = nullptr;
      }
}

inline void syncthreads() { wait_at(State::at_block_barrier); }

/// The value of lane (this lane ^ mask) of the wavefront.
inline float shfl_xor(float v, int mask) {
  Workgroup* g = group();
  const int me = g->current->linear;
  g->slot_a[me][0] = v;
  wait_at(State::at_wave_barrier);
  const int base = me - lane();
  const float r = g->slot_a[base + ((lane() ^ mask) & (wave_size - 1))][0];
  wait_at(State::at_wave_barrier);
  return r;
}

/// One 32x32x8 MFMA of the wavefront: every lane gives its 4 A and 4 B values (exact values of the
/// 16-bit format `fmt`, as floats) and its 16 accumulators; the model computes D, and each lane gets
/// its 16 results back.
inline void mfma_32x32x8(kfa::test::mfma_model::Input fmt, const float (&a)[4], const float (&b)[4], float (&c)[16]) {
  namespace m = kfa::test::mfma_model;
  Workgroup* g = group();
  const int me = g->current->linear, base = me - lane();
  for (int i = 0; i < 4; ++i) {
    g->slot_a[me][i] = a[i];
    g->slot_b[me][i] = b[i];
  }
  for (int r = 0; r < 16; ++r) g->slot_c[me][r] = c[r];
  wait_at(State::at_wave_barrier);
  if (lane() == 0) {  // one lane computes the wave's product in the model's layout
    m::Operand A, B;
    m::Accum C;
    for (int l = 0; l < wave_size; ++l) {
      for (int i = 0; i < 4; ++i) {
        A.v[l][i] = g->slot_a[base + l][i];
        B.v[l][i] = g->slot_b[base + l][i];
      }
      for (int r = 0; r < 16; ++r) C.v[l][r] = g->slot_c[base + l][r];
    }
    m::mfma_32x32x8(fmt, A, B, C, /*inputs_exact=*/true);
    for (int l = 0; l < wave_size; ++l)
      for (int r = 0; r < 16; ++r) g->slot_c[base + l][r] = C.v[l][r];
  }
  // a lane reads its results before it can reach the next collective, whose first barrier lane 0
  // must pass before it overwrites them: one barrier suffices
  wait_at(State::at_wave_barrier);
  for (int r = 0; r < 16; ++r) c[r] = g->slot_c[me][r];
}

}  // namespace kfa::emu
