#pragma once
// Pooling layers: global average (N, C, H, W) → (N, C), the input of a classifier head;
// 2×2 average with stride 2, (N, C, H, W) → (N, C, H/2, W/2); max pooling (VGG's 2×2, stride 2).
#include "vediff/nn/grad_mode.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/pool.hpp"
#include "vediff/ops/reduce.hpp"
#include "vediff/ops/upsample.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct global_avg_pool : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_shape_ = x.shape();
        return ops::global_avg_pool(x);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) { return ops::global_avg_pool_backward(dy, input_shape_); }

private:
    tensor_shape input_shape_;  // (N, C, H, W)
};

template <class T = float, device D = cpu>
struct avg_pool2x2 : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) { return ops::avg_pool2x2(x); }
    tensor<T, D> backward(const tensor_view<T, D>& dy) { return ops::avg_pool2x2_backward(dy); }
};

/// torch.nn.MaxPool2d(kernel, stride, padding) with ceil_mode false; default VGG's 2×2, stride 2.
template <class T = float, device D = cpu>
struct max_pool2d : parameterless {
    using value_type = T;
    using device_type = D;
    ops::pool2d_options options{.kernel = 2, .stride = 2, .padding = 0};

    max_pool2d() = default;
    explicit max_pool2d(ops::pool2d_options o) : options(o) {}
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::max_pool2d(x, options);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("max_pool2d");
        auto dx = ops::max_pool2d_backward(dy, input_, options);
        if (release) input_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (N, C, H, W), owned by the caller
};

} // namespace vediff::nn
