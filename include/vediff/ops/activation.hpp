#pragma once
// Pointwise activations: SiLU (swish) and GELU with the tanh approximation.
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T, device D>
tensor<T, D> silu(const tensor_view<T, D>& x) {
    tensor<T, D> y(x.shape());
    activation_kernels<D>::silu_forward(y.data(), x.data(), x.numel());
    return y;
}

template <class T, device D>
tensor<T, D> silu_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x) {
    require_same_shape("silu_backward", dy, x);
    tensor<T, D> dx(x.shape());
    activation_kernels<D>::silu_backward(dx.data(), dy.data(), x.data(), x.numel());
    return dx;
}

template <class T, device D>
tensor<T, D> gelu_tanh(const tensor_view<T, D>& x) {
    tensor<T, D> y(x.shape());
    activation_kernels<D>::gelu_tanh_forward(y.data(), x.data(), x.numel());
    return y;
}

template <class T, device D>
tensor<T, D> gelu_tanh_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x) {
    require_same_shape("gelu_tanh_backward", dy, x);
    tensor<T, D> dx(x.shape());
    activation_kernels<D>::gelu_tanh_backward(dx.data(), dy.data(), x.data(), x.numel());
    return dx;
}

} // namespace vediff::ops
