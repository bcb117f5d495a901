#pragma once
// cpu kernels for elementwise arithmetic on contiguous arrays of equal length.
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct elementwise_kernels<cpu> {
    template <class T>
    static void add(T* out, const T* a, const T* b, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = a[i] + b[i]; });
    }
    template <class T>
    static void sub(T* out, const T* a, const T* b, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = a[i] - b[i]; });
    }
    template <class T>
    static void mul(T* out, const T* a, const T* b, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = a[i] * b[i]; });
    }
    /// out = alpha * x
    template <class T>
    static void scale(T* out, const T* x, T alpha, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = alpha * x[i]; });
    }
    /// y += alpha * x
    template <class T>
    static void axpy(T* y, const T* x, T alpha, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { y[i] += alpha * x[i]; });
    }
    template <class T>
    static void div(T* out, const T* a, const T* b, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = a[i] / b[i]; });
    }
    /// out = x + c
    template <class T>
    static void add_scalar(T* out, const T* x, T c, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { out[i] = x[i] + c; });
    }
    /// y = alpha * x + beta * y
    template <class T>
    static void axpby(T* y, const T* x, T alpha, T beta, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { y[i] = alpha * x[i] + beta * y[i]; });
    }
};

} // namespace vediff
