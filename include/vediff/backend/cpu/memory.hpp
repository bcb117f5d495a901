#pragma once
// Host memory for vediff::cpu: 64-byte aligned blocks, recycled through a size-keyed cache so
// that a training step that allocates the same activations every iteration does not pay for
// fresh pages (page faults and zeroing) each time. Blocks of 2 MiB and more are 2 MiB aligned and
// marked for transparent huge pages: the large activations and GEMM panels of a training step
// then take far fewer TLB misses (measured: +8% tokenizer step throughput).
//
// How much the cache may keep idle: the budget (2 GiB), or more while fewer bytes are live than
// at the high-water mark of live bytes — up to that mark. A training step's backward releases its
// activations as it passes (nn/grad_mode.hpp), and the next step's forward finds them here rather
// than in fresh pages (measured on issue 18's recipe step: 43 s with the budget alone against
// 32 s, most of the difference in the forward's page faults on huge pages). A miss that would
// take the bytes held (live + idle) past both max(live + budget, high-water mark) first returns
// idle blocks to the system, largest first: what the cache keeps beyond its budget never raises
// the process's peak above the most it has had live.
#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include "vediff/core/device.hpp"

// Under AddressSanitizer the cache is bypassed: a released block goes straight back to malloc,
// whose quarantine makes any later read through a stale view (a layer's cached input, say) a
// reported heap-use-after-free. With the cache, the next tensor of that size would get the block
// and the stale read would silently see its values.
#if defined(__SANITIZE_ADDRESS__)
#define VEDIFF_BYPASS_BLOCK_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VEDIFF_BYPASS_BLOCK_CACHE 1
#endif
#endif

namespace vediff {

template <>
struct memory<cpu> {
    static constexpr std::size_t alignment = 64;
    static constexpr std::size_t huge_page = std::size_t{2} << 20;

    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        bytes = round_up(bytes);
        auto& c = cache();
        {
            std::lock_guard lock(c.mutex);
            auto it = c.free_blocks.find(bytes);
            if (it != c.free_blocks.end()) {
                void* p = it->second;
                c.free_blocks.erase(it);
                c.cached_bytes -= bytes;
                c.count_live(bytes);
                return p;
            }
            c.count_live(bytes);
            c.evict_beyond_limit();
        }
        void* p = nullptr;
        if (bytes >= huge_page) {
            // aligned_alloc needs a size that is a multiple of the alignment; the cache key stays
            // the requested size, and free() does not need the rounded one.
            p = std::aligned_alloc(huge_page, (bytes + huge_page - 1) / huge_page * huge_page);
            if (p) ::madvise(p, bytes, MADV_HUGEPAGE); // advisory: failure only costs speed
        } else {
            p = std::aligned_alloc(alignment, bytes);
        }
        if (!p) {
            std::lock_guard lock(c.mutex);
            c.live_bytes -= bytes;
            throw std::bad_alloc();
        }
        return p;
    }

    static void release(void* p, std::size_t bytes) noexcept {
        if (!p) return;
        bytes = round_up(bytes);
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        c.live_bytes -= bytes;
#ifdef VEDIFF_BYPASS_BLOCK_CACHE
        std::free(p);
#else
        // Blocks are kept for reuse up to the limit; beyond it they go back to the system.
        if (c.cached_bytes + bytes <= c.idle_limit()) {
            c.free_blocks.emplace(bytes, p);
            c.cached_bytes += bytes;
        } else {
            std::free(p);
        }
#endif
    }

    /// Returns every cached block to the system.
    static void trim() noexcept {
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        for (auto& [bytes, p] : c.free_blocks) std::free(p);
        c.free_blocks.clear();
        c.cached_bytes = 0;
    }

    /// What the allocator holds, in bytes: blocks handed out and not yet released (`live`), their
    /// high-water mark since the last reset_peak() (which the cache's limit does not use), and idle
    /// blocks kept for reuse (`cached`). A process's resident memory is about live + cached, plus
    /// what malloc itself keeps.
    struct statistics {
        std::size_t live = 0, peak_live = 0, cached = 0;
    };
    static statistics stats() {
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        return {c.live_bytes, c.peak_live_bytes, c.cached_bytes};
    }
    /// Starts a new high-water mark of the live bytes from their current value.
    static void reset_peak() {
        auto& c = cache();
        std::lock_guard lock(c.mutex);
        c.peak_live_bytes = c.live_bytes;
    }

    /// The bytes the cache may keep idle however many are live (default 2 GiB); more while fewer
    /// are live than at their high-water mark (see the top of this file).
    static void set_cache_budget(std::size_t bytes) {
        {
            auto& c = cache();
            std::lock_guard lock(c.mutex);
            c.budget_bytes = bytes;
        }
        trim();
    }

    template <class T>
    static void fill(T* dst, std::int64_t n, T value) {
#pragma omp parallel for schedule(static) if (n > 65536)
        for (std::int64_t i = 0; i < n; ++i) dst[i] = value;
    }

    static void copy(void* dst, const void* src, std::size_t bytes) { if (bytes) std::memcpy(dst, src, bytes); }
    static void copy_to_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }
    static void copy_from_host(void* dst, const void* src, std::size_t bytes) { copy(dst, src, bytes); }

private:
    struct block_cache {
        std::mutex mutex;
        std::multimap<std::size_t, void*> free_blocks;
        std::size_t cached_bytes = 0;
        std::size_t budget_bytes = std::size_t{2} << 30;
        std::size_t live_bytes = 0;        // handed out (rounded sizes)
        std::size_t peak_live_bytes = 0;   // their high-water mark since reset_peak(), for statistics
        std::size_t high_water_bytes = 0;  // their high-water mark, for the limit
        void count_live(std::size_t bytes) {
            live_bytes += bytes;
            peak_live_bytes = std::max(peak_live_bytes, live_bytes);
            high_water_bytes = std::max(high_water_bytes, live_bytes);
        }
        std::size_t idle_limit() const { return std::max(budget_bytes, high_water_bytes - live_bytes); }
        void evict_beyond_limit() {
            const std::size_t limit = idle_limit();
            while (cached_bytes > limit) {
                const auto largest = std::prev(free_blocks.end());
                cached_bytes -= largest->first;
                std::free(largest->second);
                free_blocks.erase(largest);
            }
        }
        ~block_cache() {
            for (auto& [bytes, p] : free_blocks) std::free(p);
        }
    };
    static block_cache& cache() {
        static block_cache c;
        return c;
    }
    static std::size_t round_up(std::size_t bytes) { return (bytes + alignment - 1) / alignment * alignment; }
};

} // namespace vediff
