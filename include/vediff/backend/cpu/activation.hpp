#pragma once
// cpu kernels for pointwise activations and their derivatives.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

template <device D>
struct activation_kernels;

template <>
struct activation_kernels<cpu> {
    template <class T>
    static void silu_forward(T* y, const T* x, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { y[i] = x[i] / (T(1) + std::exp(-x[i])); });
    }
    /// d/dx x·s(x) = s(x)·(1 + x·(1 − s(x))), s the logistic sigmoid.
    template <class T>
    static void silu_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            const T s = T(1) / (T(1) + std::exp(-x[i]));
            dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
        });
    }
    // GELU, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as nn.GELU(approximate="tanh").
    static constexpr double gelu_k = 0.7978845608028654;  // sqrt(2/pi)
    static constexpr double gelu_c = 0.044715;
    template <class T>
    static void gelu_tanh_forward(T* y, const T* x, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            const T v = x[i];
            y[i] = T(0.5) * v * (T(1) + std::tanh(T(gelu_k) * (v + T(gelu_c) * v * v * v)));
        });
    }
    template <class T>
    static void gelu_tanh_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            const T v = x[i];
            const T th = std::tanh(T(gelu_k) * (v + T(gelu_c) * v * v * v));
            const T dinner = T(gelu_k) * (T(1) + T(3 * gelu_c) * v * v);
            dx[i] = dy[i] * (T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * dinner);
        });
    }
};

} // namespace vediff
