#pragma once
// Device memory for vediff::cuda: stream-ordered allocations (cudaMallocAsync on the backend's
// stream) recycled through a size-keyed cache (one per device), so that a training step, which allocates the same
// activations every iteration, calls cudaMallocAsync only in its first iteration. The counters
// (allocation_count) let tests and benchmarks check that. Transfers are explicit: copy_to_host
// and copy_from_host wait for the stream, since the host buffer is the caller's.
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include <thrust/execution_policy.h>
#include <thrust/fill.h>

#include <fmt/format.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

template <>
struct memory<cuda> {
    static constexpr std::size_t alignment = 256;

    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        bytes = round_up(bytes);
        auto& c = cache();
        {
            std::lock_guard lock(c.mutex);
            if (auto it = c.free_blocks.find(bytes); it != c.free_blocks.end()) {
                void* p = it->second;
                c.free_blocks.erase(it);
                c.cached_bytes -= bytes;
                return p;
            }
        }
        void* p = nullptr;
        cudaError_t status = cudaMallocAsync(&p, bytes, cuda_detail::stream());
        if (status == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            const std::size_t released = trim();
            status = cudaMallocAsync(&p, bytes, cuda_detail::stream());
            if (status == cudaErrorMemoryAllocation) {
                (void)cudaGetLastError();
                std::size_t free_bytes = 0, total_bytes = 0;
                (void)cudaMemGetInfo(&free_bytes, &total_bytes);
                throw cuda_out_of_memory(fmt::format(
                    fmt::runtime("cuda: out of memory allocating {} bytes ({:.1f} MiB): {:.1f} of {:.1f} MiB free on the device "
                                 "after releasing vediff's {:.1f} MiB cache"),
                    bytes, mib(bytes), mib(free_bytes), mib(total_bytes), mib(released)));
            }
        }
        cuda_detail::check(status, "cudaMallocAsync");
        std::lock_guard lock(c.mutex);
        ++c.allocations;
        return p;
    }

    /// Back into the cache: the next allocation of this size reuses the block, in stream order.
    static void release(void* p, std::size_t bytes) noexcept {
        if (!p) return;
        bytes = round_up(bytes);
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        c.free_blocks.emplace(bytes, p);
        c.cached_bytes += bytes;
    }

    /// Returns every cached block to the device; the bytes released.
    static std::size_t trim() noexcept {
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        const std::size_t released = c.cached_bytes;
        for (auto& [size, p] : c.free_blocks) (void)cudaFreeAsync(p, cuda_detail::stream());
        c.free_blocks.clear();
        c.cached_bytes = 0;
        return released;
    }

    /// cudaMallocAsync calls so far (cache hits not counted).
    static std::size_t allocation_count() {
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        return c.allocations;
    }

    template <class T>
    static void fill(T* dst, std::int64_t n, T value) {
        if (n > 0) cuda_detail::thrust_call("thrust::fill_n", [&] { return thrust::fill_n(thrust::cuda::par_nosync.on(cuda_detail::stream()), dst, n, value); });
    }

    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_detail::stream()), "cudaMemcpyAsync (device to device)");
    }
    static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
        if (!bytes) return;
        cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_detail::stream()), "cudaMemcpyAsync (device to host)");
        cuda_detail::synchronize();
    }
    static void copy_from_host(void* dst, const void* src, std::size_t bytes) {
        if (!bytes) return;
        cuda_detail::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_detail::stream()), "cudaMemcpyAsync (host to device)");
        cuda_detail::synchronize();  // the host buffer may be released as soon as this returns
    }

private:
    struct block_cache {
        std::mutex mutex;
        std::multimap<std::size_t, void*> free_blocks;
        std::size_t cached_bytes = 0;
        std::size_t allocations = 0;
    };
    // One cache per device: a block goes back to the cache of the device current when it is
    // released, which is its own as long as each thread keeps to one device (one GPU per process).
    static block_cache& cache() {
        static std::array<block_cache, cuda_detail::max_devices> caches;
        return caches[static_cast<std::size_t>(cuda_detail::current_device())];
    }
    static std::size_t round_up(std::size_t bytes) { return (bytes + alignment - 1) / alignment * alignment; }
    static double mib(std::size_t bytes) { return double(bytes) / double(1 << 20); }
};

} // namespace vediff
