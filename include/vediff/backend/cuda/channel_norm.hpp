#pragma once
// cuda kernels of the unit normalization over channels (ops/channel_norm.hpp; LPIPS): one thread
// per (image, position), walking its C channels (neighbouring threads read neighbouring
// positions, so each channel's reads coalesce), sums in double as on the cpu.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cuda/batch_norm.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct channel_norm_forward_op {
    T *y, *norm;
    const T* x;
    std::int64_t channels, inner;
    double eps;
    __host__ __device__ void operator()(std::int64_t p) const {
        const std::int64_t b = index_div(p, inner), i = index_mod(p, inner);
        const T* in = x + b * channels * inner + i;
        T* out = y + b * channels * inner + i;
        double s = 0;
        for (std::int64_t c = 0; c < channels; ++c) s += double(in[c * inner]) * double(in[c * inner]);
        const double r = sqrt(s), inv = 1.0 / (r + eps);
        norm[p] = T(r);
        for (std::int64_t c = 0; c < channels; ++c) out[c * inner] = T(double(in[c * inner]) * inv);
    }
};

template <class T>
struct channel_norm_backward_op {
    T* dx;
    const T *dy, *x, *norm;
    std::int64_t channels, inner;
    double eps;
    __host__ __device__ void operator()(std::int64_t p) const {
        const std::int64_t b = index_div(p, inner), i = index_mod(p, inner), base = b * channels * inner + i;
        const double r = double(norm[p]), d = r + eps;
        double dot = 0;
        for (std::int64_t c = 0; c < channels; ++c) dot += double(dy[base + c * inner]) * double(x[base + c * inner]);
        const double k = r > 0 ? dot / (d * d * r) : 0.0;
        for (std::int64_t c = 0; c < channels; ++c)
            dx[base + c * inner] = T(double(dy[base + c * inner]) / d - double(x[base + c * inner]) * k);
    }
};

} // namespace cuda_detail

template <>
struct channel_norm_kernels<cuda> {
    template <class T>
    static void forward(T* y, T* norm, const T* x, std::int64_t n, std::int64_t channels, std::int64_t inner, double eps) {
        cuda_detail::for_each_element(n * inner, cuda_detail::channel_norm_forward_op<T>{y, norm, x, channels, inner, eps});
    }
    template <class T>
    static void backward(T* dx, const T* dy, const T* x, const T* norm, std::int64_t n, std::int64_t channels, std::int64_t inner,
                         double eps) {
        cuda_detail::for_each_element(n * inner, cuda_detail::channel_norm_backward_op<T>{dx, dy, x, norm, channels, inner, eps});
    }
};

} // namespace vediff
