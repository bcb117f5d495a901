#pragma once
// cpu kernels for 2-D convolution (NCHW, weight (out, in, kh, kw)), by one of two algorithms,
// both ending in Eigen GEMMs:
//  * im2col: the patches of a unit of work are unrolled into col (in·kh·kw, pixels) and
//    y = W·col; backward recomputes col (cheaper than keeping it) for dW += dy·colᵀ and
//    scatters dcol = Wᵀ·dy back into dx. A 1×1, stride-1, unpadded conv multiplies x directly.
//  * Winograd F(2×2, 3×3) for 3×3 stride-1 convs with enough channels: 16 products of
//    (out × in)·(in × tiles) replace 36 multiply-adds per 2×2 output tile by 16 (2.25× fewer
//    flops), and backward runs in the same transformed domain.
// A unit of work is one image, a band of rows of a large image (bounding the scratch), or
// several small images side by side (so that a 7×7 or 14×14 plane still makes a wide product).
// Threads take whole units when there are enough of them (no synchronization, private scratch);
// otherwise units run in turn and each product, or each transform, is split between threads.
#include "vediff/backend/cpu/im2col_conv.hpp"
#include "vediff/backend/cpu/winograd_conv.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct conv_kernels<cpu> {
    /// Winograd needs enough channels for its 16 products to be efficient (in = their depth).
    static constexpr std::int64_t winograd_min_channels = 16;

    static bool uses_winograd(const conv2d_geometry& g) {
        return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1 &&
               g.in_channels >= winograd_min_channels && g.out_channels >= winograd_min_channels;
    }

    /// y (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cin, kh, kw)) + bias (Cout); bias may be null.
    /// P: the precision policy of the products (core/precision.hpp).
    template <class P = fp32, class T>
    static void conv2d_forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        if (uses_winograd(g)) cpu_detail::winograd_conv::forward<P>(y, x, w, bias, g);
        else cpu_detail::im2col_conv::forward<P>(y, x, w, bias, g);
    }

    /// Given dy (N, Cout, Ho, Wo): writes dx (may be null: not needed) and accumulates
    /// dw += ∂/∂w and db += ∂/∂bias (db may be null: no bias).
    template <class P = fp32, class T>
    static void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        if (uses_winograd(g)) cpu_detail::winograd_conv::backward<P>(dx, dw, db, dy, x, w, g);
        else cpu_detail::im2col_conv::backward<P>(dx, dw, db, dy, x, w, g);
    }
};

} // namespace vediff
