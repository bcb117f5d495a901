#pragma once
// Device memory for vediff::cuda: stream-ordered allocations (cudaMallocAsync on the backend's
// stream) recycled through a size-keyed cache per device (block_cache.hpp), so that a training
// step, which allocates the same activations every iteration, calls cudaMallocAsync only in its
// first iteration. A block used on another stream too is declared with record_stream and not
// reused before that stream's work is done. stats() reports the bytes live, their peak and the
// bytes cached; allocation_count() the device allocations. Transfers are explicit: copy_to_host
// waits for the stream (the caller reads the result; an index check's fault is thrown there); copy_from_host goes through double-buffered
// pinned staging and does not.
#include <array>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <mutex>

#include <thrust/execution_policy.h>
#include <thrust/fill.h>

#include <fmt/format.h>

#include "vediff/backend/cuda/block_cache.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

namespace cuda_detail {

/// block_cache's device calls: cudaMallocAsync / cudaFreeAsync on the backend's stream, events
/// for blocks used on other streams.
struct cuda_driver {
    using stream_type = cudaStream_t;
    using event_type = cudaEvent_t;

    static void* allocate(std::size_t bytes) {
        void* p = nullptr;
        const cudaError_t status = cudaMallocAsync(&p, bytes, stream());
        if (status == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            return nullptr;
        }
        check(status, "cudaMallocAsync");
        return p;
    }
    static void free(void* p) { (void)cudaFreeAsync(p, stream()); }
    static stream_type backend_stream() { return stream(); }
    /// An event at the stream's current end; where one cannot be made, the stream is waited for
    /// instead (the block is then free at once).
    static event_type record_event(stream_type s) {
        cudaEvent_t e = nullptr;
        if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess && cudaEventRecord(e, s) == cudaSuccess) return e;
        (void)cudaGetLastError();
        if (e) (void)cudaEventDestroy(e);
        (void)cudaStreamSynchronize(s);
        return nullptr;
    }
    static bool event_done(event_type e) {
        if (!e) return true;
        if (cudaEventQuery(e) == cudaErrorNotReady) {
            (void)cudaGetLastError();
            return false;
        }
        return true;
    }
    static void wait_event(event_type e) {
        if (e) (void)cudaEventSynchronize(e);
    }
    static void destroy_event(event_type e) {
        if (e) (void)cudaEventDestroy(e);
    }
};

/// Where the pieces of host-to-device copies are staged: two pinned buffers used as a ring.
/// Copies take consecutive space in the current buffer; when it is full, the other one is taken
/// from its start, after waiting for the device copies that last read it (wait_first). Many small
/// uploads in a step then share one buffer and never wait; a large one goes up in buffer-sized
/// pieces, alternating, so that the host's memcpy of one overlaps the device's copy of the other.
struct staging_ring {
    struct piece {
        int buffer;
        std::size_t offset, length;
        bool wait_first;
    };
    std::size_t buffer_bytes;
    int current = 0;
    std::size_t offset = 0;

    piece take(std::size_t wanted) {
        bool wait = false;
        if (offset == buffer_bytes) {
            current = 1 - current;
            offset = 0;
            wait = true;
        }
        const piece p{current, offset, std::min(wanted, buffer_bytes - offset), wait};
        offset += p.length;
        return p;
    }
};

/// Double-buffered pinned staging for host-to-device copies, per device (staging_ring): a piece
/// waits only for the device copies that last read its buffer (an event), never for the stream.
class staged_upload {
public:
    static constexpr std::size_t buffer_bytes = std::size_t{8} << 20;

    static void copy(void* dst, const void* src, std::size_t bytes) {
        auto& st = state();
        std::lock_guard lock(st.mutex);
        if (!st.ready()) {
            // No pinned memory to be had: the copy from pageable memory, then a wait.
            check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (host to device)");
            synchronize();
            return;
        }
        for (std::size_t done = 0; done < bytes;) {
            const auto piece = st.ring.take(bytes - done);
            auto& buffer = st.buffers[static_cast<std::size_t>(piece.buffer)];
            if (piece.wait_first) check(cudaEventSynchronize(buffer.done), "cudaEventSynchronize (upload staging)");
            std::byte* staged = static_cast<std::byte*>(buffer.data) + piece.offset;
            std::memcpy(staged, static_cast<const std::byte*>(src) + done, piece.length);
            check(cudaMemcpyAsync(static_cast<std::byte*>(dst) + done, staged, piece.length, cudaMemcpyHostToDevice, stream()),
                  "cudaMemcpyAsync (host to device)");
            check(cudaEventRecord(buffer.done, stream()), "cudaEventRecord (upload staging)");
            done += piece.length;
        }
    }

private:
    struct buffer_type {
        void* data = nullptr;
        cudaEvent_t done = nullptr;
    };
    struct state_type {
        std::mutex mutex;
        std::array<buffer_type, 2> buffers{};
        staging_ring ring{buffer_bytes};
        bool tried = false, usable = false;
        bool ready() {
            if (tried) return usable;
            tried = true;
            for (auto& b : buffers) {
                if (cudaMallocHost(&b.data, buffer_bytes) != cudaSuccess || cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming) != cudaSuccess ||
                    cudaEventRecord(b.done, stream()) != cudaSuccess) {
                    (void)cudaGetLastError();
                    return usable = false;
                }
            }
            return usable = true;
        }
    };
    static state_type& state() {
        static std::array<state_type, max_devices> states;
        return states[static_cast<std::size_t>(current_device())];
    }
};

} // namespace cuda_detail

