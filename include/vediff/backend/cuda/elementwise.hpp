#pragma once
// cuda kernels for elementwise arithmetic on contiguous arrays of equal length: Thrust transforms
// on the backend's stream, without synchronizing (par_nosync). The functors are
// __host__ __device__, so the same code runs on Thrust's host systems too.
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/transform.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

inline auto on_stream() { return thrust::cuda::par_nosync.on(stream()); }

template <class T>
struct plus_op {
    __host__ __device__ T operator()(T a, T b) const { return a + b; }
};
template <class T>
struct minus_op {
    __host__ __device__ T operator()(T a, T b) const { return a - b; }
};
template <class T>
struct times_op {
    __host__ __device__ T operator()(T a, T b) const { return a * b; }
};
template <class T>
struct divide_op {
    __host__ __device__ T operator()(T a, T b) const { return a / b; }
};
template <class T>
struct scale_op {
    T alpha;
    __host__ __device__ T operator()(T x) const { return alpha * x; }
};
template <class T>
struct shift_op {
    T c;
    __host__ __device__ T operator()(T x) const { return x + c; }
};
/// alpha·x + beta·y (axpy: beta = 1).
template <class T>
struct axpby_op {
    T alpha, beta;
    __host__ __device__ T operator()(T x, T y) const { return alpha * x + beta * y; }
};

} // namespace cuda_detail

template <>
struct elementwise_kernels<cuda> {
    template <class T>
    static void add(T* out, const T* a, const T* b, std::int64_t n) { binary(out, a, b, n, cuda_detail::plus_op<T>{}); }
    template <class T>
    static void sub(T* out, const T* a, const T* b, std::int64_t n) { binary(out, a, b, n, cuda_detail::minus_op<T>{}); }
    template <class T>
    static void mul(T* out, const T* a, const T* b, std::int64_t n) { binary(out, a, b, n, cuda_detail::times_op<T>{}); }
    template <class T>
    static void div(T* out, const T* a, const T* b, std::int64_t n) { binary(out, a, b, n, cuda_detail::divide_op<T>{}); }
    /// out = alpha * x
    template <class T>
    static void scale(T* out, const T* x, T alpha, std::int64_t n) { unary(out, x, n, cuda_detail::scale_op<T>{alpha}); }
    /// y += alpha * x
    template <class T>
    static void axpy(T* y, const T* x, T alpha, std::int64_t n) { binary(y, x, y, n, cuda_detail::axpby_op<T>{alpha, T(1)}); }
    /// out = x + c
    template <class T>
    static void add_scalar(T* out, const T* x, T c, std::int64_t n) { unary(out, x, n, cuda_detail::shift_op<T>{c}); }
    /// y = alpha * x + beta * y
    template <class T>
    static void axpby(T* y, const T* x, T alpha, T beta, std::int64_t n) { binary(y, x, y, n, cuda_detail::axpby_op<T>{alpha, beta}); }

private:
    template <class T, class F>
    static void binary(T* out, const T* a, const T* b, std::int64_t n, F f) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::transform",
                                     [&] { return thrust::transform(cuda_detail::on_stream(), a, a + n, b, out, f); });
    }
    template <class T, class F>
    static void unary(T* out, const T* x, std::int64_t n, F f) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::transform",
                                     [&] { return thrust::transform(cuda_detail::on_stream(), x, x + n, out, f); });
    }
};

} // namespace vediff
