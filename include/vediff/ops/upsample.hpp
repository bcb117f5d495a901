#pragma once
// 2× resampling of (N, C, H, W) tensors: nearest-neighbour upsampling (F.interpolate(x,
// scale_factor=2, mode="nearest"), the LDM decoder's Upsample) and 2×2 average pooling
// (F.avg_pool2d(x, 2)). Each one's backward is the other up to a factor: upsampling's backward
// sums 2×2 blocks, pooling's backward spreads dy/4 over each block.
#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// (N, C, H, W) → (N, C, 2H, 2W).
template <class T, device D>
tensor<T, D> upsample_nearest2x(const tensor_view<T, D>& x) {
    require_rank("upsample_nearest2x", x, 4);
    tensor<T, D> out(tensor_shape{x.dim(0), x.dim(1), 2 * x.dim(2), 2 * x.dim(3)});
    upsample_kernels<D>::nearest2x(out.data(), x.data(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3));
    return out;
}

/// dy (N, C, 2H, 2W) → dx (N, C, H, W): the sum of each 2×2 block.
template <class T, device D>
tensor<T, D> upsample_nearest2x_backward(const tensor_view<T, D>& dy) {
    require_rank("upsample_nearest2x_backward", dy, 4);
    if (dy.dim(2) % 2 != 0 || dy.dim(3) % 2 != 0)
        throw shape_error(fmt::format("upsample_nearest2x_backward: dy of shape {} has an odd height or width", dy.shape()));
    tensor<T, D> dx(tensor_shape{dy.dim(0), dy.dim(1), dy.dim(2) / 2, dy.dim(3) / 2});
    upsample_kernels<D>::block_sum2x2(dx.data(), dy.data(), dy.dim(0) * dy.dim(1), dy.dim(2), dy.dim(3));
    return dx;
}

/// (N, C, H, W) → (N, C, H/2, W/2), the mean of each 2×2 block; H and W must be even.
template <class T, device D>
tensor<T, D> avg_pool2x2(const tensor_view<T, D>& x) {
    require_rank("avg_pool2x2", x, 4);
    if (x.dim(2) % 2 != 0 || x.dim(3) % 2 != 0)
        throw shape_error(fmt::format("avg_pool2x2: input of shape {} has an odd height or width", x.shape()));
    tensor<T, D> out(tensor_shape{x.dim(0), x.dim(1), x.dim(2) / 2, x.dim(3) / 2});
    upsample_kernels<D>::block_sum2x2(out.data(), x.data(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3), T(0.25));
    return out;
}

/// dy (N, C, H/2, W/2) → dx (N, C, H, W): dy/4 on every element of its block.
template <class T, device D>
tensor<T, D> avg_pool2x2_backward(const tensor_view<T, D>& dy) {
    require_rank("avg_pool2x2_backward", dy, 4);
    tensor<T, D> dx(tensor_shape{dy.dim(0), dy.dim(1), 2 * dy.dim(2), 2 * dy.dim(3)});
    upsample_kernels<D>::nearest2x(dx.data(), dy.data(), dy.dim(0) * dy.dim(1), dy.dim(2), dy.dim(3), T(0.25));
    return dx;
}

} // namespace vediff::ops
