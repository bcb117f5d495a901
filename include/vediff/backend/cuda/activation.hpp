#pragma once
// cuda kernels for pointwise activations and their derivatives: Thrust transforms on the
// backend's stream with the cpu backend's formulas (backend/cpu/activation.hpp).
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/transform.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct silu_op {
    __host__ __device__ T operator()(T x) const { return x / (T(1) + exp(-x)); }
};
/// d/dx x·s(x) = s(x)·(1 + x·(1 − s(x))), s the logistic sigmoid.
template <class T>
struct silu_grad_op {
    __host__ __device__ T operator()(T dy, T x) const {
        const T s = T(1) / (T(1) + exp(-x));
        return dy * s * (T(1) + x * (T(1) - s));
    }
};
// GELU, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as nn.GELU(approximate="tanh").
template <class T>
struct gelu_tanh_op {
    __host__ __device__ T operator()(T x) const {
        return T(0.5) * x * (T(1) + tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x)));
    }
};
template <class T>
struct gelu_tanh_grad_op {
    __host__ __device__ T operator()(T dy, T x) const {
        const T th = tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x));
        const T dinner = T(0.7978845608028654) * (T(1) + T(3 * 0.044715) * x * x);
        return dy * (T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * dinner);
    }
};

template <class T>
struct relu_op {
    __host__ __device__ T operator()(T x) const { return x > T(0) ? x : T(0); }
};
template <class T>
struct relu_grad_op {
    __host__ __device__ T operator()(T dy, T x) const { return x > T(0) ? dy : T(0); }
};

template <class T>
struct leaky_relu_op {
    T slope;
    __host__ __device__ T operator()(T x) const { return x > T(0) ? x : slope * x; }
};
template <class T>
struct leaky_relu_grad_op {
    T slope;
    __host__ __device__ T operator()(T dy, T x) const { return x > T(0) ? dy : slope * dy; }
};

} // namespace cuda_detail

template <>
struct activation_kernels<cuda> {
    template <class T>
    static void silu_forward(T* y, const T* x, std::int64_t n) { unary(y, x, n, cuda_detail::silu_op<T>{}); }
    template <class T>
    static void silu_backward(T* dx, const T* dy, const T* x, std::int64_t n) { binary(dx, dy, x, n, cuda_detail::silu_grad_op<T>{}); }
    template <class T>
    static void gelu_tanh_forward(T* y, const T* x, std::int64_t n) { unary(y, x, n, cuda_detail::gelu_tanh_op<T>{}); }
    template <class T>
    static void gelu_tanh_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        binary(dx, dy, x, n, cuda_detail::gelu_tanh_grad_op<T>{});
    }
    /// y may be x (in place).
    template <class T>
    static void relu_forward(T* y, const T* x, std::int64_t n) { unary(y, x, n, cuda_detail::relu_op<T>{}); }
    template <class T>
    static void relu_backward(T* dx, const T* dy, const T* x, std::int64_t n) { binary(dx, dy, x, n, cuda_detail::relu_grad_op<T>{}); }
    template <class T>
    static void leaky_relu_forward(T* y, const T* x, T slope, std::int64_t n) { unary(y, x, n, cuda_detail::leaky_relu_op<T>{slope}); }
    template <class T>
    static void leaky_relu_backward(T* dx, const T* dy, const T* x, T slope, std::int64_t n) {
        binary(dx, dy, x, n, cuda_detail::leaky_relu_grad_op<T>{slope});
    }

private:
    template <class T, class F>
    static void unary(T* out, const T* x, std::int64_t n, F f) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::transform", [&] {
                return thrust::transform(thrust::cuda::par_nosync.on(cuda_detail::stream()), x, x + n, out, f);
            });
    }
    template <class T, class F>
    static void binary(T* out, const T* a, const T* b, std::int64_t n, F f) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::transform", [&] {
                return thrust::transform(thrust::cuda::par_nosync.on(cuda_detail::stream()), a, a + n, b, out, f);
            });
    }
};

} // namespace vediff
