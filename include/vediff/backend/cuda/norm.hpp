#pragma once
// cuda kernels for group, layer and RMS normalization and their backward passes, with the cpu
// backend's arithmetic: statistics in double by the shifted-data algorithm (sums around the row's
// first value). Each normalized row (a row of layer/RMS norm, a (sample, group) of group norm) is
// a row job of cooperative_reduction.hpp: a block of threads sums it, then writes it. The affine
// parameters' gradients are column jobs (layer/RMS norm) or a short sum over samples per channel
// (group norm), all in a fixed order, so results do not depend on scheduling.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cuda/cooperative_reduction.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

/// Sums of d and d² for values d = x − shift.
struct shifted_sums {
    double s, ss;
};
__host__ __device__ inline shifted_sums add(shifted_sums a, shifted_sums b) { return {a.s + b.s, a.ss + b.ss}; }

struct moments {
    double mean;
    double rstd;  // 1 / sqrt(biased variance + eps)
};

/// Mean and 1/sqrt(var + eps) of n values from their sums around `shift`.
__host__ __device__ inline moments moments_of(shifted_sums sums, double shift, std::int64_t n, double eps) {
    if (n == 0) return {0.0, 1.0 / sqrt(eps)};
    const double m = sums.s / double(n);
    const double var = sums.ss / double(n) - m * m;
    return {shift + m, 1.0 / sqrt((var > 0 ? var : 0.0) + eps)};
}

/// A pair of double sums (of gradients, or of a gradient and a gradient times an input).
struct sum_pair {
    double a, b;
};
__host__ __device__ inline sum_pair add(sum_pair x, sum_pair y) { return {x.a + y.a, x.b + y.b}; }

/// Layer norm of rows (rows, dim): y = (x − mean)·rstd·weight + bias; mean, rstd per row.
template <class T>
struct layer_norm_forward_job {
    T *y, *mean, *rstd;
    const T *x, *weight, *bias;
    std::int64_t dim;
    double eps;

    using accumulator = shifted_sums;
    using row_result = moments;
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const {
        const double d = double(x[row * dim + j]) - double(x[row * dim]);
        return {d, d * d};
    }
    __host__ __device__ row_result finish(std::int64_t row, accumulator sums) const {
        return moments_of(sums, dim > 0 ? double(x[row * dim]) : 0.0, dim, eps);
    }
    __host__ __device__ void save(std::int64_t row, const row_result& st) const {
        mean[row] = T(st.mean);
        rstd[row] = T(st.rstd);
    }
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& st) const {
        const std::int64_t e = row * dim + j;
        const T mu = T(st.mean), r = T(st.rstd);
        y[e] = weight ? (x[e] - mu) * r * weight[j] + (bias ? bias[j] : T(0)) : (x[e] - mu) * r;
    }
};

/// dx of layer norm: rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·weight.
template <class T>
struct layer_norm_backward_job {
    T* dx;
    const T *dy, *x, *mean, *rstd, *weight;
    std::int64_t dim;

    struct row_result {
        T mean_g, mean_gx, mean, rstd;
    };
    using accumulator = sum_pair;  // Σ g, Σ g·(x − mean)
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const {
        const std::int64_t e = row * dim + j;
        const double g = weight ? double(dy[e]) * double(weight[j]) : double(dy[e]);
        return {g, g * (double(x[e]) - double(mean[row]))};
    }
    __host__ __device__ row_result finish(std::int64_t row, accumulator s) const {
        const double r = double(rstd[row]);
        return {T(s.a / double(dim)), T(r * s.b / double(dim)), mean[row], rstd[row]};
    }
    __host__ __device__ void save(std::int64_t, const row_result&) const {}
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& k) const {
        const std::int64_t e = row * dim + j;
        const T xhat = (x[e] - k.mean) * k.rstd;
        const T g = weight ? dy[e] * weight[j] : dy[e];
        dx[e] = k.rstd * (g - k.mean_g - xhat * k.mean_gx);
    }
};

/// dweight[j] += Σ_rows dy·x̂, dbias[j] += Σ_rows dy (either may be null): a column job.
template <class T>
struct layer_norm_param_grads_job {
    T *dweight, *dbias;
    const T *dy, *x, *mean, *rstd;
    std::int64_t dim;

    using accumulator = sum_pair;
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ accumulator load(std::int64_t i, std::int64_t j) const {
        const double d = double(dy[i * dim + j]);
        return {d * ((double(x[i * dim + j]) - double(mean[i])) * double(rstd[i])), d};
    }
    __host__ __device__ void finish(std::int64_t j, accumulator s) const {
        if (dweight) dweight[j] += T(s.a);
        if (dbias) dbias[j] += T(s.b);
    }
};

/// RMS norm of rows: y = x·rstd·weight with rstd = 1/sqrt(mean(x²) + eps).
template <class T>
struct rms_norm_forward_job {
    T *y, *rstd;
    const T *x, *weight;
    std::int64_t dim;
    double eps;

