#pragma once
// Small tables kept by their content: a multi-tensor launch (AdamW, the EMA, the gradient norm)
// needs its list of tensors and chunks on the device, and a training step passes the same list
// every step. Uploading it each time costs a copy and, worse, a wait for the pinned buffer the
// last upload used; kept by content, the tables go up once and every later step finds them.
// Least recently used tables make room for new ones. Host-only logic, over any stored value
// (the device copy), so that it is tested without a device.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace vediff::cuda_detail {

template <class Stored>
class content_cache {
public:
    explicit content_cache(std::size_t capacity = 16) : capacity_(capacity) {}

    /// The value stored for exactly these bytes, or null.
    Stored* find(std::span<const std::byte> bytes) {
        for (auto& e : entries_) {
            if (e.key.size() == bytes.size() && std::memcmp(e.key.data(), bytes.data(), bytes.size()) == 0) {
                e.last_use = ++clock_;
                return &e.value;
            }
        }
        return nullptr;
    }

    /// Stores `value` for these bytes, in place of the least recently used entry when full.
    Stored& insert(std::span<const std::byte> bytes, Stored value) {
        entry fresh{std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), std::move(value), ++clock_};
        if (entries_.size() < capacity_) return entries_.emplace_back(std::move(fresh)).value;
        std::size_t oldest = 0;
        for (std::size_t i = 1; i < entries_.size(); ++i)
            if (entries_[i].last_use < entries_[oldest].last_use) oldest = i;
        entries_[oldest] = std::move(fresh);
        return entries_[oldest].value;
    }

    std::size_t size() const { return entries_.size(); }

private:
    struct entry {
        std::string key;
        Stored value;
        std::uint64_t last_use = 0;
    };
    std::size_t capacity_;
    std::vector<entry> entries_;
    std::uint64_t clock_ = 0;
};

} // namespace vediff::cuda_detail
