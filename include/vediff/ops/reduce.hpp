#pragma once
// Sums and means over one axis or over all elements, and global average pooling, with backward
// (the gradient is dy broadcast back, divided by the count for means). A sum over all elements
// is a rank-0 tensor (one element, shape ()). Sums accumulate in double on the cpu.
#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/broadcast.hpp"

namespace vediff::ops {

namespace detail {
/// x's shape with extent 1 on `axis` (already normalized).
inline tensor_shape keepdim_shape(const tensor_shape& s, int axis) {
    tensor_shape k = s;
    k[axis] = 1;
    return k;
}
/// x's shape without `axis`.
inline tensor_shape dropped_shape(const tensor_shape& s, int axis) {
    tensor_shape d;
    for (int a = 0; a < s.rank(); ++a)
        if (a != axis) d.push_back(s[a]);
    return d;
}
/// The shape of x's rank with every extent 1.
inline tensor_shape ones_shape(int rank) {
    tensor_shape s;
    for (int a = 0; a < rank; ++a) s.push_back(1);
    return s;
}
inline int checked_axis(const char* op, const tensor_shape& s, int axis) {
    if (axis < -s.rank() || axis >= s.rank())
        throw shape_error(fmt::format("{}: axis {} is out of range for shape {}", op, axis, s));
    return s.normalize_axis(axis);
}

template <class T, device D>
tensor<T, D> reduce_axis(const char* op, const tensor_view<T, D>& x, int axis, bool keepdim, bool mean) {
    const int a = checked_axis(op, x.shape(), axis);
    const auto k = keepdim_shape(x.shape(), a);
    tensor<T, D> out(k);
    reduce_kernels<D>::sum_to(out.data(), x.data(), x.shape(), k, mean ? 1.0 / double(x.dim(a)) : 1.0);
    if (keepdim) return out;
    return std::move(out).reshape(dropped_shape(x.shape(), a));
}

template <class T, device D>
tensor<T, D> reduce_axis_backward(const char* op, const tensor_view<T, D>& dy, const tensor_shape& x_shape, int axis,
                                  bool keepdim, bool mean) {
    const int a = checked_axis(op, x_shape, axis);
    const auto k = keepdim_shape(x_shape, a);
    const auto expected = keepdim ? k : dropped_shape(x_shape, a);
    if (!(dy.shape() == expected))
        throw shape_error(fmt::format("{}: dy has shape {}, expected {} for x {} reduced on axis {}", op, dy.shape(),
                                      expected, x_shape, axis));
    tensor<T, D> dx(x_shape);
    broadcast_kernels<D>::expand(dx.data(), dy.data(), x_shape, k, mean ? T(1.0 / double(x_shape[a])) : T(1));
    return dx;
}

template <class T, device D>
tensor<T, D> reduce_all(const tensor_view<T, D>& x, bool mean) {
    tensor<T, D> out(tensor_shape{});
    reduce_kernels<D>::sum_to(out.data(), x.data(), x.shape(), ones_shape(x.rank()), mean ? 1.0 / double(x.numel()) : 1.0);
    return out;
}

template <class T, device D>
tensor<T, D> reduce_all_backward(const char* op, const tensor_view<T, D>& dy, const tensor_shape& x_shape, bool mean) {
    if (dy.numel() != 1)
        throw shape_error(fmt::format("{}: dy must hold one element, got shape {} (x {})", op, dy.shape(), x_shape));
    tensor<T, D> dx(x_shape);
    broadcast_kernels<D>::expand(dx.data(), dy.data(), x_shape, ones_shape(x_shape.rank()),
                                 mean ? T(1.0 / double(x_shape.numel())) : T(1));
    return dx;
}
} // namespace detail

/// Sum over `axis` (negative counts from the end); keepdim leaves the axis with extent 1.
template <class T, device D>
tensor<T, D> sum(const tensor_view<T, D>& x, int axis, bool keepdim = false) {
    return detail::reduce_axis("sum", x, axis, keepdim, false);
}
template <class T, device D>
tensor<T, D> sum_backward(const tensor_view<T, D>& dy, const tensor_shape& x_shape, int axis, bool keepdim = false) {
    return detail::reduce_axis_backward("sum_backward", dy, x_shape, axis, keepdim, false);
}

/// Mean over `axis`.
template <class T, device D>
tensor<T, D> mean(const tensor_view<T, D>& x, int axis, bool keepdim = false) {
    return detail::reduce_axis("mean", x, axis, keepdim, true);
}
template <class T, device D>
tensor<T, D> mean_backward(const tensor_view<T, D>& dy, const tensor_shape& x_shape, int axis, bool keepdim = false) {
    return detail::reduce_axis_backward("mean_backward", dy, x_shape, axis, keepdim, true);
}

/// Sum of all elements, as a rank-0 tensor.
template <class T, device D>
tensor<T, D> sum(const tensor_view<T, D>& x) {
    return detail::reduce_all(x, false);
}
/// dy holds one element (rank 0, or any shape of one element).
template <class T, device D>
tensor<T, D> sum_backward(const tensor_view<T, D>& dy, const tensor_shape& x_shape) {
    return detail::reduce_all_backward("sum_backward", dy, x_shape, false);
}

/// Mean of all elements, as a rank-0 tensor.
template <class T, device D>
tensor<T, D> mean(const tensor_view<T, D>& x) {
    return detail::reduce_all(x, true);
}
template <class T, device D>
tensor<T, D> mean_backward(const tensor_view<T, D>& dy, const tensor_shape& x_shape) {
    return detail::reduce_all_backward("mean_backward", dy, x_shape, true);
}

/// Global average pooling, (N, C, H, W) → (N, C): the mean over H and W (a classifier head's
/// input, as adaptive_avg_pool2d(x, 1).flatten(1)).
template <class T, device D>
tensor<T, D> global_avg_pool(const tensor_view<T, D>& x) {
    require_rank("global_avg_pool", x, 4);
    return mean(x.reshape({x.dim(0), x.dim(1), x.dim(2) * x.dim(3)}), 2);
}
template <class T, device D>
tensor<T, D> global_avg_pool_backward(const tensor_view<T, D>& dy, const tensor_shape& x_shape) {
    if (x_shape.rank() != 4 || !(dy.shape() == tensor_shape{x_shape[0], x_shape[1]}))
        throw shape_error(fmt::format("global_avg_pool_backward: dy {} does not fit x {} (expected (N, C) of (N, C, H, W))",
                                      dy.shape(), x_shape));
    const tensor_shape flat{x_shape[0], x_shape[1], x_shape[2] * x_shape[3]};
    return mean_backward(dy, flat, 2).reshape(x_shape);
}

} // namespace vediff::ops
