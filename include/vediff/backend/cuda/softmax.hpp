#pragma once
// cuda kernels for the softmax over the last axis, a block of threads per row
// (cooperative_reduction.hpp): the forward finds the row's maximum and its sum of exponentials in
// one pass (partial sums rescaled to the larger maximum as they combine), then writes
// exp(v − max) / sum; the backward sums dy·y, then writes y·(dy − sum). Attention applies its
// scale inside, as the cpu backend does.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cuda/cooperative_reduction.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

/// y = softmax(scale·x) over rows of `dim` values; y may be x. With log_sum (non-null), also
/// log_sum[row] = log Σ exp(scale·x), from which the row can be recomputed (attention's backward).
template <class T>
struct softmax_job {
    T* y;
    const T* x;
    std::int64_t dim;
    T scale;
    T* log_sum = nullptr;

    struct accumulator {
        T max;  // the largest scale·x seen
        T sum;  // Σ exp(scale·x − max); 0 before the first value
    };
    struct row_result {
        T max, inverse_sum;
    };
    __host__ __device__ accumulator identity() const { return {T(0), T(0)}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) {
        if (a.sum == T(0)) return b;
        if (b.sum == T(0)) return a;
        return a.max >= b.max ? accumulator{a.max, a.sum + b.sum * exp(b.max - a.max)}
                              : accumulator{b.max, b.sum + a.sum * exp(a.max - b.max)};
    }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const { return {scale * x[row * dim + j], T(1)}; }
    __host__ __device__ row_result finish(std::int64_t, accumulator a) const { return {a.max, T(1) / a.sum}; }
    __host__ __device__ void save(std::int64_t row, const row_result& r) const {
        if (log_sum) log_sum[row] = r.max - log(r.inverse_sum);
    }
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& r) const {
        y[row * dim + j] = exp(scale * x[row * dim + j] - r.max) * r.inverse_sum;
    }
};

/// p = exp(scale·s − log_sum[row]) over rows of `dim` scores, in place: softmax_job's output
/// recomputed from the scores and the row statistics it saved.
template <class T>
struct softmax_from_log_sum_op {
    T* p;
    const T* log_sum;
    std::int64_t dim;
    T scale;
    __host__ __device__ void operator()(std::int64_t e) const { p[e] = exp(scale * p[e] - log_sum[index_div(e, dim)]); }
};

/// dx = scale·y·(dy − Σ dy·y) over rows of `dim` values, given the forward's y; dx may be dy.
template <class T>
struct softmax_backward_job {
    T* dx;
    const T *dy, *y;
    std::int64_t dim;
    T scale;

    using accumulator = T;
    using row_result = T;
    __host__ __device__ accumulator identity() const { return T(0); }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const { return dy[row * dim + j] * y[row * dim + j]; }
    __host__ __device__ row_result finish(std::int64_t, accumulator dot) const { return dot; }
    __host__ __device__ void save(std::int64_t, const row_result&) const {}
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& dot) const {
        const std::int64_t e = row * dim + j;
        dx[e] = scale * y[e] * (dy[e] - dot);
    }
};

} // namespace cuda_detail

template <>
struct softmax_kernels<cuda> {
    /// y = softmax(x) over each row of (rows, dim).
    template <class T>
    static void forward(T* y, const T* x, std::int64_t rows, std::int64_t dim) {
        if (dim > 0) cuda_detail::reduce_rows(cuda_detail::softmax_job<T>{y, x, dim, T(1)}, rows, dim);
    }
    /// dx from dy and the forward's output y, row by row.
    template <class T>
    static void backward(T* dx, const T* dy, const T* y, std::int64_t rows, std::int64_t dim) {
        if (dim > 0) cuda_detail::reduce_rows(cuda_detail::softmax_backward_job<T>{dx, dy, y, dim, T(1)}, rows, dim);
    }
};

} // namespace vediff
