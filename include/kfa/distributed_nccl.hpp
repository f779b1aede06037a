#pragma once
// kfa::distributed over NCCL: ring attention (kfa/distributed/ring.hpp) whose ranks are the GPUs of an
// NCCL communicator, one process (or thread) per GPU, K/V blocks in device memory. The transfers run on
// a stream of the transport's own, so the next block moves while the current one computes on the
// call's execution space; NVLink multicast is never asked for (no ncclCommInitRankConfig / NVLS
// options here; run with NCCL_NVLS_ENABLE=0 where a machine has it).
//   ncclComm_t nc; ncclCommInitRank(&nc, nranks, id, rank);  // the caller's communicator
//   kfa::distributed::ring_attention_forward(kfa::distributed::NcclComm{nc}, Kokkos::Cuda(), q, k, v, o, lse, params);
// The execution space must be one whose memory NCCL reads (Kokkos::Cuda with its CudaSpace views).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kfa/distributed/ring.hpp"
#include "kfa/error.hpp"

namespace kfa::distributed {

/// An NCCL communicator the caller made (ncclCommInitRank / ncclCommSplit) and keeps.
struct NcclComm {
  ncclComm_t comm = nullptr;
};

namespace detail {

inline void nccl_check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess)
    throw Error(std::string("kfa ring attention: ") + what + " failed: " + ncclGetErrorString(rc));
}
inline void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(std::string("kfa ring attention: ") + what + " failed: " + cudaGetErrorString(rc));
}

/// The ring's transport over NCCL: each post is one group of a send and a receive on the transport's
/// stream (NCCL matches them by order between two ranks, which the ring keeps the same on both);
/// wait() synchronizes that stream.
class NcclTransport {
 public:
  template <class Exec>
  NcclTransport(const NcclComm& c, const Exec&) : comm_(c.comm) {
    if (comm_ == nullptr) throw Error("kfa ring attention: the NCCL communicator is null");
    nccl_check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    nccl_check(ncclCommCount(comm_, &size_), "ncclCommCount");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;
  ~NcclTransport() {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// all[n r + i] = rank r's mine[i], on every rank (through device memory, as NCCL needs).
  void allgather(const std::int64_t* mine, int n, std::int64_t* all) {
    const std::size_t bytes = sizeof(std::int64_t) * std::size_t(n);
    void* d = nullptr;
    cuda_check(cudaMalloc(&d, bytes * (std::size_t(size_) + 1)), "cudaMalloc");
    auto* dmine = static_cast<std::int64_t*>(d);
    auto* dall = dmine + n;
    cudaError_t err = cudaMemcpyAsync(dmine, mine, bytes, cudaMemcpyHostToDevice, stream_);
    ncclResult_t rc = err == cudaSuccess ? ncclAllGather(dmine, dall, std::size_t(n), ncclInt64, comm_, stream_) : ncclSuccess;
    if (err == cudaSuccess && rc == ncclSuccess)
      err = cudaMemcpyAsync(all, dall, bytes * std::size_t(size_), cudaMemcpyDeviceToHost, stream_);
    if (err == cudaSuccess) err = cudaStreamSynchronize(stream_);
    cudaFree(d);
    nccl_check(rc, "ncclAllGather");
    cuda_check(err, "the allgather's copies");
  }
  /// Posts the transfer of `send_count` elements of T to `to` and of `recv_count` from `from`.
  template <class T>
  void post(const T* send, std::int64_t send_count, T* recv, std::int64_t recv_count, int to, int from, int /*tag*/) {
    nccl_check(ncclGroupStart(), "ncclGroupStart");
    ncclResult_t rc = ncclSuccess;
    if (recv_count > 0)
      rc = ncclRecv(recv, std::size_t(recv_count) * sizeof(T), ncclUint8, from, comm_, stream_);
    if (rc == ncclSuccess && send_count > 0)
      rc = ncclSend(send, std::size_t(send_count) * sizeof(T), ncclUint8, to, comm_, stream_);
    const ncclResult_t end = ncclGroupEnd();
    nccl_check(rc, "ncclSend / ncclRecv");
    nccl_check(end, "ncclGroupEnd");
  }
  /// Waits for every posted transfer.
  void wait() {
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (NCCL transfers)");
    ncclResult_t async = ncclSuccess;
    nccl_check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    nccl_check(async, "an NCCL transfer");
  }

 private:
  ncclComm_t comm_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
};

template <>
struct TransportOf<NcclComm> {
  using type = NcclTransport;
};

}  // namespace detail
}  // namespace kfa::distributed
