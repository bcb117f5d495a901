#pragma once
// cuda kernels of batch normalization (ops/batch_norm.hpp), with the cpu backend's formulas: the
// statistics and the backward's sums are row jobs of cooperative_reduction.hpp with one row per
// channel (its N·H·W values, sums in double around the channel's first value), the normalization
// and the per-channel updates are Thrust index maps. fold (evaluation mode, C values) runs on the
// host, since it reports the first bad channel there.
#include <cmath>
#include <cstdint>
#include <vector>

#include "vediff/backend/cuda/cooperative_reduction.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/norm.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

/// Element j of channel c's values over (N, inner), j = b·inner + i.
__host__ __device__ inline std::int64_t channel_element(std::int64_t c, std::int64_t j, std::int64_t channels, std::int64_t inner) {
    return (index_div(j, inner) * channels + c) * inner + index_mod(j, inner);
}

/// mean, biased var and rstd per channel.
template <class T>
struct batch_norm_statistics_job {
    T *mean, *var, *rstd;
    const T* x;
    std::int64_t n, channels, inner;
    double eps;

    struct row_result {
        double mean, var;
    };
    using accumulator = shifted_sums;
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return n * inner; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return 0; }
    __host__ __device__ double shift(std::int64_t c) const { return n * inner > 0 ? double(x[channel_element(c, 0, channels, inner)]) : 0.0; }
    __host__ __device__ accumulator load(std::int64_t c, std::int64_t j) const {
        const double d = double(x[channel_element(c, j, channels, inner)]) - shift(c);
        return {d, d * d};
    }
    __host__ __device__ row_result finish(std::int64_t c, accumulator s) const {
        const double count = double(n * inner);
        const double m = s.s / count, v = s.ss / count - m * m;
        return {shift(c) + m, v > 0 ? v : 0.0};
    }
    __host__ __device__ void save(std::int64_t c, const row_result& r) const {
        mean[c] = T(r.mean);
        var[c] = T(r.var);
        rstd[c] = T(1.0 / sqrt(r.var + eps));
    }
    __host__ __device__ void store(std::int64_t, std::int64_t, const row_result&) const {}
};

/// dweight += Σ dy·x̂, dbias += Σ dy per channel (saved once), and dx over the channel's values.
template <class T>
struct batch_norm_backward_job {
    T *dx, *dweight, *dbias;
    const T *dy, *x, *mean, *rstd, *weight;
    std::int64_t n, channels, inner;
    bool batch_statistics;

    struct row_result {
        double sum_dy, sum_dy_xhat, k, mean_dy, mean_dy_xhat, m, r;
    };
    using accumulator = sum_pair;  // Σ dy, Σ dy·x̂
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return n * inner; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return n * inner; }
    __host__ __device__ accumulator load(std::int64_t c, std::int64_t j) const {
        const std::int64_t e = channel_element(c, j, channels, inner);
        const double g = double(dy[e]);
        return {g, g * (double(x[e]) - double(mean[c])) * double(rstd[c])};
    }
    __host__ __device__ row_result finish(std::int64_t c, accumulator s) const {
        const double count = double(n * inner), r = double(rstd[c]);
        return {s.a, s.b, double(weight[c]) * r, batch_statistics ? s.a / count : 0.0, batch_statistics ? s.b / count : 0.0,
                double(mean[c]), r};
    }
    __host__ __device__ void save(std::int64_t c, const row_result& k) const {
        dweight[c] += T(k.sum_dy_xhat);
        dbias[c] += T(k.sum_dy);
    }
    __host__ __device__ void store(std::int64_t c, std::int64_t j, const row_result& k) const {
        const std::int64_t e = channel_element(c, j, channels, inner);
        dx[e] = T(k.k * (double(dy[e]) - k.mean_dy - (double(x[e]) - k.m) * k.r * k.mean_dy_xhat));
    }
};

/// y = x·scale + shift with scale = rstd·weight, shift = bias − mean·scale per channel (the cpu's
/// order of rounding).
template <class T>
struct batch_norm_normalize_op {
    T* y;
    const T *x, *mean, *rstd, *weight, *bias;
    std::int64_t channels, inner;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t c = index_mod(index_div(e, inner), channels);
        const T scale = rstd[c] * weight[c], shift = bias[c] - mean[c] * scale;
        y[e] = x[e] * scale + shift;
    }
};

