#pragma once
// Checks the call's options and resolves them into the launcher's ScoreSpec.
#include <Kokkos_Core.hpp>

#include <cmath>
#include <string>

#include "kfa/detail/args.hpp"
#include "kfa/error.hpp"
#include "kfa/params.hpp"

namespace kfa::detail {

/// Largest head_dim of the portable algorithm (its scratch tiles are sized from it).
constexpr std::int64_t max_head_dim = 256;

inline ScoreSpec resolve_score(const Params& p, const Shape& s) {
  if (s.head_dim > max_head_dim)
    throw Error("head_dim " + std::to_string(s.head_dim) + " is not supported; expected 1.." +
                std::to_string(max_head_dim));
  ScoreSpec sc;
  sc.scale = p.softmax_scale ? *p.softmax_scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  if (!std::isfinite(sc.scale)) throw Error("softmax_scale must be finite");
  if (p.window_left < -1 || p.window_right < -1)
    throw Error("window_left / window_right must be >= 0, or -1 for unbounded");
  sc.window_left = p.window_left;
  sc.window_right = p.window_right;
  if (p.causal) sc.window_right = p.window_right < 0 ? 0 : std::min<std::int64_t>(p.window_right, 0);
  if (!(p.softcap >= 0.0) || !std::isfinite(p.softcap)) throw Error("softcap must be finite and >= 0 (0 = off)");
  sc.softcap = static_cast<float>(p.softcap);
  if (!p.alibi_slopes.empty() && static_cast<std::int64_t>(p.alibi_slopes.size()) != s.heads)
    throw Error("alibi_slopes has " + std::to_string(p.alibi_slopes.size()) + " entries, expected heads = " +
                std::to_string(s.heads));
  if (!(p.dropout_p >= 0.0 && p.dropout_p < 1.0)) throw Error("dropout_p must be in [0, 1)");
  sc.dropout_p = static_cast<float>(p.dropout_p);
  sc.seed = p.seed;
  sc.offset = p.offset;
  return sc;
}

/// ALiBi slopes copied to the execution space's memory (empty View when off).
template <class ExecSpace>
Kokkos::View<float*, typename ExecSpace::memory_space> device_slopes(const ExecSpace& exec, const Params& p) {
  Kokkos::View<float*, typename ExecSpace::memory_space> d;
  if (p.alibi_slopes.empty()) return d;
  d = Kokkos::View<float*, typename ExecSpace::memory_space>(
      Kokkos::view_alloc(Kokkos::WithoutInitializing, "kfa::alibi_slopes"), p.alibi_slopes.size());
  Kokkos::View<const float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(p.alibi_slopes.data(),
                                                                                            p.alibi_slopes.size());
  Kokkos::deep_copy(exec, d, h);
  return d;
}

/// KFA_BACKEND=portable|native overrides Backend::automatic.
inline Backend requested_backend(const Params& p) {
  if (p.backend != Backend::automatic) return p.backend;
  const char* env = std::getenv("KFA_BACKEND");
  if (env == nullptr) return Backend::automatic;
  const std::string e(env);
  if (e == "portable") return Backend::portable;
  if (e == "native") return Backend::native;
  return Backend::automatic;
}

}  // namespace kfa::detail
