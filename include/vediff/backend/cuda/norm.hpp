#pragma once
// cuda kernels for group, layer and RMS normalization and their backward passes, with the cpu
// backend's arithmetic: statistics in double by the shifted-data algorithm, one thread per
// normalized row (or group); gradients of the affine parameters summed by one thread per column
// over the rows in order, so results do not depend on scheduling.
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

struct moments {
    double mean;
    double rstd;  // 1 / sqrt(biased variance + eps)
};

/// Mean and 1/sqrt(var + eps) of n values at x[0], x[stride], ... (the sums taken around the
/// first value, as the cpu backend's row_moments).
template <class T>
__host__ __device__ inline moments strided_moments(const T* x, std::int64_t n, double eps) {
    if (n == 0) return {0.0, 1.0 / sqrt(eps)};
    const double shift = double(x[0]);
    double s = 0, ss = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double d = double(x[i]) - shift;
        s += d;
        ss += d * d;
    }
    const double m = s / double(n);
    const double var = ss / double(n) - m * m;
    return {shift + m, 1.0 / sqrt((var > 0 ? var : 0.0) + eps)};
}

template <class F>
void for_each_index(std::int64_t n, F f) {
    if (n > 0)
        thrust::for_each(thrust::cuda::par_nosync.on(stream()), thrust::counting_iterator<std::int64_t>(0),
                         thrust::counting_iterator<std::int64_t>(n), f);
}

template <class T>
struct layer_norm_forward_op {
    T *y, *mean, *rstd;
    const T *x, *weight, *bias;
    std::int64_t dim;
    double eps;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T* xr = x + i * dim;
        T* yr = y + i * dim;
        const moments st = strided_moments(xr, dim, eps);
        mean[i] = T(st.mean);
        rstd[i] = T(st.rstd);
        const T mu = T(st.mean), r = T(st.rstd);
        for (std::int64_t j = 0; j < dim; ++j)
            yr[j] = weight ? (xr[j] - mu) * r * weight[j] + (bias ? bias[j] : T(0)) : (xr[j] - mu) * r;
    }
};

template <class T>
struct layer_norm_backward_op {
    T* dx;
    const T *dy, *x, *mean, *rstd, *weight;
    std::int64_t dim;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T* d = dy + i * dim;
        const T* xr = x + i * dim;
        T* dxr = dx + i * dim;
        const double mu = double(mean[i]), r = double(rstd[i]);
        double s1 = 0, s2 = 0;  // Σ γ·dy, Σ γ·dy·(x − mean)
        for (std::int64_t j = 0; j < dim; ++j) {
            const double g = weight ? double(d[j]) * double(weight[j]) : double(d[j]);
            s1 += g;
            s2 += g * (double(xr[j]) - mu);
        }
        const T mean_g = T(s1 / double(dim)), mean_gx = T(r * s2 / double(dim));
        const T mut = T(mu), rt = T(r);
        for (std::int64_t j = 0; j < dim; ++j) {
            const T xhat = (xr[j] - mut) * rt;
            const T g = weight ? d[j] * weight[j] : d[j];
            dxr[j] = rt * (g - mean_g - xhat * mean_gx);
        }
    }
};

/// dweight[j] += Σ_rows dy·x̂, dbias[j] += Σ_rows dy (either may be null).
template <class T>
struct layer_norm_param_grads_op {
    T *dweight, *dbias;
    const T *dy, *x, *mean, *rstd;
    std::int64_t rows, dim;
    __host__ __device__ void operator()(std::int64_t j) const {
        double dw = 0, db = 0;
        for (std::int64_t i = 0; i < rows; ++i) {
            const double d = double(dy[i * dim + j]);
            dw += d * ((double(x[i * dim + j]) - double(mean[i])) * double(rstd[i]));
            db += d;
        }
        if (dweight) dweight[j] += T(dw);
        if (dbias) dbias[j] += T(db);
    }
};

template <class T>
struct rms_norm_forward_op {
    T *y, *rstd;
    const T *x, *weight;
    std::int64_t dim;
    double eps;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T* xr = x + i * dim;
        T* yr = y + i * dim;
        double ss = 0;
        for (std::int64_t j = 0; j < dim; ++j) ss += double(xr[j]) * double(xr[j]);
        const T r = T(1.0 / sqrt(ss / double(dim) + eps));
        rstd[i] = r;
        for (std::int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * r * weight[j];
    }
};

