#pragma once
// The bookkeeping of the cuda caching allocator, apart from the CUDA calls it makes (a Driver), so
// that it is tested on machines without a GPU.
//
// Blocks are allocated and reused in the order of the backend's stream: a block released by one op
// and handed to the next is safe without any event, because both run on that stream. A block that
// was also used on another stream (NCCL's, a user's, a prefetching copy's), which its user declares
// with record_stream (PyTorch's idea of the same name), is not reusable when released: the cache
// records an event on each of those streams and keeps the block pending until every event has
// completed (polled at the next allocation, waited for when memory runs out).
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace vediff::cuda_detail {

/// What the cuda allocator holds, in bytes: blocks handed out and not yet released (`live`), their
/// high-water mark since reset_peak(), idle blocks kept for reuse (`cached`, those still waiting
/// for another stream included), and how many device allocations were made (cache misses).
struct allocator_statistics {
    std::size_t live = 0, peak_live = 0, cached = 0, pending = 0, allocations = 0;
};

/// Driver: the device calls, as static functions (the real one in memory.hpp, a fake in tests):
///   using stream_type, event_type;
///   void* allocate(std::size_t);                 nullptr when the device is out of memory
///   void free(void*);
///   stream_type backend_stream();
///   event_type record_event(stream_type);        an event marking the stream's work so far
///   bool event_done(event_type);                 whether it has completed (false: not yet)
///   void wait_event(event_type);                 blocks until it has completed
///   void destroy_event(event_type);
template <class Driver>
class block_cache {
public:
    using stream_type = typename Driver::stream_type;
    using event_type = typename Driver::event_type;

    /// A block of `bytes` (a multiple of the alignment, chosen by the caller): a cached one of that
    /// size if any is free, else a new one. nullptr when the device has no room even after the
    /// idle blocks were returned to it.
    void* allocate(std::size_t bytes) {
        std::lock_guard lock(mutex_);
        reclaim_completed();
        if (auto it = free_blocks_.find(bytes); it != free_blocks_.end()) {
            void* p = it->second;
            free_blocks_.erase(it);
            cached_bytes_ -= bytes;
            return hand_out(p, bytes);
        }
        void* p = Driver::allocate(bytes);
        if (!p) {
            release_idle(true);
            p = Driver::allocate(bytes);
            if (!p) return nullptr;
        }
        ++allocations_;
        return hand_out(p, bytes);
    }

    /// Takes back a block from allocate: reusable at once in the backend stream's order, or, if it
    /// was recorded on other streams, once their work queued so far has finished.
    void release(void* p) noexcept {
        if (!p) return;
        std::lock_guard lock(mutex_);
        const auto it = live_.find(p);
        if (it == live_.end()) return;  // not ours (cannot happen through tensor<T, cuda>)
        const std::size_t bytes = it->second.bytes;
        std::vector<stream_type> streams = std::move(it->second.other_streams);
        live_.erase(it);
        live_bytes_ -= bytes;
        cached_bytes_ += bytes;
        if (streams.empty()) {
            free_blocks_.emplace(bytes, p);
            return;
        }
        pending_block block{p, bytes, {}};
        for (const auto s : streams) block.events.push_back(Driver::record_event(s));
        pending_bytes_ += bytes;
        pending_.push_back(std::move(block));
    }

    /// Declares that the block containing `p` (any address inside a live block) is used on
    /// `stream` too, so that its release waits for that stream's work. The backend's own stream
    /// needs no declaring. Throws std::invalid_argument for an address in no live block.
    void record_stream(const void* p, stream_type stream) {
        std::lock_guard lock(mutex_);
        const auto address = reinterpret_cast<std::uintptr_t>(p);
        auto it = live_.upper_bound(const_cast<void*>(p));
        if (it == live_.begin())
            throw std::invalid_argument(fmt::format("record_stream: {} is not in a block of vediff's cuda allocator", p));
        --it;
        const auto base = reinterpret_cast<std::uintptr_t>(it->first);
        if (address >= base + it->second.bytes)
            throw std::invalid_argument(fmt::format("record_stream: {} is not in a block of vediff's cuda allocator", p));
        if (stream == Driver::backend_stream()) return;
        auto& streams = it->second.other_streams;
        for (const auto s : streams)
            if (s == stream) return;
        streams.push_back(stream);
    }

    /// Returns the idle blocks to the device (waiting for pending ones first when `wait_pending`);
    /// the bytes released.
    std::size_t trim(bool wait_pending) noexcept {
        std::lock_guard lock(mutex_);
        return release_idle(wait_pending);
    }

    allocator_statistics stats() const {
        std::lock_guard lock(mutex_);
        return {live_bytes_, peak_live_bytes_, cached_bytes_, pending_bytes_, allocations_};
    }
    void reset_peak() {
        std::lock_guard lock(mutex_);
        peak_live_bytes_ = live_bytes_;
    }

private:
    struct live_block {
        std::size_t bytes = 0;
        std::vector<stream_type> other_streams;
    };
    struct pending_block {
        void* p;
        std::size_t bytes;
        std::vector<event_type> events;
    };

    void* hand_out(void* p, std::size_t bytes) {
        live_[p] = live_block{bytes, {}};
        live_bytes_ += bytes;
        if (live_bytes_ > peak_live_bytes_) peak_live_bytes_ = live_bytes_;
        return p;
    }

    /// Pending blocks whose events have all completed become free blocks.
    void reclaim_completed() {
        for (std::size_t i = 0; i < pending_.size();) {
            auto& block = pending_[i];
            bool done = true;
            for (const auto e : block.events) done = done && Driver::event_done(e);
            if (!done) {
                ++i;
                continue;
            }
            make_free(block);
            pending_[i] = std::move(pending_.back());
            pending_.pop_back();
        }
    }

    void make_free(pending_block& block) {
        for (const auto e : block.events) Driver::destroy_event(e);
        pending_bytes_ -= block.bytes;
        free_blocks_.emplace(block.bytes, block.p);
    }

    std::size_t release_idle(bool wait_pending) {
        if (wait_pending) {
            for (auto& block : pending_) {
                for (const auto e : block.events) Driver::wait_event(e);
                make_free(block);
            }
            pending_.clear();
        } else {
            reclaim_completed();
        }
        std::size_t released = 0;
        for (auto& [bytes, p] : free_blocks_) {
            Driver::free(p);
            released += bytes;
        }
        free_blocks_.clear();
        cached_bytes_ -= released;
        return released;
    }

    mutable std::mutex mutex_;
    std::map<void*, live_block, std::less<>> live_;  // by address, for record_stream's lookup
    std::multimap<std::size_t, void*> free_blocks_;
    std::vector<pending_block> pending_;
    std::size_t live_bytes_ = 0, peak_live_bytes_ = 0, cached_bytes_ = 0, pending_bytes_ = 0, allocations_ = 0;
};

} // namespace vediff::cuda_detail
