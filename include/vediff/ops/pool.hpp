#pragma once
// 2-D max and average pooling of (N, C, H, W) tensors with a square window, one stride and the
// same zero padding on every side, output size floor((H + 2·padding − kernel) / stride) + 1 as
// PyTorch's F.max_pool2d / F.avg_pool2d with ceil_mode=False. Padding never wins a maximum (it
// counts as −∞); the average divides by the window's elements inside the input when
// count_include_pad is false (TensorFlow's rule, which the FID Inception needs) and by kernel²
// when it is true (PyTorch's default).
// Forward only: the pools serve the frozen feature network (models/inception.hpp), which is never
// differentiated; and cpu only, like that network (core/kernels.hpp).
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

struct pool2d_options {
    std::int64_t kernel = 3;
    std::int64_t stride = 1;
    std::int64_t padding = 0;  // on every side
};

/// Validates x (N, C, H, W) and the options; errors name `op`, the shape and the options.
template <class T, device D>
pool2d_geometry pool2d_check(const char* op, const tensor_view<T, D>& x, const pool2d_options& o) {
    if (x.rank() != 4) throw shape_error(fmt::format("{}: input must have rank 4 (N, C, H, W), got {}", op, x.shape()));
    if (o.kernel < 1 || o.stride < 1 || o.padding < 0 || 2 * o.padding > o.kernel)
        throw shape_error(fmt::format("{}: kernel {} and stride {} must be ≥ 1, padding {} in [0, kernel/2] (input {})", op,
                                      o.kernel, o.stride, o.padding, x.shape()));
    const std::int64_t hp = x.dim(2) + 2 * o.padding, wp = x.dim(3) + 2 * o.padding;
    if (hp < o.kernel || wp < o.kernel)
        throw shape_error(fmt::format("{}: a {}×{} window does not fit input {} padded to {}×{}", op, o.kernel, o.kernel,
                                      x.shape(), hp, wp));
    pool2d_geometry g;
    g.planes = x.dim(0) * x.dim(1);
    g.in_h = x.dim(2);
    g.in_w = x.dim(3);
    g.kernel = o.kernel;
    g.stride = o.stride;
    g.padding = o.padding;
    g.out_h = (hp - o.kernel) / o.stride + 1;
    g.out_w = (wp - o.kernel) / o.stride + 1;
    return g;
}

/// (N, C, H, W) → (N, C, Ho, Wo): the largest element of each window.
template <class T, device D>
tensor<T, D> max_pool2d(const tensor_view<T, D>& x, const pool2d_options& options) {
    const auto g = pool2d_check("max_pool2d", x, options);
    tensor<T, D> y(tensor_shape{x.dim(0), x.dim(1), g.out_h, g.out_w});
    pool_kernels<D>::max_pool2d(y.data(), x.data(), g);
    return y;
}

/// dx of max_pool2d(x, options): each window's dy goes to its largest element (the first in
/// row-major order among equals, as PyTorch's cpu kernel).
template <class T, device D>
tensor<T, D> max_pool2d_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const pool2d_options& options) {
    const auto g = pool2d_check("max_pool2d_backward", x, options);
    if (!(dy.shape() == tensor_shape{x.dim(0), x.dim(1), g.out_h, g.out_w}))
        throw shape_error(fmt::format("max_pool2d_backward: dy {} does not match the pooled shape of input {}", dy.shape(), x.shape()));
    tensor<T, D> dx(x.shape());
    pool_kernels<D>::max_pool2d_backward(dx.data(), dy.data(), x.data(), g);
    return dx;
}

/// (N, C, H, W) → (N, C, Ho, Wo): the mean of each window, over its elements inside the input
/// unless count_include_pad.
template <class T, device D>
tensor<T, D> avg_pool2d(const tensor_view<T, D>& x, const pool2d_options& options, bool count_include_pad) {
    const auto g = pool2d_check("avg_pool2d", x, options);
    tensor<T, D> y(tensor_shape{x.dim(0), x.dim(1), g.out_h, g.out_w});
    pool_kernels<D>::avg_pool2d(y.data(), x.data(), g, count_include_pad);
    return y;
}

} // namespace vediff::ops
