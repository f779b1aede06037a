#pragma once
// run_backward: the portable backward's passes in order, on one execution space instance.
//   1. D = rowsum(dO * O)
//   2. K-tile pass: dK, dV (and dQ through atomics into an Acc buffer, unless deterministic)
//   3. dQ: conversion of the buffer, or the deterministic dQ pass over query tiles
#include <Kokkos_Core.hpp>

#include "kfa/detail/args.hpp"
#include "kfa/detail/backward_workspace.hpp"
#include "portable/backward_dq_kernel.hpp"
#include "portable/backward_kernel.hpp"
#include "portable/backward_rowwise.hpp"
#include "portable/backward_varlen.hpp"
#include "portable/kv_tile_walk.hpp"
#include "portable/tile_config.hpp"

namespace kfa::portable {

template <class ExecSpace, class T>
void run_backward(const ExecSpace& exec, const detail::BackwardArgs& args, const detail::BackwardWorkspaceLayout& ws) {
  using Acc = acc_t<T>;
  const detail::Shape& s = args.shape;
  char* base = static_cast<char*>(args.workspace);
  Acc* delta = reinterpret_cast<Acc*>(base + ws.delta);
  Acc* dq_acc = ws.has_dq_acc ? reinterpret_cast<Acc*>(base + ws.dq_acc) : nullptr;

  if (args.varlen.enabled()) compute_delta_varlen<ExecSpace, T>(exec, args, delta);
  else compute_delta<ExecSpace, T>(exec, args, delta);
  if (dq_acc != nullptr) fill_zero(exec, dq_acc, s.batch * s.heads * s.seqlen_q * s.head_dim);

  using KV = BackwardKernel<ExecSpace, T>;
  KV kv{args, choose_tiles(exec, s.head_dim, s.seqlen_k, &KV::scratch_bytes), 0, delta, dq_acc};
  fit_tiles_to_block_mask(kv.tc.bc, kv.tc.br, args.score.blocks);  // br: keys, bc: queries
  kv.n_ktiles = (s.seqlen_k + kv.tc.br - 1) / kv.tc.br;
  Kokkos::TeamPolicy<ExecSpace, Kokkos::Schedule<Kokkos::Dynamic>> kv_policy(exec, s.batch * s.heads_kv * kv.n_ktiles,
                                                                             kv.tc.team_size);
  kv_policy.set_scratch_size(kv.tc.scratch_level, Kokkos::PerTeam(kv.tc.scratch_bytes));
  Kokkos::parallel_for("kfa::backward::dkdv", kv_policy, kv);

  if (dq_acc != nullptr) {
    if (args.varlen.enabled()) store_dq_varlen<ExecSpace, T>(exec, args, dq_acc);
    else store_dq<ExecSpace, T>(exec, args, dq_acc);
    return;
  }
  using DQ = BackwardDqKernel<ExecSpace, T>;
  DQ dq{args, choose_tiles(exec, s.head_dim, s.seqlen_q, &DQ::scratch_bytes), 0, delta};
  fit_tiles_to_block_mask(dq.tc.br, dq.tc.bc, args.score.blocks);  // br: queries, bc: keys
  dq.n_qtiles = (s.seqlen_q + dq.tc.br - 1) / dq.tc.br;
  Kokkos::TeamPolicy<ExecSpace, Kokkos::Schedule<Kokkos::Dynamic>> dq_policy(exec, s.batch * s.heads * dq.n_qtiles,
                                                                             dq.tc.team_size);
  dq_policy.set_scratch_size(dq.tc.scratch_level, Kokkos::PerTeam(dq.tc.scratch_bytes));
  Kokkos::parallel_for("kfa::backward::dq", dq_policy, dq);
}

}  // namespace kfa::portable