    using accumulator = double;  // Σ x²
    using row_result = T;        // rstd
    __host__ __device__ accumulator identity() const { return 0.0; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const {
        const double v = double(x[row * dim + j]);
        return v * v;
    }
    __host__ __device__ row_result finish(std::int64_t, accumulator ss) const { return T(1.0 / sqrt(ss / double(dim) + eps)); }
    __host__ __device__ void save(std::int64_t row, const row_result& r) const { rstd[row] = r; }
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& r) const {
        y[row * dim + j] = x[row * dim + j] * r * weight[j];
    }
};

/// dx of RMS norm: rstd·dy·weight − x·rstd³·mean(dy·weight·x).
template <class T>
struct rms_norm_backward_job {
    T* dx;
    const T *dy, *x, *rstd, *weight;
    std::int64_t dim;

    struct row_result {
        T rstd, k;
    };
    using accumulator = double;  // Σ dy·weight·x
    __host__ __device__ accumulator identity() const { return 0.0; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return dim; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return dim; }
    __host__ __device__ accumulator load(std::int64_t row, std::int64_t j) const {
        const std::int64_t e = row * dim + j;
        return double(dy[e]) * double(weight[j]) * double(x[e]);
    }
    __host__ __device__ row_result finish(std::int64_t row, accumulator s) const {
        const double r = double(rstd[row]);
        return {T(r), T(r * r * r * s / double(dim))};
    }
    __host__ __device__ void save(std::int64_t, const row_result&) const {}
    __host__ __device__ void store(std::int64_t row, std::int64_t j, const row_result& k) const {
        const std::int64_t e = row * dim + j;
        dx[e] = k.rstd * dy[e] * weight[j] - k.k * x[e];
    }
};

/// dweight[j] += Σ_rows dy·x·rstd: a column job.
template <class T>
struct rms_norm_weight_grad_job {
    T* dweight;
    const T *dy, *x, *rstd;
    std::int64_t dim;

    using accumulator = double;
    __host__ __device__ accumulator identity() const { return 0.0; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ accumulator load(std::int64_t i, std::int64_t j) const {
        return double(dy[i * dim + j]) * double(x[i * dim + j]) * double(rstd[i]);
    }
    __host__ __device__ void finish(std::int64_t j, accumulator s) const { dweight[j] += T(s); }
};

/// One (sample, group) of group norm, a row: its channels' planes are contiguous. Statistics over
/// the row, then y = x·a + b per channel with a = rstd·weight, b = bias − mean·a, as the cpu.
template <class T>
struct group_norm_forward_job {
    T *y, *mean, *rstd;
    const T *x, *weight, *bias;
    std::int64_t groups, channels_per_group, spatial;
    double eps;

    using accumulator = shifted_sums;
    using row_result = moments;
    __host__ __device__ std::int64_t length() const { return channels_per_group * spatial; }
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return length(); }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return length(); }
    __host__ __device__ accumulator load(std::int64_t ng, std::int64_t j) const {
        const double d = double(x[ng * length() + j]) - double(x[ng * length()]);
        return {d, d * d};
    }
    __host__ __device__ row_result finish(std::int64_t ng, accumulator sums) const {
        return moments_of(sums, length() > 0 ? double(x[ng * length()]) : 0.0, length(), eps);
    }
    __host__ __device__ void save(std::int64_t ng, const row_result& st) const {
        mean[ng] = T(st.mean);
        rstd[ng] = T(st.rstd);
    }
    __host__ __device__ void store(std::int64_t ng, std::int64_t j, const row_result& st) const {
        const std::int64_t c = index_mod(ng, groups) * channels_per_group + index_div(j, spatial);
        const double a = st.rstd * (weight ? double(weight[c]) : 1.0);
        const T at = T(a), bt = T((bias ? double(bias[c]) : 0.0) - st.mean * a);
        y[ng * length() + j] = x[ng * length() + j] * at + bt;
    }
};

/// Per (sample, channel) plane, a row: Σ dy·x and Σ dy, saved; nothing written after.
template <class T>
struct channel_sums_job {
    double *sum_dy_x, *sum_dy;
    const T *dy, *x;
    std::int64_t spatial;

    using accumulator = sum_pair;
    using row_result = sum_pair;
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return spatial; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return 0; }
    __host__ __device__ accumulator load(std::int64_t nc, std::int64_t s) const {
        const double d = double(dy[nc * spatial + s]);
        return {d * double(x[nc * spatial + s]), d};
    }
    __host__ __device__ row_result finish(std::int64_t, accumulator s) const { return s; }
    __host__ __device__ void save(std::int64_t nc, const row_result& s) const {
        sum_dy_x[nc] = s.a;
        sum_dy[nc] = s.b;
    }
    __host__ __device__ void store(std::int64_t, std::int64_t, const row_result&) const {}
};