template <class T>
struct rms_norm_backward_op {
    T* dx;
    const T *dy, *x, *rstd, *weight;
    std::int64_t dim;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T* d = dy + i * dim;
        const T* xr = x + i * dim;
        T* dxr = dx + i * dim;
        const double r = double(rstd[i]);
        double s = 0;
        for (std::int64_t j = 0; j < dim; ++j) s += double(d[j]) * double(weight[j]) * double(xr[j]);
        const T rt = T(r), k = T(r * r * r * s / double(dim));
        for (std::int64_t j = 0; j < dim; ++j) dxr[j] = rt * d[j] * weight[j] - k * xr[j];
    }
};

/// dweight[j] += Σ_rows dy·x·rstd.
template <class T>
struct rms_norm_weight_grad_op {
    T* dweight;
    const T *dy, *x, *rstd;
    std::int64_t rows, dim;
    __host__ __device__ void operator()(std::int64_t j) const {
        double dw = 0;
        for (std::int64_t i = 0; i < rows; ++i) dw += double(dy[i * dim + j]) * double(x[i * dim + j]) * double(rstd[i]);
        dweight[j] += T(dw);
    }
};

/// One (sample, group) of group norm: statistics over its channels' planes (contiguous), then
/// y = x·a + b per channel, as the cpu backend.
template <class T>
struct group_norm_forward_op {
    T *y, *mean, *rstd;
    const T *x, *weight, *bias;
    std::int64_t groups, channels_per_group, spatial;
    double eps;
    __host__ __device__ void operator()(std::int64_t ng) const {
        const std::int64_t g = ng % groups, m = channels_per_group * spatial;
        const T* xs = x + ng * m;
        T* ys = y + ng * m;
        const moments st = strided_moments(xs, m, eps);
        mean[ng] = T(st.mean);
        rstd[ng] = T(st.rstd);
        for (std::int64_t j = 0; j < channels_per_group; ++j) {
            const std::int64_t c = g * channels_per_group + j;
            const double a = st.rstd * (weight ? double(weight[c]) : 1.0);
            const T at = T(a), bt = T((bias ? double(bias[c]) : 0.0) - st.mean * a);
            for (std::int64_t s = 0; s < spatial; ++s) ys[j * spatial + s] = xs[j * spatial + s] * at + bt;
        }
    }
};

/// Per (sample, channel): Σ_s dy·x and Σ_s dy.
template <class T>
struct channel_sums_op {
    double *sum_dy_x, *sum_dy;
    const T *dy, *x;
    std::int64_t spatial;
    __host__ __device__ void operator()(std::int64_t nc) const {
        double a = 0, b = 0;
        for (std::int64_t s = 0; s < spatial; ++s) {
            a += double(dy[nc * spatial + s]) * double(x[nc * spatial + s]);
            b += double(dy[nc * spatial + s]);
        }
        sum_dy_x[nc] = a;
        sum_dy[nc] = b;
    }
};

template <class T>
struct group_norm_backward_op {
    T* dx;
    const T *dy, *x, *mean, *rstd, *weight;
    const double *sum_dy_x, *sum_dy;
    std::int64_t groups, channels_per_group, spatial;
    __host__ __device__ void operator()(std::int64_t ng) const {
        const std::int64_t g = ng % groups, cg = channels_per_group;
        const double mu = double(mean[ng]), r = double(rstd[ng]), inv_m = 1.0 / double(cg * spatial);
        double s1 = 0, s2 = 0;
        for (std::int64_t j = 0; j < cg; ++j) {
            const double w = weight ? double(weight[g * cg + j]) : 1.0;
            s1 += w * sum_dy[ng * cg + j];
            s2 += w * sum_dy_x[ng * cg + j];
        }
        const double mean_g = s1 * inv_m, mean_gx = r * (s2 - mu * s1) * inv_m;
        const T p = T(-r * r * mean_gx), q = T(r * (mu * r * mean_gx - mean_g));
        for (std::int64_t j = 0; j < cg; ++j) {
            const T a = T(r * (weight ? double(weight[g * cg + j]) : 1.0));
            const std::int64_t off = (ng * cg + j) * spatial;
            for (std::int64_t s = 0; s < spatial; ++s) dx[off + s] = a * dy[off + s] + p * x[off + s] + q;
        }
    }
};

