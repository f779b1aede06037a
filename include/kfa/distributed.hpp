#pragma once
// kfa::distributed over MPI: ring attention (kfa/distributed/ring.hpp) whose ranks are the processes of
// an MPI communicator. K/V blocks move by MPI_Isend / MPI_Irecv while the current block computes;
// buffers live in the execution space's memory, so device memory needs a GPU-aware MPI (or use
// kfa/distributed_nccl.hpp).
//   kfa::distributed::ring_attention_forward(MPI_COMM_WORLD, exec, q, k, v, o, lse, params, opt);
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kfa/distributed/ring.hpp"
#include "kfa/error.hpp"

namespace kfa::distributed::detail {

inline void mpi_check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw Error(std::string("kfa ring attention: ") + what + " failed (MPI error " + std::to_string(rc) + ")");
}

/// The ring's transport over an MPI communicator: non-blocking point-to-point transfers, matched by
/// tag, waited for together.
class MpiTransport {
 public:
  template <class Exec>
  MpiTransport(MPI_Comm comm, const Exec&) : comm_(comm) {
    mpi_check(MPI_Comm_rank(comm, &rank_), "MPI_Comm_rank");
    mpi_check(MPI_Comm_size(comm, &size_), "MPI_Comm_size");
  }
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;
  ~MpiTransport() {
    if (!reqs_.empty()) MPI_Waitall(int(reqs_.size()), reqs_.data(), MPI_STATUSES_IGNORE);
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// all[n r + i] = rank r's mine[i], on every rank.
  void allgather(const std::int64_t* mine, int n, std::int64_t* all) {
    mpi_check(MPI_Allgather(mine, n, MPI_INT64_T, all, n, MPI_INT64_T, comm_), "MPI_Allgather");
  }
  /// Posts the transfer of `send_count` elements of T to `to` and of `recv_count` from `from` (pieces
  /// of at most 1 GiB, so the counts fit MPI's int; a tensor's pieces take consecutive tags).
  template <class T>
  void post(const T* send, std::int64_t send_count, T* recv, std::int64_t recv_count, int to, int from, int tag) {
    constexpr std::int64_t piece = std::int64_t(1) << 30;
    auto go = [&](const void* s, void* r, std::int64_t bytes, bool sending) {
      for (std::int64_t off = 0, i = 0; off < bytes; off += piece, ++i) {
        const int n = static_cast<int>(std::min(piece, bytes - off));
        MPI_Request rq;
        if (sending)
          mpi_check(MPI_Isend(static_cast<const char*>(s) + off, n, MPI_BYTE, to, tag + int(i), comm_, &rq), "MPI_Isend");
        else
          mpi_check(MPI_Irecv(static_cast<char*>(r) + off, n, MPI_BYTE, from, tag + int(i), comm_, &rq), "MPI_Irecv");
        reqs_.push_back(rq);
      }
    };
    go(nullptr, recv, recv_count * std::int64_t(sizeof(T)), false);
    go(send, nullptr, send_count * std::int64_t(sizeof(T)), true);
  }
  /// Waits for every posted transfer.
  void wait() {
    std::vector<MPI_Request> reqs;
    reqs.swap(reqs_);
    if (!reqs.empty()) mpi_check(MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> reqs_;
};

template <>
struct TransportOf<MPI_Comm> {
  using type = MpiTransport;
};

}  // namespace kfa::distributed::detail
