#pragma once
// A number the device computes and the host reads only when it needs it. Reading a value from a
// GPU waits for everything queued before it; a training step that read its loss, its gradient norm
// and its label checks every step would keep the GPU idle while the host prepares the next step.
// So the trainers keep a step's values as deferred_value (e.g. the per-block partial sums of its
// loss, still on the device) and read them when they log, save or end (train/loop.hpp).
//
// A deferred_value is read once (the first get()); its copies share that reading. Values known
// at once (the cpu backend's) are deferred_value(double).
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "vediff/core/tensor.hpp"

namespace vediff {

class deferred_value {
public:
    /// A value already known.
    deferred_value(double known = 0.0) : state_(std::make_shared<state>(state{nullptr, known})) {}
    /// A value `read` computes when first asked (it may wait for a device).
    explicit deferred_value(std::function<double()> read) : state_(std::make_shared<state>(state{std::move(read), 0.0})) {}

    /// The value (the first call reads it).
    double get() const {
        if (state_->read) {
            state_->value = state_->read();
            state_->read = nullptr;
        }
        return state_->value;
    }
    /// Whether get() would still read.
    bool pending() const { return static_cast<bool>(state_->read); }

    /// a + b, read when first asked.
    friend deferred_value operator+(const deferred_value& a, const deferred_value& b) {
        if (!a.pending() && !b.pending()) return deferred_value(a.get() + b.get());
        return deferred_value(std::function<double()>([a, b] { return a.get() + b.get(); }));
    }
    /// f(this value), read when first asked.
    template <class F>
    deferred_value then(F f) const {
        if (!pending()) return deferred_value(f(get()));
        return deferred_value(std::function<double()>([a = *this, f] { return f(a.get()); }));
    }

private:
    struct state {
        std::function<double()> read;
        double value;
    };
    std::shared_ptr<state> state_;
};

/// Σ of the elements of `partials` (a tensor of any device, e.g. a reduction's block sums), added
/// on the host in order when first read: the same number as summing them now.
template <device D>
deferred_value deferred_sum(tensor<double, D> partials) {
    auto held = std::make_shared<tensor<double, D>>(std::move(partials));
    const auto read = [held] {
        double total = 0;
        for (double p : held->to_vector()) total += p;
        return total;
    };
    if constexpr (D::host_accessible) return deferred_value(read());
    else return deferred_value(std::function<double()>(read));
}

/// Element i of `values`, read when first asked.
template <device D>
deferred_value deferred_element(std::shared_ptr<const tensor<double, D>> values, std::int64_t i) {
    const auto read = [values, i] { return values->to_vector().at(static_cast<std::size_t>(i)); };
    if constexpr (D::host_accessible) return deferred_value(read());
    else return deferred_value(std::function<double()>(read));
}

} // namespace vediff
