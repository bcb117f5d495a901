#pragma once
// cuda kernels for 2-D convolution: im2col + cuBLAS, one image at a time so that the column
// buffer (patch × output plane) stays one image's size. The backward's col2im is a gather (one
// thread per input element summing the column entries that read it), not a scatter with atomics,
// so it is deterministic. cuDNN would be faster; it is optional in the design and not used yet.
#include <cstdint>
#include <type_traits>

#include "vediff/backend/cuda/gemm.hpp"
#include "vediff/backend/cuda/layout.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/core/conv2d_geometry.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

/// The geometry as plain integers, copied into kernels by value.
struct conv_shape {
    std::int64_t cin, h, w, kh, kw, sh, sw, pt, pl, ho, wo;
    explicit conv_shape(const conv2d_geometry& g)
        : cin(g.in_channels), h(g.in_h), w(g.in_w), kh(g.kernel_h), kw(g.kernel_w), sh(g.stride_h), sw(g.stride_w),
          pt(g.pad_top), pl(g.pad_left), ho(g.out_h), wo(g.out_w) {}
};

/// col (cin·kh·kw, ho·wo)[(c·kh + i)·kw + j, oy·wo + ox] = x (cin, h, w)[c, oy·sh − pt + i, ox·sw − pl + j], 0 outside.
template <class T>
struct im2col_op {
    T* col;
    const T* x;
    conv_shape s;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t plane = s.ho * s.wo, row = e / plane, pos = e % plane;
        const std::int64_t j = row % s.kw, i = (row / s.kw) % s.kh, c = row / (s.kw * s.kh);
        const std::int64_t y = (pos / s.wo) * s.sh - s.pt + i, xx = (pos % s.wo) * s.sw - s.pl + j;
        col[e] = (y >= 0 && y < s.h && xx >= 0 && xx < s.w) ? x[(c * s.h + y) * s.w + xx] : T(0);
    }
};

/// The adjoint of im2col: dx (cin, h, w)[c, y, x] = Σ of the column entries that read it.
template <class T>
struct col2im_op {
    T* dx;
    const T* col;
    conv_shape s;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t xx = e % s.w, y = (e / s.w) % s.h, c = e / (s.w * s.h), plane = s.ho * s.wo;
        T sum = 0;
        for (std::int64_t i = 0; i < s.kh; ++i) {
            const std::int64_t ty = y + s.pt - i;
            if (ty < 0 || ty % s.sh != 0 || ty / s.sh >= s.ho) continue;
            for (std::int64_t j = 0; j < s.kw; ++j) {
                const std::int64_t tx = xx + s.pl - j;
                if (tx < 0 || tx % s.sw != 0 || tx / s.sw >= s.wo) continue;
                sum += col[((c * s.kh + i) * s.kw + j) * plane + (ty / s.sh) * s.wo + tx / s.sw];
            }
        }
        dx[e] = sum;
    }
};

/// y (cout, plane)[c, p] = bias[c]
template <class T>
struct channel_rows_op {
    T* y;
    const T* bias;
    std::int64_t plane;
    __host__ __device__ void operator()(std::int64_t e) const { y[e] = bias[e / plane]; }
};

} // namespace cuda_detail

template <>
struct conv_kernels<cuda> {
    /// y (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cin, kh, kw)) + bias (Cout); bias may be null.
    /// P: the precision policy of the products (core/precision.hpp); under bf16_mixed cuBLAS takes
    /// bf16 copies of the operands and sums in fp32 (gemm_kernels<cuda>::gemm_bf16).
    template <class P = fp32, class T>
    static void conv2d_forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const cuda_detail::conv_shape s(g);
        const std::int64_t patch = g.patch(), plane = g.out_plane();
        tensor<T, cuda> col(tensor_shape{patch * plane});
        for (std::int64_t n = 0; n < g.batch; ++n) {
            const T* xn = x + n * g.in_channels * g.in_plane();
            T* yn = y + n * g.out_channels * plane;
            cuda_detail::for_each_element(patch * plane, cuda_detail::im2col_op<T>{col.data(), xn, s});
            if (bias) cuda_detail::for_each_element(g.out_channels * plane, cuda_detail::channel_rows_op<T>{yn, bias, plane});
            product<P>(g.out_channels, plane, patch, T(1), w, patch, false, col.data(), plane, false, bias ? T(1) : T(0), yn,
                       plane);
        }
    }

    /// Given dy (N, Cout, Ho, Wo): writes dx (null: not needed) and accumulates dw += ∂/∂w and
    /// db += ∂/∂bias (null: no bias).
    template <class P = fp32, class T>
    static void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const cuda_detail::conv_shape s(g);
        const std::int64_t patch = g.patch(), plane = g.out_plane();
        tensor<T, cuda> col(tensor_shape{patch * plane});
        tensor<T, cuda> ones = db ? tensor<T, cuda>::full(tensor_shape{plane}, T(1)) : tensor<T, cuda>{};
        for (std::int64_t n = 0; n < g.batch; ++n) {
            const T* xn = x + n * g.in_channels * g.in_plane();
            const T* dyn = dy + n * g.out_channels * plane;
            cuda_detail::for_each_element(patch * plane, cuda_detail::im2col_op<T>{col.data(), xn, s});
            product<P>(g.out_channels, patch, plane, T(1), dyn, plane, false, col.data(), plane, true, T(1), dw, patch);
            // The bias gradient sums dy in fp32 under every policy, as on the cpu.
            if (db) gemm_kernels<cuda>::gemm(g.out_channels, 1, plane, T(1), dyn, plane, false, ones.data(), 1, false, T(1), db, 1);
            if (dx) {
                // dcol = wᵀ·dy (patch × plane) reuses the column buffer, then col2im gathers it.
                product<P>(patch, plane, g.out_channels, T(1), w, patch, true, dyn, plane, false, T(0), col.data(), plane);
                cuda_detail::for_each_element(g.in_channels * g.in_plane(),
                                              cuda_detail::col2im_op<T>{dx + n * g.in_channels * g.in_plane(), col.data(), s});
            }
        }
    }

private:
    template <class P, class T>
    static void product(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda, bool transpose_a,
                        const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
        if constexpr (P::rounds_operands) {
            static_assert(std::is_same_v<T, float>, "bf16_mixed convolutions take float tensors (fp32 master values)");
            gemm_kernels<cuda>::gemm_bf16(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        } else {
            gemm_kernels<cuda>::gemm_with_math(cuda_conv_tf32(), m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        }
    }
};

} // namespace vediff
