#pragma once
// nn::optional_layer<L>: a layer that a model has or lacks depending on its runtime config, and
// the identity when absent (LDM's `nin_shortcut`, present only when a ResnetBlock changes the
// channel count). An absent layer has no parameters, so no names appear in the state_dict.
#include <optional>
#include <string>
#include <utility>

#include "vediff/nn/layer.hpp"

namespace vediff::nn {

template <class Layer>
struct optional_layer {
    using value_type = typename Layer::value_type;
    using device_type = typename Layer::device_type;
    using tensor_type = tensor<value_type, device_type>;
    using view_type = tensor_view<value_type, device_type>;

    std::optional<Layer> inner;

    optional_layer() = default;  // absent
    optional_layer(Layer layer) : inner(std::move(layer)) {}

    bool has_value() const { return inner.has_value(); }
    Layer& operator*() { return *inner; }
    const Layer& operator*() const { return *inner; }
    Layer* operator->() { return &*inner; }
    const Layer* operator->() const { return &*inner; }

    /// The inner layer's output, or a copy of x when absent (ops return owning tensors).
    tensor_type forward(tensor_type&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor_type forward(const view_type& x) { return inner ? inner->forward(x) : tensor_type::copy_of(x); }
    tensor_type backward(const view_type& dy) { return inner ? inner->backward(dy) : tensor_type::copy_of(dy); }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if (inner) inner->for_each_parameter(f, prefix);
    }

    void train(bool training) {
        if (inner) set_training(*inner, training);
    }
};

} // namespace vediff::nn
