#pragma once
// cuda kernels for the softmax over the last axis: one thread per row, with the cpu backend's
// arithmetic (subtract the row maximum, exponentiate, normalize). Rows of attention and of the
// classifier are short (tens to hundreds of values) and many, so a row per thread keeps the
// device busy; a warp-per-row kernel is the faster form for long rows, still to be written.
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

/// y = softmax(scale·x) over one row of n values; y may alias x.
template <class T>
__host__ __device__ inline void softmax_row(T* y, const T* x, std::int64_t n, T scale = T(1)) {
    T m = x[0];
    for (std::int64_t j = 1; j < n; ++j) m = x[j] > m ? x[j] : m;
    T sum = 0;
    for (std::int64_t j = 0; j < n; ++j) {
        const T e = exp(scale * (x[j] - m));
        y[j] = e;
        sum += e;
    }
    const T inv = T(1) / sum;
    for (std::int64_t j = 0; j < n; ++j) y[j] *= inv;
}

/// dx = scale·y·(dy − Σ dy·y) over one row; dx may alias dy.
template <class T>
__host__ __device__ inline void softmax_backward_row(T* dx, const T* dy, const T* y, std::int64_t n, T scale = T(1)) {
    T dot = 0;
    for (std::int64_t j = 0; j < n; ++j) dot += dy[j] * y[j];
    for (std::int64_t j = 0; j < n; ++j) dx[j] = scale * y[j] * (dy[j] - dot);
}

template <class T>
struct softmax_rows_op {
    T* y;
    const T* x;
    std::int64_t dim;
    __host__ __device__ void operator()(std::int64_t r) const { softmax_row(y + r * dim, x + r * dim, dim); }
};

template <class T>
struct softmax_backward_rows_op {
    T* dx;
    const T *dy, *y;
    std::int64_t dim;
    __host__ __device__ void operator()(std::int64_t r) const { softmax_backward_row(dx + r * dim, dy + r * dim, y + r * dim, dim); }
};

} // namespace cuda_detail

template <>
struct softmax_kernels<cuda> {
    /// y = softmax(x) over each row of (rows, dim).
    template <class T>
    static void forward(T* y, const T* x, std::int64_t rows, std::int64_t dim) {
        if (rows > 0 && dim > 0)
            thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                             thrust::counting_iterator<std::int64_t>(rows), cuda_detail::softmax_rows_op<T>{y, x, dim});
    }
    /// dx from dy and the forward's output y, row by row.
    template <class T>
    static void backward(T* dx, const T* dy, const T* y, std::int64_t rows, std::int64_t dim) {
        if (rows > 0 && dim > 0)
            thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                             thrust::counting_iterator<std::int64_t>(rows), cuda_detail::softmax_backward_rows_op<T>{dx, dy, y, dim});
    }
};

} // namespace vediff
