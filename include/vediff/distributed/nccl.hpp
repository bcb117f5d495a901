#pragma once
// The NCCL communicator: one process per GPU (GPU = the rank's local rank), for cuda tensors.
// NCCL moves device buffers (gradient buckets, parameters) on a stream of its own; MPI
// (distributed/mpi.hpp) starts it (rank 0's ncclUniqueId, broadcast) and carries what lives on
// the host (loss means, stop decisions, check-ins, ZeRO's host-staged gather), so a hung rank
// is still named within the MPI communicator's timeout. llm.c's multi-GPU path is the model.
//
// Which engine a call uses follows the memory it is given: device pointers go to NCCL, host
// pointers to MPI. Compiled by nvcc only; link vediff::nccl (CMake, VEDIFF_WITH_NCCL).
//
// Ordering: the buffers NCCL reads were written by kernels on the backend's stream, so NCCL's
// stream first waits for an event recorded there; a request completes when NCCL's own event
// does, and waiting for it polls that event against the deadline (never a blocking
// synchronize that a dead peer could stall forever). NCCL's stream only ever touches buffers
// that stay allocated across the collective (data_parallel's buckets, the parameters), so the
// caching allocator, which recycles blocks in the backend stream's order, is not crossed.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nccl.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/distributed/mpi.hpp"

namespace vediff::distributed {

namespace nccl_detail {

inline void check(ncclResult_t status, const char* what) {
    if (status != ncclSuccess) throw std::runtime_error(fmt::format("NCCL: {} failed: {}", what, ncclGetErrorString(status)));
}

template <class T>
ncclDataType_t datatype() {
    if constexpr (std::is_same_v<T, float>) return ncclFloat32;
    else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
    else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
    else if constexpr (std::is_same_v<T, std::int64_t>) return ncclInt64;
    else static_assert(sizeof(T) == 0, "no NCCL datatype for this element type");
}

/// True for memory the GPU owns (cudaMalloc, cudaMallocAsync, managed); false for host memory.
inline bool is_device_pointer(const void* p) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

struct event_deleter {
    void operator()(CUevent_st* e) const noexcept { (void)cudaEventDestroy(e); }
};
using event = std::unique_ptr<CUevent_st, event_deleter>;

inline event make_event() {
    cudaEvent_t e = nullptr;
    cuda_detail::check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    return event(e);
}

/// The ncclUniqueId as the bytes MPI broadcasts.
static_assert(sizeof(ncclUniqueId) == NCCL_UNIQUE_ID_BYTES);

} // namespace nccl_detail

class nccl {
public:
    static constexpr const char* name = "nccl";
    static constexpr bool is_distributed = true;
    /// data_parallel sends gradient buckets while backward runs (NCCL works beside the kernels).
    static constexpr bool overlaps_backward = true;
    /// data_parallel hands this communicator cuda buffers as they are (no host staging).
    template <class D>
    static constexpr bool takes_memory_of = std::is_same_v<D, cuda> || D::host_accessible;

