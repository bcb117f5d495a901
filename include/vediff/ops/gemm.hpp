#pragma once
// Matrix products: gemm (accumulating, into an existing view), matmul (rank 2, or rank 3 with
// one product per batch entry), and linear (PyTorch's F.linear: y = x·Wᵀ + b, W (out, in)).
// Each takes a precision policy first (core/precision.hpp; fp32 when not named):
// ops::linear<bf16_mixed>(x, w, b) rounds x and w to bfloat16 and accumulates in fp32, and so do
// its backward's two products.
#include <cstdint>
#include <type_traits>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// Extents of op(A)·op(B): `batch` products of (m×k)·(k×n).
struct matmul_extents {
    std::int64_t batch, m, n, k;
};

/// Checks that a and b multiply (same rank 2 or 3, equal batch, matching inner extent) and
/// returns the extents; the shape_error names `op`, both shapes and the transposes.
template <class T, device D>
matmul_extents matmul_check(const char* op, const tensor_view<T, D>& a, const tensor_view<T, D>& b, bool transpose_a,
                            bool transpose_b) {
    const auto fail = [&](const char* why) {
        return shape_error(fmt::format("{}: a {} and b {} (transpose_a={}, transpose_b={}): {}", op, a.shape(), b.shape(),
                                       transpose_a, transpose_b, why));
    };
    if (a.rank() != b.rank() || a.rank() < 2 || a.rank() > 3) throw fail("need two rank-2 or two rank-3 tensors");
    const int r = a.rank();
    if (r == 3 && a.dim(0) != b.dim(0)) throw fail("batch extents differ");
    const std::int64_t m = transpose_a ? a.dim(r - 1) : a.dim(r - 2);
    const std::int64_t ka = transpose_a ? a.dim(r - 2) : a.dim(r - 1);
    const std::int64_t kb = transpose_b ? b.dim(r - 1) : b.dim(r - 2);
    const std::int64_t n = transpose_b ? b.dim(r - 2) : b.dim(r - 1);
    if (ka != kb) throw fail("inner extents differ");
    return {r == 3 ? a.dim(0) : 1, m, n, ka};
}

