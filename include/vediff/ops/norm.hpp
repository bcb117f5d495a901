#pragma once
// Normalizations: group norm over (N, C, ...) with C split into groups (LDM: 32 groups, eps 1e-6),
// layer norm over the last axis (DiT: no affine, eps 1e-6), RMS norm over the last axis
// (LightningDiT: x·rsqrt(mean(x²) + eps)·weight). Each forward returns the statistics its
// backward needs; each backward returns dx and accumulates (+=) the affine parameters' gradients.
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// A mean-and-variance normalization's output and the statistics its backward needs.
template <class T, device D>
struct normalized {
    tensor<T, D> y;     // shape of x
    tensor<T, D> mean;  // (N, G) for group norm, (rows) for layer norm
    tensor<T, D> rstd;  // 1/sqrt(var + eps), shape of mean
};

/// RMS norm's output and the per-row 1/sqrt(mean(x²) + eps).
template <class T, device D>
struct rms_normalized {
    tensor<T, D> y;     // shape of x
    tensor<T, D> rstd;  // (rows)
};

namespace detail {

template <class T, device D>
void check_group_norm(const char* op, const tensor_view<T, D>& x, std::int64_t groups) {
    if (x.rank() < 2)
        throw shape_error(fmt::format("{}: input must be (N, C, ...) of rank >= 2, got shape {}", op, x.shape()));
    if (groups <= 0 || x.dim(1) % groups != 0)
        throw shape_error(fmt::format("{}: {} channels of input {} are not divisible by {} groups", op, x.dim(1), x.shape(), groups));
}

template <class T, device D>
void check_stats(const char* op, const tensor_view<T, D>& mean, const tensor_view<T, D>& rstd, const tensor_shape& expected) {
    if (!(mean.shape() == expected) || !(rstd.shape() == expected))
        throw shape_error(fmt::format("{}: mean {} and rstd {} must have shape {}", op, mean.shape(), rstd.shape(), expected));
}

template <class T, device D>
void check_channel_vector(const char* op, const char* what, const tensor_view<T, D>& p, std::int64_t n, const tensor_shape& x) {
    if (p.rank() != 1 || p.dim(0) != n)
        throw shape_error(fmt::format("{}: {} must have shape ({}) for input {}, got {}", op, what, n, x, p.shape()));
}

template <class T, device D>
std::int64_t last_dim(const char* op, const tensor_view<T, D>& x) {
    if (x.rank() < 1 || x.dim(-1) == 0)
        throw shape_error(fmt::format("{}: input must have a non-empty last axis, got shape {}", op, x.shape()));
    return x.dim(-1);
}

template <class T, device D>
normalized<T, D> group_norm(const tensor_view<T, D>& x, std::int64_t groups, const T* weight, const T* bias, double eps) {
    const std::int64_t n = x.dim(0), c = x.dim(1), spatial = x.shape().prod(2, x.rank());
    normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>(tensor_shape{n, groups}), tensor<T, D>(tensor_shape{n, groups})};
    norm_kernels<D>::group_norm_forward(r.y.data(), r.mean.data(), r.rstd.data(), x.data(), weight, bias, n, c, spatial,
                                        groups, eps);
    return r;
}

template <class T, device D>
tensor<T, D> group_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, std::int64_t groups, const T* weight, T* dweight, T* dbias) {
    require_same_shape("group_norm_backward", dy, x);
    const std::int64_t n = x.dim(0), c = x.dim(1), spatial = x.shape().prod(2, x.rank());
    check_stats("group_norm_backward", mean, rstd, tensor_shape{n, groups});
    tensor<T, D> dx(x.shape());
    norm_kernels<D>::group_norm_backward(dx.data(), dweight, dbias, dy.data(), x.data(), mean.data(), rstd.data(), weight,
                                         n, c, spatial, groups);
    return dx;
}

template <class T, device D>
tensor<T, D> layer_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, const T* weight, T* dweight, T* dbias) {
    require_same_shape("layer_norm_backward", dy, x);
    const std::int64_t dim = last_dim("layer_norm_backward", x), rows = x.numel() / dim;
    check_stats("layer_norm_backward", mean, rstd, tensor_shape{rows});
    tensor<T, D> dx(x.shape());
    norm_kernels<D>::layer_norm_backward(dx.data(), dweight, dbias, dy.data(), x.data(), mean.data(), rstd.data(), weight,
                                         rows, dim);
    return dx;
}

} // namespace detail

/// Group norm without affine parameters: x (N, C, ...) normalized per (n, group of C/G channels).
template <class T, device D>
normalized<T, D> group_norm(const tensor_view<T, D>& x, std::int64_t groups, double eps = 1e-6) {
    detail::check_group_norm("group_norm", x, groups);
    return detail::group_norm<T, D>(x, groups, nullptr, nullptr, eps);
}

/// Group norm with per-channel weight and bias (C).
template <class T, device D>
normalized<T, D> group_norm(const tensor_view<T, D>& x, std::int64_t groups, const tensor_view<T, D>& weight,
                            const tensor_view<T, D>& bias, double eps = 1e-6) {
    detail::check_group_norm("group_norm", x, groups);
    detail::check_channel_vector("group_norm", "weight", weight, x.dim(1), x.shape());
    detail::check_channel_vector("group_norm", "bias", bias, x.dim(1), x.shape());
    return detail::group_norm<T, D>(x, groups, weight.data(), bias.data(), eps);
}

