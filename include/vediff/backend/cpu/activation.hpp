#pragma once
// cpu kernels for pointwise activations and their derivatives.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/eigen.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct activation_kernels<cpu> {
    // Written as Eigen array expressions over chunks, so that exp and tanh are vectorized.
    template <class T>
    static void silu_forward(T* y, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m);
            cpu_detail::unaligned_array_map<T>(y + b, m) = xv / (T(1) + (-xv).exp());
        });
    }
    /// d/dx x·s(x) = s(x)·(1 + x·(1 − s(x))), s the logistic sigmoid.
    template <class T>
    static void silu_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m), dyv(dy + b, m);
            const auto s = (T(1) / (T(1) + (-xv).exp())).eval();
            cpu_detail::unaligned_array_map<T>(dx + b, m) = dyv * s * (T(1) + xv * (T(1) - s));
        });
    }
    // GELU, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))), as nn.GELU(approximate="tanh").
    static constexpr double gelu_k = 0.7978845608028654;  // sqrt(2/pi)
    static constexpr double gelu_c = 0.044715;
    template <class T>
    static void gelu_tanh_forward(T* y, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m);
            cpu_detail::unaligned_array_map<T>(y + b, m) = T(0.5) * xv * (T(1) + (T(gelu_k) * (xv + T(gelu_c) * xv.cube())).tanh());
        });
    }
    template <class T>
    static void gelu_tanh_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m), dyv(dy + b, m);
            const auto th = (T(gelu_k) * (xv + T(gelu_c) * xv.cube())).tanh().eval();
            const auto dinner = T(gelu_k) * (T(1) + T(3 * gelu_c) * xv.square());
            cpu_detail::unaligned_array_map<T>(dx + b, m) =
                dyv * (T(0.5) * (T(1) + th) + T(0.5) * xv * (T(1) - th.square()) * dinner);
        });
    }
    /// y may be x (in place).
    template <class T>
    static void relu_forward(T* y, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            cpu_detail::unaligned_array_map<T>(y + b, m) = cpu_detail::const_array_map<T>(x + b, m).max(T(0));
        });
    }
    template <class T>
    static void relu_backward(T* dx, const T* dy, const T* x, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m), dyv(dy + b, m);
            cpu_detail::unaligned_array_map<T>(dx + b, m) = (xv > T(0)).select(dyv, T(0));
        });
    }
    /// x where x > 0, else slope·x.
    template <class T>
    static void leaky_relu_forward(T* y, const T* x, T slope, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m);
            cpu_detail::unaligned_array_map<T>(y + b, m) = (xv > T(0)).select(xv, xv * slope);
        });
    }
    template <class T>
    static void leaky_relu_backward(T* dx, const T* dy, const T* x, T slope, std::int64_t n) {
        cpu_detail::parallel_chunks(n, [=](std::int64_t b, std::int64_t m) {
            const cpu_detail::const_array_map<T> xv(x + b, m), dyv(dy + b, m);
            cpu_detail::unaligned_array_map<T>(dx + b, m) = (xv > T(0)).select(dyv, dyv * slope);
        });
    }
};

} // namespace vediff