namespace detail {
/// The device's product under policy P (float only for the mixed policies).
template <class P, device D, class T>
void gemm_under(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda, bool transpose_a, const T* b,
                std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
    if constexpr (P::rounds_operands) {
        static_assert(std::is_same_v<T, float>, "bf16_mixed products take float tensors (fp32 master values)");
        gemm_kernels<D>::gemm_bf16(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
    } else {
        gemm_kernels<D>::gemm(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
    }
}
} // namespace detail

/// c = alpha·op(a)·op(b) + beta·c, writing into the existing view c (rank 2, or rank 3 batched).
/// With beta = 0, c's old contents are ignored; beta = 1 accumulates (gradient sums).
template <precision_policy P = fp32, class T, device D>
void gemm(const tensor_view<T, D>& c, const tensor_view<T, D>& a, const tensor_view<T, D>& b, bool transpose_a = false,
          bool transpose_b = false, std::type_identity_t<T> alpha = T(1), std::type_identity_t<T> beta = T(0)) {
    const auto e = matmul_check("gemm", a, b, transpose_a, transpose_b);
    const bool ok = c.rank() == a.rank() && c.dim(-2) == e.m && c.dim(-1) == e.n && (c.rank() == 2 || c.dim(0) == e.batch);
    if (!ok)
        throw shape_error(fmt::format("gemm: output c {} does not fit a {} times b {} (transpose_a={}, transpose_b={})",
                                      c.shape(), a.shape(), b.shape(), transpose_a, transpose_b));
    if constexpr (P::rounds_operands) {
        static_assert(std::is_same_v<T, float>, "bf16_mixed products take float tensors (fp32 master values)");
        gemm_kernels<D>::gemm_batched_bf16(e.batch, e.m, e.n, e.k, alpha, a.data(), a.dim(-1), a.dim(-2) * a.dim(-1), transpose_a,
                                           b.data(), b.dim(-1), b.dim(-2) * b.dim(-1), transpose_b, beta, c.data(), e.n, e.m * e.n);
    } else {
        gemm_kernels<D>::gemm_batched(e.batch, e.m, e.n, e.k, alpha, a.data(), a.dim(-1), a.dim(-2) * a.dim(-1), transpose_a,
                                      b.data(), b.dim(-1), b.dim(-2) * b.dim(-1), transpose_b, beta, c.data(), e.n, e.m * e.n);
    }
}

/// op(a)·op(b): (m, k)·(k, n) → (m, n), or (B, m, k)·(B, k, n) → (B, m, n). A transposed
/// operand is given in its stored layout, e.g. transpose_b with b (n, k) computes a·bᵀ.
template <precision_policy P = fp32, class T, device D>
tensor<T, D> matmul(const tensor_view<T, D>& a, const tensor_view<T, D>& b, bool transpose_a = false,
                    bool transpose_b = false) {
    const auto e = matmul_check("matmul", a, b, transpose_a, transpose_b);
    tensor<T, D> c(a.rank() == 3 ? tensor_shape{e.batch, e.m, e.n} : tensor_shape{e.m, e.n});
    gemm<P>(c.view(), a, b, transpose_a, transpose_b, T(1), T(0));
    return c;
}

template <class T, device D>
struct matmul_grads {
    tensor<T, D> da;  // shape of a
    tensor<T, D> db;  // shape of b
};

/// Gradients of c = op(a)·op(b) given dc: d op(a) = dc·op(b)ᵀ and d op(b) = op(a)ᵀ·dc, each
/// written back in its operand's stored layout.
template <precision_policy P = fp32, class T, device D>
matmul_grads<T, D> matmul_backward(const tensor_view<T, D>& dc, const tensor_view<T, D>& a, const tensor_view<T, D>& b,
                                   bool transpose_a = false, bool transpose_b = false) {
    const auto e = matmul_check("matmul_backward", a, b, transpose_a, transpose_b);
    const tensor_shape expected = a.rank() == 3 ? tensor_shape{e.batch, e.m, e.n} : tensor_shape{e.m, e.n};
    if (!(dc.shape() == expected))
        throw shape_error(fmt::format("matmul_backward: dc {} should be {} for a {} and b {}", dc.shape(), expected,
                                      a.shape(), b.shape()));
    matmul_grads<T, D> g{tensor<T, D>(a.shape()), tensor<T, D>(b.shape())};
    // da: stored (m, k) = dc·op(b)ᵀ, or stored (k, m) = op(b)·dcᵀ.
    if (transpose_a) gemm<P>(g.da.view(), b, dc, transpose_b, true);
    else gemm<P>(g.da.view(), dc, b, false, !transpose_b);
    // db: stored (k, n) = op(a)ᵀ·dc, or stored (n, k) = dcᵀ·op(a).
    if (transpose_b) gemm<P>(g.db.view(), dc, a, true, transpose_a);
    else gemm<P>(g.db.view(), a, dc, !transpose_a, false);
    return g;
}

namespace detail {
/// Optional tensor arguments (bias, its gradient) are absent when given an empty view: no
/// storage. (A default view has rank 0, which counts as one element, so numel() cannot tell.)
template <class T, device D>
bool present(const tensor_view<T, D>& t) {
    return t.data() != nullptr;
}

template <class T, device D>
void linear_check(const char* op, const tensor_view<T, D>& x, const tensor_view<T, D>& weight,
                  const tensor_view<T, D>& bias) {
    if (weight.rank() != 2)
        throw shape_error(fmt::format("{}: weight must have rank 2 (out, in), got {} (input {})", op, weight.shape(), x.shape()));
    if (x.rank() < 1 || x.dim(-1) != weight.dim(1))
        throw shape_error(fmt::format("{}: input {} does not end in in_features {} of weight {}", op, x.shape(),
                                      weight.dim(1), weight.shape()));
    if (present(bias) && !(bias.shape() == tensor_shape{weight.dim(0)}))
        throw shape_error(fmt::format("{}: bias {} should be ({}) for weight {}", op, bias.shape(), weight.dim(0), weight.shape()));
}
} // namespace detail

/// y = x·Wᵀ + b over the last axis: x (..., in), weight (out, in), bias (out) or an empty view
/// for none; y (..., out).
template <precision_policy P = fp32, class T, device D>
tensor<T, D> linear(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias) {
    detail::linear_check("linear", x, weight, bias);
    const std::int64_t in = weight.dim(1), out = weight.dim(0), rows = x.numel() / in;
    tensor_shape ys = x.shape();
    ys[-1] = out;
    tensor<T, D> y(ys);
    const T* b = detail::present(bias) ? bias.data() : nullptr;
    if constexpr (P::rounds_operands) {
        static_assert(std::is_same_v<T, float>, "bf16_mixed products take float tensors (fp32 master values)");
        gemm_kernels<D>::linear_bf16(rows, out, in, x.data(), weight.data(), b, y.data());
    } else {
        gemm_kernels<D>::linear(rows, out, in, x.data(), weight.data(), b, y.data());
    }
    return y;
}

template <precision_policy P = fp32, class T, device D>
tensor<T, D> linear(const tensor_view<T, D>& x, const tensor_view<T, D>& weight) {
    return linear<P>(x, weight, tensor_view<T, D>{});
}

/// Backward of linear: returns dx = dy·W; accumulates dweight += dyᵀ·x (rows of every leading
/// axis summed) and dbias += Σ dy unless dbias is an empty view.
template <precision_policy P = fp32, class T, device D>
tensor<T, D> linear_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& weight,
                             const tensor_view<T, D>& dweight, const tensor_view<T, D>& dbias) {
    detail::linear_check("linear_backward", x, weight, dbias);
    const std::int64_t in = weight.dim(1), out = weight.dim(0), rows = x.numel() / in;
    tensor_shape ys = x.shape();
    ys[-1] = out;
    if (!(dy.shape() == ys))
        throw shape_error(fmt::format("linear_backward: dy {} should be {} for input {} and weight {}", dy.shape(), ys,
                                      x.shape(), weight.shape()));
    require_same_shape("linear_backward (dweight vs weight)", dweight, weight);
    tensor<T, D> dx(x.shape());
    // dx = dy·W and dweight += dyᵀ·x: under bf16_mixed both round their operands (dy too, as
    // autocast's backward does) and accumulate in fp32; dweight itself stays fp32.
    detail::gemm_under<P, D>(rows, in, out, T(1), dy.data(), out, false, weight.data(), in, false, T(0), dx.data(), in);
    detail::gemm_under<P, D>(out, in, rows, T(1), dy.data(), out, true, x.data(), in, false, T(1), dweight.data(), in);
    if (detail::present(dbias)) gemm_kernels<D>::accumulate_column_sums(dbias.data(), dy.data(), rows, out);
    return dx;
}

template <precision_policy P = fp32, class T, device D>
tensor<T, D> linear_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& weight,
                             const tensor_view<T, D>& dweight) {
    return linear_backward<P>(dy, x, weight, dweight, tensor_view<T, D>{});
}

} // namespace vediff::ops