    /// Selects GPU local_rank (before the backend's first CUDA call: its stream, cuBLAS handle
    /// and memory cache are then that GPU's) and joins NCCL over host's ranks.
    explicit nccl(mpi& host) : host_(host) {
        int devices = 0;
        cuda_detail::check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
        if (host.local_rank() >= devices)
            host.fail(fmt::format("local rank {} has no GPU of its own: this node has {} (start at most one rank per GPU)", host.local_rank(),
                                  devices));
        cuda_detail::check(cudaSetDevice(host.local_rank()), "cudaSetDevice");
        ncclUniqueId id{};
        if (host.rank() == 0) nccl_detail::check(ncclGetUniqueId(&id), "ncclGetUniqueId");
        host.broadcast(reinterpret_cast<std::uint8_t*>(&id), sizeof id, 0, "the NCCL unique id");
        nccl_detail::check(ncclCommInitRank(&comm_, host.size(), id, host.rank()), "ncclCommInitRank");
        cuda_detail::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags (NCCL's stream)");
    }
    nccl(const nccl&) = delete;
    nccl& operator=(const nccl&) = delete;
    ~nccl() {
        if (comm_) (void)ncclCommDestroy(comm_);
        if (stream_) (void)cudaStreamDestroy(stream_);
    }

    int rank() const { return host_.rank(); }
    int size() const { return host_.size(); }
    int local_rank() const { return host_.local_rank(); }
    int device() const { return host_.local_rank(); }
    mpi& host() { return host_; }

    /// A collective in flight on NCCL's stream (or an MPI one, for host memory).
    struct request {
        nccl_detail::event done;
        mpi::request on_host;
        std::string what;
    };

    template <class T>
    request start_all_reduce_sum(T* data, std::size_t n, std::string_view what) {
        request r;
        r.what = fmt::format("the all-reduce of {} ({} values)", what, n);
        if (n == 0) return r;
        if (!nccl_detail::is_device_pointer(data)) {
            r.on_host = host_.start_all_reduce_sum(data, n, what);
            return r;
        }
        after_backend_stream();
        // The reduction runs while the backend's stream goes on: the buffer's block must not be
        // reused before it ends, should its tensor be released first.
        memory<cuda>::record_stream(data, stream_);
        nccl_detail::check(ncclAllReduce(data, data, n, nccl_detail::datatype<T>(), ncclSum, comm_, stream_), "ncclAllReduce");
        r.done = record_on_nccl_stream();
        return r;
    }
    bool test(request& r) {
        if (!r.done) return host_.test(r.on_host);
        const cudaError_t status = cudaEventQuery(r.done.get());
        if (status == cudaErrorNotReady) return false;
        cuda_detail::check(status, "cudaEventQuery (an NCCL collective)");
        return true;
    }
    void wait(request& r) {
        if (!r.done) return host_.wait(r.on_host);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(host_.timeout_s());
        for (int polls = 0; !test(r); ++polls) {
            if (std::chrono::steady_clock::now() > deadline) fail(fmt::format("{} did not complete within {} s", r.what, host_.timeout_s()));
            if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
    }

    template <class T>
    void all_reduce_sum(T* data, std::size_t n, std::string_view what) {
        auto r = start_all_reduce_sum(data, n, what);
        wait(r);
    }

    template <class T>
    void broadcast(T* data, std::size_t n, int root, std::string_view what) {
        if (n == 0) return;
        if (!nccl_detail::is_device_pointer(data)) return host_.broadcast(data, n, root, what);
        after_backend_stream();
        nccl_detail::check(ncclBroadcast(data, data, n, nccl_detail::datatype<T>(), root, comm_, stream_), "ncclBroadcast");
        auto r = device_request(fmt::format("the broadcast of {} from rank {}", what, root));
        wait(r);
    }

    /// Each rank's block (counts[r] values at displacements[r]) on every rank, in place: one
    /// NCCL broadcast per rank in a group for device memory (blocks may differ in size).
    template <class T>
    void all_gather(T* data, std::span<const int> counts, std::span<const int> displacements, std::string_view what) {
        if (!nccl_detail::is_device_pointer(data)) return host_.all_gather(data, counts, displacements, what);
        after_backend_stream();
        nccl_detail::check(ncclGroupStart(), "ncclGroupStart");
        for (int r = 0; r < size(); ++r) {
            T* block = data + displacements[static_cast<std::size_t>(r)];
            nccl_detail::check(ncclBroadcast(block, block, static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]),
                                             nccl_detail::datatype<T>(), r, comm_, stream_),
                               "ncclBroadcast (all-gather)");
        }
        nccl_detail::check(ncclGroupEnd(), "ncclGroupEnd");
        auto r = device_request(fmt::format("the all-gather of {}", what));
        wait(r);
    }

    int decide(int code, std::string_view what) { return host_.decide(code, what); }
    void arrive(std::string_view what) { host_.arrive(what); }
    void barrier(std::string_view what) { host_.barrier(what); }

    /// Aborts NCCL's collectives (a peer is gone), then ends every rank through MPI.
    [[noreturn]] void fail(const std::string& message) {
        if (comm_) (void)ncclCommAbort(comm_);
        comm_ = nullptr;
        host_.fail(message);
    }

private:
    // NCCL's stream waits for what the backend's stream has queued (the buffer's producers).
    void after_backend_stream() {
        auto ready = nccl_detail::make_event();
        cuda_detail::check(cudaEventRecord(ready.get(), cuda_detail::stream()), "cudaEventRecord");
        cuda_detail::check(cudaStreamWaitEvent(stream_, ready.get(), 0), "cudaStreamWaitEvent");
    }
    // A request for what was just queued on NCCL's stream.
    request device_request(std::string what) {
        request r;
        r.done = record_on_nccl_stream();
        r.what = std::move(what);
        return r;
    }
    nccl_detail::event record_on_nccl_stream() {
        auto done = nccl_detail::make_event();
        cuda_detail::check(cudaEventRecord(done.get(), stream_), "cudaEventRecord");
        return done;
    }

    mpi& host_;
    ncclComm_t comm_ = nullptr;
    cudaStream_t stream_ = nullptr;
};

static_assert(communicator<nccl>);

} // namespace vediff::distributed