template <class T>
struct inverse_std_op {
    T* rstd;
    const T* var;
    double eps;
    __host__ __device__ void operator()(std::int64_t c) const { rstd[c] = T(1.0 / sqrt(double(var[c]) + eps)); }
};

template <class T>
struct running_statistics_op {
    T *running_mean, *running_var;
    const T *mean, *var;
    double momentum, unbias;
    __host__ __device__ void operator()(std::int64_t c) const {
        running_mean[c] = T((1 - momentum) * double(running_mean[c]) + momentum * double(mean[c]));
        running_var[c] = T((1 - momentum) * double(running_var[c]) + momentum * double(var[c]) * unbias);
    }
};

} // namespace cuda_detail

template <>
struct batch_norm_kernels<cuda> {
    template <class T>
    static std::int64_t fold(T* scale, T* shift, const T* weight, const T* bias, const T* mean, const T* var, double eps,
                             std::int64_t channels) {
        const auto bytes = static_cast<std::size_t>(channels) * sizeof(T);
        std::vector<T> w(static_cast<std::size_t>(channels)), b(w.size()), m(w.size()), v(w.size()), s(w.size()), t(w.size());
        memory<cuda>::copy_to_host(w.data(), weight, bytes);
        memory<cuda>::copy_to_host(b.data(), bias, bytes);
        memory<cuda>::copy_to_host(m.data(), mean, bytes);
        memory<cuda>::copy_to_host(v.data(), var, bytes);
        for (std::size_t c = 0; c < w.size(); ++c) {
            const double denominator = double(v[c]) + eps;
            if (!(denominator > 0) || !std::isfinite(denominator) || !std::isfinite(double(w[c])) || !std::isfinite(double(b[c])) ||
                !std::isfinite(double(m[c])))
                return static_cast<std::int64_t>(c);
            const double k = double(w[c]) / std::sqrt(denominator);
            s[c] = static_cast<T>(k);
            t[c] = static_cast<T>(double(b[c]) - double(m[c]) * k);
        }
        memory<cuda>::copy_from_host(scale, s.data(), bytes);
        memory<cuda>::copy_from_host(shift, t.data(), bytes);
        return -1;
    }

    template <class T>
    static void statistics(T* mean, T* var, T* rstd, const T* x, std::int64_t n, std::int64_t channels, std::int64_t inner, double eps) {
        cuda_detail::reduce_rows(cuda_detail::batch_norm_statistics_job<T>{mean, var, rstd, x, n, channels, inner, eps}, channels, n * inner);
    }

    template <class T>
    static void inverse_std(T* rstd, const T* var, std::int64_t channels, double eps) {
        cuda_detail::for_each_element(channels, cuda_detail::inverse_std_op<T>{rstd, var, eps});
    }

    template <class T>
    static void normalize(T* y, const T* x, const T* mean, const T* rstd, const T* weight, const T* bias, std::int64_t n,
                          std::int64_t channels, std::int64_t inner) {
        cuda_detail::for_each_element(n * channels * inner, cuda_detail::batch_norm_normalize_op<T>{y, x, mean, rstd, weight, bias, channels, inner});
    }

    template <class T>
    static void backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd, const T* weight,
                         std::int64_t n, std::int64_t channels, std::int64_t inner, bool batch_statistics) {
        cuda_detail::reduce_rows(cuda_detail::batch_norm_backward_job<T>{dx, dweight, dbias, dy, x, mean, rstd, weight, n, channels, inner,
                                                                         batch_statistics},
                                 channels, n * inner);
    }

    template <class T>
    static void update_running(T* running_mean, T* running_var, const T* mean, const T* var, std::int64_t channels, double momentum,
                               std::int64_t count) {
        const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0;
        cuda_detail::for_each_element(channels, cuda_detail::running_statistics_op<T>{running_mean, running_var, mean, var, momentum, unbias});
    }
};

} // namespace vediff