/// dx of one (sample, group), a row: its channels' sums (weighted) reduced, then
/// dx = rstd·weight·dy + p·x + q over the group's planes.
template <class T>
struct group_norm_backward_job {
    T* dx;
    const T *dy, *x, *mean, *rstd, *weight;
    const double *sum_dy_x, *sum_dy;
    std::int64_t groups, channels_per_group, spatial;

    struct row_result {
        double rstd;
        T p, q;
    };
    using accumulator = sum_pair;  // Σ weight·Σdy, Σ weight·Σdy·x over the group's channels
    __host__ __device__ accumulator identity() const { return {0.0, 0.0}; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return add(a, b); }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return channels_per_group; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return channels_per_group * spatial; }
    __host__ __device__ double weight_of(std::int64_t ng, std::int64_t j) const {
        return weight ? double(weight[index_mod(ng, groups) * channels_per_group + j]) : 1.0;
    }
    __host__ __device__ accumulator load(std::int64_t ng, std::int64_t j) const {
        const double w = weight_of(ng, j);
        return {w * sum_dy[ng * channels_per_group + j], w * sum_dy_x[ng * channels_per_group + j]};
    }
    __host__ __device__ row_result finish(std::int64_t ng, accumulator s) const {
        const double mu = double(mean[ng]), r = double(rstd[ng]), inv_m = 1.0 / double(channels_per_group * spatial);
        const double mean_g = s.a * inv_m, mean_gx = r * (s.b - mu * s.a) * inv_m;
        return {r, T(-r * r * mean_gx), T(r * (mu * r * mean_gx - mean_g))};
    }
    __host__ __device__ void save(std::int64_t, const row_result&) const {}
    __host__ __device__ void store(std::int64_t ng, std::int64_t j, const row_result& k) const {
        const T a = T(k.rstd * weight_of(ng, j / spatial));
        const std::int64_t e = ng * channels_per_group * spatial + j;
        dx[e] = a * dy[e] + k.p * x[e] + k.q;
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
        const std::int64_t per_group = channels / groups;
        cuda_detail::reduce_rows(cuda_detail::group_norm_forward_job<T>{y, mean, rstd, x, weight, bias, groups, per_group, spatial, eps},
                                 n * groups, per_group * spatial);
    }
    template <class T>
    static void group_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t n, std::int64_t channels, std::int64_t spatial,
                                    std::int64_t groups) {
        using namespace cuda_detail;
        tensor<double, cuda> sums(tensor_shape{2, n * channels});
        double* sum_dy_x = sums.data();
        double* sum_dy = sums.data() + n * channels;
        reduce_rows(channel_sums_job<T>{sum_dy_x, sum_dy, dy, x, spatial}, n * channels, spatial);
        reduce_rows(group_norm_backward_job<T>{dx, dy, x, mean, rstd, weight, sum_dy_x, sum_dy, groups, channels / groups, spatial},
                    n * groups, channels / groups * spatial);  // threads sized by the writes: the sum is short
        if (dweight || dbias)
            for_each_element(channels, group_norm_param_grads_op<T>{dweight, dbias, mean, rstd, sum_dy_x, sum_dy, n, channels, groups});
    }

    /// x (rows, dim) normalized over dim → y; mean, rstd (rows). weight, bias (dim) or null.
    template <class T>
    static void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, std::int64_t rows,
                                   std::int64_t dim, double eps) {
        cuda_detail::reduce_rows(cuda_detail::layer_norm_forward_job<T>{y, mean, rstd, x, weight, bias, dim, eps}, rows, dim);
    }
    template <class T>
    static void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t rows, std::int64_t dim) {
        cuda_detail::reduce_rows(cuda_detail::layer_norm_backward_job<T>{dx, dy, x, mean, rstd, weight, dim}, rows, dim);
        if (dweight || dbias)
            cuda_detail::reduce_columns(cuda_detail::layer_norm_param_grads_job<T>{dweight, dbias, dy, x, mean, rstd, dim}, rows, dim);
    }

    /// y = x·rstd·weight with rstd = 1/sqrt(mean(x²) + eps) per row of (rows, dim).
    template <class T>
    static void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, std::int64_t rows, std::int64_t dim, double eps) {
        cuda_detail::reduce_rows(cuda_detail::rms_norm_forward_job<T>{y, rstd, x, weight, dim, eps}, rows, dim);
    }
    template <class T>
    static void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight, std::int64_t rows,
                                  std::int64_t dim) {
        cuda_detail::reduce_rows(cuda_detail::rms_norm_backward_job<T>{dx, dy, x, rstd, weight, dim}, rows, dim);
        if (dweight) cuda_detail::reduce_columns(cuda_detail::rms_norm_weight_grad_job<T>{dweight, dy, x, rstd, dim}, rows, dim);
    }
};

} // namespace vediff
