#pragma once
// nn::swiglu: LightningDiT's feed-forward, w3(silu(a) · b) with [a | b] = w12(x) split in halves
// over the last axis (parameters `w12` (2·hidden, dim) and `w3` (dim, hidden)).
#include <cstdint>
#include <string>
#include <utility>

#include "vediff/nn/layer.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu, precision_policy P = fp32>
struct swiglu {
    using value_type = T;
    using device_type = D;

    linear<T, D, P> w12;  // dim → 2·hidden
    linear<T, D, P> w3;   // hidden → dim

    swiglu() = default;
    swiglu(std::int64_t dim, std::int64_t hidden, std::uint64_t seed = 0) : w12(dim, 2 * hidden), w3(hidden, dim) {
        initialize(*this, seed);
    }

    /// x (..., dim) → (..., dim).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (!record_.keep()) {  // inference: nothing outlives the call
            for (auto* t : {&projected_, &gate_input_, &value_, &gate_, &product_}) *t = {};
            auto halves = ops::chunk(w12.forward(x).view(), 2, -1);
            const auto product = ops::mul(ops::silu(halves[0].view()).view(), halves[1].view());
            return w3.forward(product);
        }
        projected_ = w12.forward(x);
        auto halves = ops::chunk(projected_.view(), 2, -1);
        gate_input_ = std::move(halves[0]);
        value_ = std::move(halves[1]);
        gate_ = ops::silu(gate_input_.view());
        product_ = ops::mul(gate_.view(), value_.view());
        return w3.forward(product_);
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("swiglu");
        auto dproduct = w3.backward(dy);
        auto dgate = ops::mul(dproduct.view(), value_.view());
        auto dvalue = ops::mul(dproduct.view(), gate_.view());
        auto dgate_input = ops::silu_backward(dgate.view(), gate_input_.view());
        auto dprojected = ops::concat<T, D>({dgate_input.view(), dvalue.view()}, -1);
        if (release)
            for (auto* t : {&projected_, &gate_input_, &value_, &gate_, &product_}) *t = {};
        return w12.backward(dprojected);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        w12.for_each_parameter(f, join_name(prefix, "w12"));
        w3.for_each_parameter(f, join_name(prefix, "w3"));
    }

private:
    backward_record record_;
    tensor<T, D> projected_;   // (..., 2·hidden)
    tensor<T, D> gate_input_;  // (..., hidden): a
    tensor<T, D> value_;       // (..., hidden): b
    tensor<T, D> gate_;        // (..., hidden): silu(a)
    tensor<T, D> product_;     // (..., hidden): silu(a)·b, w3's cached input
};

} // namespace vediff::nn
