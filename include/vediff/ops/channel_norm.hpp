#pragma once
// Unit normalization over channels, LPIPS's normalize_tensor: y = x / (‖x‖₂ + eps), the norm taken
// over C at each (n, spatial position) of x (N, C, ...); eps 1e-10 as LPIPS. cpu only so far.
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T, device D>
struct channel_normalized {
    tensor<T, D> y;     // shape of x
    tensor<T, D> norm;  // (N, positions): ‖x‖₂ over the channels
};

template <class T, device D>
channel_normalized<T, D> unit_normalize_channels(const tensor_view<T, D>& x, double eps = 1e-10) {
    if (x.rank() < 2 || x.numel() == 0)
        throw shape_error(fmt::format("unit_normalize_channels: input must be a non-empty (N, C, ...), got shape {}", x.shape()));
    const auto n = x.dim(0), c = x.dim(1), inner = x.numel() / (n * c);
    channel_normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>(tensor_shape{n, inner})};
    channel_norm_kernels<D>::forward(r.y.data(), r.norm.data(), x.data(), n, c, inner, eps);
    return r;
}

/// dx of unit_normalize_channels(x, eps), given its norm.
template <class T, device D>
tensor<T, D> unit_normalize_channels_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& norm,
                                              double eps = 1e-10) {
    require_same_shape("unit_normalize_channels_backward", dy, x);
    const auto n = x.dim(0), c = x.dim(1), inner = x.numel() / (n * c);
    if (!(norm.shape() == tensor_shape{n, inner}))
        throw shape_error(fmt::format("unit_normalize_channels_backward: norm {} must be ({}, {}) for input {}", norm.shape(), n, inner,
                                      x.shape()));
    tensor<T, D> dx(x.shape());
    channel_norm_kernels<D>::backward(dx.data(), dy.data(), x.data(), norm.data(), n, c, inner, eps);
    return dx;
}

} // namespace vediff::ops
