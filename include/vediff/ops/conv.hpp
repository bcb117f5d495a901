#pragma once
// 2-D convolution (cross-correlation, as PyTorch's F.conv2d) on NCHW tensors with weight
// (out, in, kh, kw), any kernel size, one stride for both axes, and zero padding given per side
// so that LDM's Downsample (F.pad(x, (0, 1, 0, 1)) then a stride-2 conv) is one call.
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/gemm.hpp"

namespace vediff::ops {

/// Zero padding per side, in the order (top, bottom, left, right). Note F.pad takes the last
/// axis first: F.pad(x, (left, right, top, bottom)); LDM's (0, 1, 0, 1) pads right and bottom,
/// which is {0, 1, 0, 1} here as well.
struct padding2d {
    std::int64_t top = 0, bottom = 0, left = 0, right = 0;
    static constexpr padding2d symmetric(std::int64_t p) { return {p, p, p, p}; }
    friend constexpr bool operator==(const padding2d&, const padding2d&) = default;
};

struct conv2d_options {
    std::int64_t stride = 1;  // both axes, as in every reference model
    padding2d padding{};
};

/// Validates x (N, C, H, W), weight (O, C, kh, kw) and bias (O) or empty, and returns the sizes;
/// errors name `op` and the shapes.
template <class T, device D>
conv2d_geometry conv2d_check(const char* op, const tensor_view<T, D>& x, const tensor_view<T, D>& weight,
                             const tensor_view<T, D>& bias, const conv2d_options& o) {
    if (x.rank() != 4)
        throw shape_error(fmt::format("{}: input must have rank 4 (N, C, H, W), got {} (weight {})", op, x.shape(), weight.shape()));
    if (weight.rank() != 4)
        throw shape_error(fmt::format("{}: weight must have rank 4 (out, in, kh, kw), got {} (input {})", op, weight.shape(), x.shape()));
    if (x.dim(1) != weight.dim(1))
        throw shape_error(fmt::format("{}: input {} has {} channels but weight {} expects {}", op, x.shape(), x.dim(1),
                                      weight.shape(), weight.dim(1)));
    if (detail::present(bias) && !(bias.shape() == tensor_shape{weight.dim(0)}))
        throw shape_error(fmt::format("{}: bias {} should be ({}) for weight {}", op, bias.shape(), weight.dim(0), weight.shape()));
    const auto& p = o.padding;
    if (o.stride < 1 || p.top < 0 || p.bottom < 0 || p.left < 0 || p.right < 0)
        throw shape_error(fmt::format("{}: stride {} must be ≥ 1 and padding ({}, {}, {}, {}) ≥ 0 (input {}, weight {})", op,
                                      o.stride, p.top, p.bottom, p.left, p.right, x.shape(), weight.shape()));
    const std::int64_t hp = x.dim(2) + p.top + p.bottom, wp = x.dim(3) + p.left + p.right;
    if (hp < weight.dim(2) || wp < weight.dim(3) || weight.dim(2) < 1 || weight.dim(3) < 1)
        throw shape_error(fmt::format("{}: kernel of weight {} does not fit input {} padded to {}×{}", op, weight.shape(),
                                      x.shape(), hp, wp));
    conv2d_geometry g;
    g.batch = x.dim(0);
    g.in_channels = x.dim(1);
    g.in_h = x.dim(2);
    g.in_w = x.dim(3);
    g.out_channels = weight.dim(0);
    g.kernel_h = weight.dim(2);
    g.kernel_w = weight.dim(3);
    g.stride_h = g.stride_w = o.stride;
    g.pad_top = p.top;
    g.pad_bottom = p.bottom;
    g.pad_left = p.left;
    g.pad_right = p.right;
    g.out_h = (hp - g.kernel_h) / o.stride + 1;
    g.out_w = (wp - g.kernel_w) / o.stride + 1;
    return g;
}

/// y (N, O, Ho, Wo) with Ho = (H + top + bottom − kh) / stride + 1 (floor), likewise Wo.
/// bias (O), or an empty view for none. P: the products' precision policy (core/precision.hpp):
/// under bf16_mixed x and weight (as im2col columns, or Winograd-transformed) are rounded to
/// bfloat16 and the sums are fp32; the bias is added in fp32.
template <precision_policy P = fp32, class T, device D>
tensor<T, D> conv2d(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias,
                    const conv2d_options& options = {}) {
    const auto g = conv2d_check("conv2d", x, weight, bias, options);
    tensor<T, D> y({g.batch, g.out_channels, g.out_h, g.out_w});
    conv_kernels<D>::template conv2d_forward<P>(y.data(), x.data(), weight.data(), detail::present(bias) ? bias.data() : nullptr, g);
    return y;
}

template <precision_policy P = fp32, class T, device D>
tensor<T, D> conv2d(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const conv2d_options& options) {
    return conv2d<P>(x, weight, tensor_view<T, D>{}, options);
}

/// Backward of conv2d: returns dx; accumulates dweight += ∂L/∂weight and, unless dbias is an
/// empty view, dbias += ∂L/∂bias. Under bf16_mixed the products round dy, x and weight (dbias
/// sums dy in fp32).
template <precision_policy P = fp32, class T, device D>
tensor<T, D> conv2d_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& weight,
                             const tensor_view<T, D>& dweight, const tensor_view<T, D>& dbias,
                             const conv2d_options& options = {}) {
    const auto g = conv2d_check("conv2d_backward", x, weight, dbias, options);
    const tensor_shape ys{g.batch, g.out_channels, g.out_h, g.out_w};
    if (!(dy.shape() == ys))
        throw shape_error(fmt::format("conv2d_backward: dy {} should be {} for input {} and weight {}", dy.shape(), ys,
                                      x.shape(), weight.shape()));
    require_same_shape("conv2d_backward (dweight vs weight)", dweight, weight);
    tensor<T, D> dx(x.shape());
    conv_kernels<D>::template conv2d_backward<P>(dx.data(), dweight.data(), detail::present(dbias) ? dbias.data() : nullptr,
                                     dy.data(), x.data(), weight.data(), g);
    return dx;
}

} // namespace vediff::ops
