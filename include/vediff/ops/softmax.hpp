#pragma once
// Softmax over the last axis (numerically stable); its backward needs only the output.
#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T, device D>
tensor<T, D> softmax(const tensor_view<T, D>& x) {
    if (x.rank() < 1 || x.dim(-1) == 0)
        throw shape_error(fmt::format("softmax: input must have a non-empty last axis, got shape {}", x.shape()));
    tensor<T, D> y(x.shape());
    softmax_kernels<D>::forward(y.data(), x.data(), x.numel() / x.dim(-1), x.dim(-1));
    return y;
}

/// dx = y·(dy − Σ_last dy·y), y the output of softmax(x).
template <class T, device D>
tensor<T, D> softmax_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& y) {
    require_same_shape("softmax_backward", dy, y);
    if (y.rank() < 1 || y.dim(-1) == 0)
        throw shape_error(fmt::format("softmax_backward: output must have a non-empty last axis, got shape {}", y.shape()));
    tensor<T, D> dx(y.shape());
    softmax_kernels<D>::backward(dx.data(), dy.data(), y.data(), y.numel() / y.dim(-1), y.dim(-1));
    return dx;
}

} // namespace vediff::ops
