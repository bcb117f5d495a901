#pragma once
// Flatten layer: (N, ...) → (N, -1), as nn.Flatten(); backward restores the input's shape.
#include "vediff/nn/layer.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct flatten : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        require_at_least_rank_one(x);
        input_shape_ = x.shape();
        return tensor<T, D>::copy_of(x).reshape({x.dim(0), -1});
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        if (dy.numel() != input_shape_.numel() || dy.rank() != 2)
            throw shape_error(fmt::format("flatten_backward: dy of shape {} does not fit the input {}", dy.shape(), input_shape_));
        return tensor<T, D>::copy_of(dy).reshape(input_shape_);
    }

private:
    static void require_at_least_rank_one(const tensor_view<T, D>& x) {
        if (x.rank() < 1) throw shape_error(fmt::format("flatten: input of shape {} has no batch axis", x.shape()));
    }
    tensor_shape input_shape_;  // (N, ...)
};

} // namespace vediff::nn
