#pragma once
// cpu kernels for the softmax over the last axis; the row routines are shared with attention.
#include <cstdint>

#include "vediff/backend/cpu/eigen.hpp"

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cpu_detail {

/// y = softmax(scale·x) over n values; subtracting the maximum first keeps exp() from
/// overflowing. y may alias x. Eigen's array exp is vectorized, where std::exp in a loop is not
/// (it is most of the cost of an attention forward).
template <class T>
inline void softmax_row(T* y, const T* x, std::int64_t n, T scale = T(1)) {
    using array = Eigen::Array<T, Eigen::Dynamic, 1>;
    const Eigen::Map<const array> xa(x, n);
    Eigen::Map<array> ya(y, n);
    const T m = xa.maxCoeff();
    ya = (scale * (xa - m)).exp();
    ya *= T(1) / ya.sum();
}

/// dx = scale·y·(dy − Σ dy·y) over n values, the backward of y = softmax(scale·x). dx may alias dy.
template <class T>
inline void softmax_backward_row(T* dx, const T* dy, const T* y, std::int64_t n, T scale = T(1)) {
    using array = Eigen::Array<T, Eigen::Dynamic, 1>;
    const Eigen::Map<const array> dya(dy, n), ya(y, n);
    const T dot = (dya * ya).sum();
    Eigen::Map<array>(dx, n) = scale * ya * (dya - dot);
}

} // namespace cpu_detail

template <>
struct softmax_kernels<cpu> {
    /// y = softmax(x) over each row of (rows, dim).
    template <class T>
    static void forward(T* y, const T* x, std::int64_t rows, std::int64_t dim) {
        cpu_detail::parallel_for(rows, [=](std::int64_t i) { cpu_detail::softmax_row(y + i * dim, x + i * dim, dim); }, dim);
    }
    /// dx from dy and the forward's output y, row by row.
    template <class T>
    static void backward(T* dx, const T* dy, const T* y, std::int64_t rows, std::int64_t dim) {
        cpu_detail::parallel_for(rows, [=](std::int64_t i) {
            cpu_detail::softmax_backward_row(dx + i * dim, dy + i * dim, y + i * dim, dim);
        }, dim);
    }
};

} // namespace vediff