template <>
struct memory<cuda> {
    static constexpr std::size_t alignment = 256;
    using statistics = cuda_detail::allocator_statistics;

    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        bytes = round_up(bytes);
        void* p = cache().allocate(bytes);
        if (!p) {
            std::size_t free_bytes = 0, total_bytes = 0;
            (void)cudaMemGetInfo(&free_bytes, &total_bytes);
            const auto s = cache().stats();
            throw cuda_out_of_memory(fmt::format(
                fmt::runtime("cuda: out of memory allocating {} bytes ({:.1f} MiB): {:.1f} of {:.1f} MiB free on the device, "
                             "{:.1f} MiB live in vediff's tensors, after returning vediff's idle blocks"),
                bytes, mib(bytes), mib(free_bytes), mib(total_bytes), mib(s.live)));
        }
        return p;
    }

    /// Back into the cache: the next allocation of this size reuses the block, in stream order
    /// (after the work of any stream recorded with record_stream).
    static void release(void* p, std::size_t /*bytes*/) noexcept { cache().release(p); }

    /// Declares that the block holding `p` is used on `stream` as well (a NCCL collective, a user's
    /// kernel or copy): when released, it is not reused before the work queued on `stream` until
    /// then has run. Throws std::invalid_argument where `p` is not in a live block of this cache.
    static void record_stream(const void* p, cudaStream_t stream) { cache().record_stream(p, stream); }

    /// Returns every idle block to the device (waiting for those still used on other streams);
    /// the bytes released.
    static std::size_t trim() noexcept { return cache().trim(true); }

    /// cudaMallocAsync calls so far (cache hits not counted).
    static std::size_t allocation_count() { return cache().stats().allocations; }

    /// Bytes live (handed out, not released), their high-water mark since reset_peak(), idle
    /// (cached, pending included) and pending (waiting for another stream), and the allocations.
    static statistics stats() { return cache().stats(); }
    static void reset_peak() { cache().reset_peak(); }

    template <class T>
    static void fill(T* dst, std::int64_t n, T value) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::fill_n", [&] {
                return thrust::fill_n(thrust::cuda::par_nosync.on(cuda_detail::stream()), dst, n, value);
            });
    }

    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_detail::stream()), "cudaMemcpyAsync (device to device)");
    }
    static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
        if (!bytes) return;
        cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_detail::stream()), "cudaMemcpyAsync (device to host)");
        cuda_detail::synchronize();
        cuda_detail::raise_index_faults();  // a read is where the device's index checks report
    }
    /// Host to device without draining the stream: the bytes are copied on the host into one of
    /// two pinned staging buffers, which the device copies from asynchronously, so the caller's
    /// buffer is free on return while the GPU may still be busy with earlier work (a training
    /// step's next batch goes up while the last one computes).
    static void copy_from_host(void* dst, const void* src, std::size_t bytes) {
        if (!bytes) return;
        cuda_detail::staged_upload::copy(dst, src, bytes);
    }

private:
    // One cache per device: a block goes back to the cache of the device current when it is
    // released, which is its own as long as each thread keeps to one device (one GPU per process).
    static cuda_detail::block_cache<cuda_detail::cuda_driver>& cache() {
        static std::array<cuda_detail::block_cache<cuda_detail::cuda_driver>, cuda_detail::max_devices> caches;
        return caches[static_cast<std::size_t>(cuda_detail::current_device())];
    }
    static std::size_t round_up(std::size_t bytes) { return (bytes + alignment - 1) / alignment * alignment; }
    static double mib(std::size_t bytes) { return double(bytes) / double(1 << 20); }
};

} // namespace vediff
