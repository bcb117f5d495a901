#pragma once
// Elementwise arithmetic on tensors of the same shape (broadcasting ones: ops/broadcast.hpp).
#include <type_traits>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T, device D>
tensor<T, D> add(const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("add", a, b);
    tensor<T, D> out(a.shape());
    elementwise_kernels<D>::add(out.data(), a.data(), b.data(), a.numel());
    return out;
}

template <class T, device D>
tensor<T, D> sub(const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("sub", a, b);
    tensor<T, D> out(a.shape());
    elementwise_kernels<D>::sub(out.data(), a.data(), b.data(), a.numel());
    return out;
}

template <class T, device D>
tensor<T, D> mul(const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("mul", a, b);
    tensor<T, D> out(a.shape());
    elementwise_kernels<D>::mul(out.data(), a.data(), b.data(), a.numel());
    return out;
}

template <class T, device D>
tensor<T, D> scale(const tensor_view<T, D>& x, T alpha) {
    tensor<T, D> out(x.shape());
    elementwise_kernels<D>::scale(out.data(), x.data(), alpha, x.numel());
    return out;
}

/// y += alpha * x, in place (gradient accumulation).
template <class T, device D>
void axpy(const tensor_view<T, D>& y, const tensor_view<T, D>& x, T alpha = T(1)) {
    require_same_shape("axpy", y, x);
    elementwise_kernels<D>::axpy(y.data(), x.data(), alpha, x.numel());
}

/// a / b, elementwise.
template <class T, device D>
tensor<T, D> div(const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("div", a, b);
    tensor<T, D> out(a.shape());
    elementwise_kernels<D>::div(out.data(), a.data(), b.data(), a.numel());
    return out;
}

/// x + c for a scalar c.
template <class T, device D>
tensor<T, D> add_scalar(const tensor_view<T, D>& x, std::type_identity_t<T> c) {
    tensor<T, D> out(x.shape());
    elementwise_kernels<D>::add_scalar(out.data(), x.data(), c, x.numel());
    return out;
}

/// y = alpha * x + beta * y, in place (moving averages, momentum).
template <class T, device D>
void axpby(const tensor_view<T, D>& y, const tensor_view<T, D>& x, std::type_identity_t<T> alpha,
           std::type_identity_t<T> beta) {
    require_same_shape("axpby", y, x);
    elementwise_kernels<D>::axpby(y.data(), x.data(), alpha, beta, x.numel());
}

/// Sets every element of t to value.
template <class T, device D>
void fill(const tensor_view<T, D>& t, T value) {
    memory<D>::fill(t.data(), t.numel(), value);
}

/// Copies src into dst (same shape).
template <class T, device D>
void copy(const tensor_view<T, D>& dst, const tensor_view<T, D>& src) {
    require_same_shape("copy", dst, src);
    memory<D>::copy(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(T));
}

} // namespace vediff::ops
