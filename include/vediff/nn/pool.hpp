#pragma once
// Average pooling layers: global (N, C, H, W) → (N, C), the input of a classifier head, and
// 2×2 with stride 2, (N, C, H, W) → (N, C, H/2, W/2).
#include "vediff/nn/layer.hpp"
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

} // namespace vediff::nn