template <class T>
struct group_norm_param_grads_op {
    T *dweight, *dbias;
    const T *mean, *rstd;
    const double *sum_dy_x, *sum_dy;
    std::int64_t n, channels, groups;
    __host__ __device__ void operator()(std::int64_t c) const {
        const std::int64_t g = c / (channels / groups);
        double dw = 0, db = 0;
        for (std::int64_t i = 0; i < n; ++i) {
            const std::int64_t nc = i * channels + c;
            const double mu = double(mean[i * groups + g]), r = double(rstd[i * groups + g]);
            dw += r * (sum_dy_x[nc] - mu * sum_dy[nc]);
            db += sum_dy[nc];
        }
        if (dweight) dweight[c] += T(dw);
        if (dbias) dbias[c] += T(db);
    }
};

} // namespace cuda_detail

template <>
struct norm_kernels<cuda> {
    /// x (n, channels, spatial) → y; mean, rstd (n, groups). weight, bias (channels) or null.
    template <class T>
    static void group_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, std::int64_t n,
                                   std::int64_t channels, std::int64_t spatial, std::int64_t groups, double eps) {
        cuda_detail::for_each_index(n * groups, cuda_detail::group_norm_forward_op<T>{y, mean, rstd, x, weight, bias, groups,
                                                                                      channels / groups, spatial, eps});
    }
    template <class T>
    static void group_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t n, std::int64_t channels, std::int64_t spatial,
                                    std::int64_t groups) {
        tensor<double, cuda> sums(tensor_shape{2, n * channels});
        double* sum_dy_x = sums.data();
        double* sum_dy = sums.data() + n * channels;
        cuda_detail::for_each_index(n * channels, cuda_detail::channel_sums_op<T>{sum_dy_x, sum_dy, dy, x, spatial});
        cuda_detail::for_each_index(n * groups, cuda_detail::group_norm_backward_op<T>{dx, dy, x, mean, rstd, weight, sum_dy_x, sum_dy,
                                                                                       groups, channels / groups, spatial});
        if (dweight || dbias)
            cuda_detail::for_each_index(channels, cuda_detail::group_norm_param_grads_op<T>{dweight, dbias, mean, rstd, sum_dy_x,
                                                                                            sum_dy, n, channels, groups});
    }

    /// x (rows, dim) normalized over dim → y; mean, rstd (rows). weight, bias (dim) or null.
    template <class T>
    static void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, std::int64_t rows,
                                   std::int64_t dim, double eps) {
        cuda_detail::for_each_index(rows, cuda_detail::layer_norm_forward_op<T>{y, mean, rstd, x, weight, bias, dim, eps});
    }
    template <class T>
    static void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t rows, std::int64_t dim) {
        cuda_detail::for_each_index(rows, cuda_detail::layer_norm_backward_op<T>{dx, dy, x, mean, rstd, weight, dim});
        if (dweight || dbias)
            cuda_detail::for_each_index(dim, cuda_detail::layer_norm_param_grads_op<T>{dweight, dbias, dy, x, mean, rstd, rows, dim});
    }

    /// y = x·rstd·weight with rstd = 1/sqrt(mean(x²) + eps) per row of (rows, dim).
    template <class T>
    static void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, std::int64_t rows, std::int64_t dim, double eps) {
        cuda_detail::for_each_index(rows, cuda_detail::rms_norm_forward_op<T>{y, rstd, x, weight, dim, eps});
    }
    template <class T>
    static void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight, std::int64_t rows,
                                  std::int64_t dim) {
        cuda_detail::for_each_index(rows, cuda_detail::rms_norm_backward_op<T>{dx, dy, x, rstd, weight, dim});
        if (dweight) cuda_detail::for_each_index(dim, cuda_detail::rms_norm_weight_grad_op<T>{dweight, dy, x, rstd, rows, dim});
    }
};

} // namespace vediff
