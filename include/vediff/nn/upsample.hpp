#pragma once
// Nearest-neighbour ×2 upsampling layer, (N, C, H, W) → (N, C, 2H, 2W), as the LDM decoder's
// Upsample before its convolution.
#include "vediff/nn/layer.hpp"
#include "vediff/ops/upsample.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct upsample_nearest2x : parameterless {
    using value_type = T;
    using device_type = D;
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) { return ops::upsample_nearest2x(x); }
    tensor<T, D> backward(const tensor_view<T, D>& dy) { return ops::upsample_nearest2x_backward(dy); }
};

} // namespace vediff::nn