/// dx of group norm without affine parameters; mean, rstd (N, G) from the forward.
template <class T, device D>
tensor<T, D> group_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, std::int64_t groups) {
    detail::check_group_norm("group_norm_backward", x, groups);
    return detail::group_norm_backward<T, D>(dy, x, mean, rstd, groups, nullptr, nullptr, nullptr);
}

/// dx of group norm with affine parameters; dweight and dbias (C) are accumulated (+=).
template <class T, device D>
tensor<T, D> group_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, std::int64_t groups, const tensor_view<T, D>& weight,
                                 const tensor_view<T, D>& dweight, const tensor_view<T, D>& dbias) {
    detail::check_group_norm("group_norm_backward", x, groups);
    detail::check_channel_vector("group_norm_backward", "weight", weight, x.dim(1), x.shape());
    detail::check_channel_vector("group_norm_backward", "dweight", dweight, x.dim(1), x.shape());
    detail::check_channel_vector("group_norm_backward", "dbias", dbias, x.dim(1), x.shape());
    return detail::group_norm_backward<T, D>(dy, x, mean, rstd, groups, weight.data(), dweight.data(), dbias.data());
}

/// Layer norm over the last axis without affine parameters (DiT's norm1, norm2, norm_final).
template <class T, device D>
normalized<T, D> layer_norm(const tensor_view<T, D>& x, double eps = 1e-6) {
    const std::int64_t dim = detail::last_dim("layer_norm", x), rows = x.numel() / dim;
    normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>(tensor_shape{rows}), tensor<T, D>(tensor_shape{rows})};
    norm_kernels<D>::layer_norm_forward(r.y.data(), r.mean.data(), r.rstd.data(), x.data(), static_cast<const T*>(nullptr),
                                        static_cast<const T*>(nullptr), rows, dim, eps);
    return r;
}

/// Layer norm over the last axis with weight and bias (last dim).
template <class T, device D>
normalized<T, D> layer_norm(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias,
                            double eps = 1e-6) {
    const std::int64_t dim = detail::last_dim("layer_norm", x), rows = x.numel() / dim;
    detail::check_channel_vector("layer_norm", "weight", weight, dim, x.shape());
    detail::check_channel_vector("layer_norm", "bias", bias, dim, x.shape());
    normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>(tensor_shape{rows}), tensor<T, D>(tensor_shape{rows})};
    norm_kernels<D>::layer_norm_forward(r.y.data(), r.mean.data(), r.rstd.data(), x.data(), weight.data(), bias.data(), rows,
                                        dim, eps);
    return r;
}

/// dx of layer norm without affine parameters; mean, rstd (rows) from the forward.
template <class T, device D>
tensor<T, D> layer_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd) {
    return detail::layer_norm_backward<T, D>(dy, x, mean, rstd, nullptr, nullptr, nullptr);
}

/// dx of layer norm with affine parameters; dweight and dbias (last dim) are accumulated (+=).
template <class T, device D>
tensor<T, D> layer_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, const tensor_view<T, D>& weight,
                                 const tensor_view<T, D>& dweight, const tensor_view<T, D>& dbias) {
    const std::int64_t dim = detail::last_dim("layer_norm_backward", x);
    detail::check_channel_vector("layer_norm_backward", "weight", weight, dim, x.shape());
    detail::check_channel_vector("layer_norm_backward", "dweight", dweight, dim, x.shape());
    detail::check_channel_vector("layer_norm_backward", "dbias", dbias, dim, x.shape());
    return detail::layer_norm_backward<T, D>(dy, x, mean, rstd, weight.data(), dweight.data(), dbias.data());
}

/// RMS norm over the last axis: y = x·rsqrt(mean(x²) + eps)·weight.
template <class T, device D>
rms_normalized<T, D> rms_norm(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, double eps = 1e-6) {
    const std::int64_t dim = detail::last_dim("rms_norm", x), rows = x.numel() / dim;
    detail::check_channel_vector("rms_norm", "weight", weight, dim, x.shape());
    rms_normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>(tensor_shape{rows})};
    norm_kernels<D>::rms_norm_forward(r.y.data(), r.rstd.data(), x.data(), weight.data(), rows, dim, eps);
    return r;
}

/// dx of RMS norm; rstd (rows) from the forward; dweight (last dim) is accumulated (+=).
template <class T, device D>
tensor<T, D> rms_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& rstd,
                               const tensor_view<T, D>& weight, const tensor_view<T, D>& dweight) {
    require_same_shape("rms_norm_backward", dy, x);
    const std::int64_t dim = detail::last_dim("rms_norm_backward", x), rows = x.numel() / dim;
    detail::check_channel_vector("rms_norm_backward", "weight", weight, dim, x.shape());
    detail::check_channel_vector("rms_norm_backward", "dweight", dweight, dim, x.shape());
    if (!(rstd.shape() == tensor_shape{rows}))
        throw shape_error(fmt::format("rms_norm_backward: rstd must have shape ({}) for input {}, got {}", rows, x.shape(), rstd.shape()));
    tensor<T, D> dx(x.shape());
    norm_kernels<D>::rms_norm_backward(dx.data(), dweight.data(), dy.data(), x.data(), rstd.data(), weight.data(), rows, dim);
    return dx;
}

} // namespace vediff::ops
