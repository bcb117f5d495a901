#pragma once
// Index checks that do not make the host wait. Every embedding lookup checks its indices (a label
// outside the table would read another tensor's memory); on the cpu that is a loop, but on the GPU
// a check that answers at once is a blocking reduction and a stream drain, three per DiT step. So
// the cuda backend launches the check as a kernel that records the first index outside [0, rows)
// in a slot of device memory, the lookup itself reads nothing out of range (those rows read as
// zero, their gradients are dropped), and the slots are read the next time the host reads from
// the device (a tensor copied to the host, cuda_synchronize()): that read throws the error, naming
// the op, the index and its position, as the cpu would have.
//
// deferred_index_checks is the host-side bookkeeping over any slot storage (the device's, or a
// plain array in the tests); index_check_op the check, __host__ __device__.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/error.hpp"

namespace vediff::cuda_detail {

/// A slot's value while its check has found nothing.
inline constexpr unsigned long long no_index_fault = ~0ull;

/// (position, index) in one word, position in the high 32 bits, so that the smallest word is the
/// first position: one atomicMin keeps the first bad index of a check with its value.
__host__ __device__ inline unsigned long long pack_index_fault(std::int64_t position, std::int32_t value) {
    return (static_cast<unsigned long long>(position) << 32) | static_cast<std::uint32_t>(value);
}
inline std::int64_t fault_position(unsigned long long fault) { return static_cast<std::int64_t>(fault >> 32); }
inline std::int32_t fault_value(unsigned long long fault) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(fault & 0xffffffffull)); }

/// The most indices one deferred check takes (positions must fit the fault's 32 bits).
inline constexpr std::int64_t max_deferred_check_length = std::int64_t{1} << 32;

/// Records in *slot the first position whose index lies outside [0, rows).
struct index_check_op {
    unsigned long long* slot;
    const std::int32_t* index;
    std::int64_t rows;
    __host__ __device__ void operator()(std::int64_t i) const {
        const std::int32_t v = index[i];
        if (v >= 0 && v < rows) return;
        const unsigned long long fault = pack_index_fault(i, v);
#if defined(__CUDA_ARCH__)
        atomicMin(slot, fault);
#else
        std::atomic_ref<unsigned long long> shared(*slot);
        unsigned long long seen = shared.load();
        while (fault < seen && !shared.compare_exchange_weak(seen, fault)) {
        }
#endif
    }
};

/// The checks launched since the host last read their slots. Slots: clear(i) queues slot i's
/// reset to no_index_fault (ordered before the check that follows), address(i) is where the check
/// writes, read(n, out) copies slots 0 … n−1 to the host once the device is done with them.
template <class Slots>
class deferred_index_checks {
public:
    explicit deferred_index_checks(Slots slots, std::size_t capacity) : slots_(std::move(slots)), capacity_(capacity) {}

    /// The slot for a new check of `count` indices against [0, rows), cleared; null when every slot
    /// is in use (the caller then waits for the device and calls raise_pending first). `op` and
    /// `what` must outlive the check (string literals).
    unsigned long long* claim(const char* op, const char* what, std::int64_t count, std::int64_t rows) {
        std::lock_guard lock(mutex_);
        if (checks_.size() == capacity_) return nullptr;
        const std::size_t i = checks_.size();
        checks_.push_back({op, what, count, rows});
        slots_.clear(i);
        return slots_.address(i);
    }

    /// Once the device has run every claimed check: frees all slots, then throws shape_error for
    /// the first check (in launch order) that found an index out of range.
    void raise_pending() {
        std::vector<check> checks;
        std::vector<unsigned long long> faults;
        {
            std::lock_guard lock(mutex_);
            if (checks_.empty()) return;
            faults.resize(checks_.size());
            slots_.read(checks_.size(), faults.data());
            checks.swap(checks_);
        }
        for (std::size_t i = 0; i < checks.size(); ++i) {
            if (faults[i] == no_index_fault) continue;
            const auto& c = checks[i];
            throw shape_error(fmt::format(fmt::runtime("{}: {} {} at position {} of {} is outside [0, {}) (checked on the device; "
                                                       "reported at the next read from it)"),
                                          c.op, c.what, fault_value(faults[i]), fault_position(faults[i]), c.count, c.rows));
        }
    }

    std::size_t pending() const {
        std::lock_guard lock(mutex_);
        return checks_.size();
    }

private:
    struct check {
        const char *op, *what;
        std::int64_t count, rows;
    };
    Slots slots_;
    std::size_t capacity_;
    std::vector<check> checks_;
    mutable std::mutex mutex_;
};

} // namespace vediff::cuda_detail
