#pragma once
// Activation layers (no parameters): identity, SiLU, GELU (tanh approximation), ReLU, LeakyReLU.
#include "vediff/nn/layer.hpp"
#include "vediff/ops/activation.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct identity : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) { return tensor<T, D>::copy_of(x); }
    tensor<T, D> backward(const tensor_view<T, D>& dy) { return tensor<T, D>::copy_of(dy); }
};

template <class T = float, device D = cpu>
struct silu : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::silu(x);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("silu");
        auto dx = ops::silu_backward(dy, input_);
        if (release) input_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (any shape), owned by the caller
};

template <class T = float, device D = cpu>
struct gelu : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::gelu_tanh(x);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("gelu");
        auto dx = ops::gelu_tanh_backward(dy, input_);
        if (release) input_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (any shape), owned by the caller
};

/// torch.nn.ReLU: max(x, 0).
template <class T = float, device D = cpu>
struct relu : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::relu(x);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("relu");
        auto dx = ops::relu_backward(dy, input_);
        if (release) input_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (any shape), owned by the caller
};

/// torch.nn.LeakyReLU(negative_slope): x where x > 0, else slope·x.
template <class T = float, device D = cpu>
struct leaky_relu : parameterless {
    using value_type = T;
    using device_type = D;
    T slope = T(0.01);

    leaky_relu() = default;
    explicit leaky_relu(T negative_slope) : slope(negative_slope) {}
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::leaky_relu(x, slope);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("leaky_relu");
        auto dx = ops::leaky_relu_backward(dy, input_, slope);
        if (release) input_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (any shape), owned by the caller
};

} // namespace vediff::nn
