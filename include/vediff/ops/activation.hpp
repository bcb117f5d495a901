#pragma once
// Pointwise activations: SiLU (swish), GELU with the tanh approximation, and ReLU.
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

/// max(x, 0).
template <class T, device D>
tensor<T, D> relu(const tensor_view<T, D>& x) {
    tensor<T, D> y(x.shape());
    activation_kernels<D>::relu_forward(y.data(), x.data(), x.numel());
    return y;
}

/// x = max(x, 0) in place: inference paths rectify their own fresh output without a copy.
template <class T, device D>
void relu_inplace(const tensor_view<T, D>& x) {
    activation_kernels<D>::relu_forward(x.data(), x.data(), x.numel());
}

/// dy where x > 0, else 0 (PyTorch's subgradient 0 at x = 0).
template <class T, device D>
tensor<T, D> relu_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x) {
    require_same_shape("relu_backward", dy, x);
    tensor<T, D> dx(x.shape());
    activation_kernels<D>::relu_backward(dx.data(), dy.data(), x.data(), x.numel());
    return dx;
}

/// x where x > 0, else slope·x (torch.nn.LeakyReLU; the PatchGAN discriminator's slope is 0.2).
template <class T, device D>
tensor<T, D> leaky_relu(const tensor_view<T, D>& x, T slope) {
    tensor<T, D> y(x.shape());
    activation_kernels<D>::leaky_relu_forward(y.data(), x.data(), slope, x.numel());
    return y;
}

/// dy where x > 0, else slope·dy (PyTorch's choice at x = 0).
template <class T, device D>
tensor<T, D> leaky_relu_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, T slope) {
    require_same_shape("leaky_relu_backward", dy, x);
    tensor<T, D> dx(x.shape());
    activation_kernels<D>::leaky_relu_backward(dx.data(), dy.data(), x.data(), slope, x.numel());
    return dx;
}

} // namespace vediff::ops
