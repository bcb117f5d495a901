#pragma once
// cuda kernels for the terms of the tokenizer loss (reconstruction, VE, KL): each sums a
// per-element value and, given a gradient buffer (non-null), adds g times the per-element
// derivative into it, in one pass. The sums are the cpu backend's: one thread per fixed block of
// `block_size` elements summing it in order, in double, and the block sums added on the host in
// block order; only those few doubles cross to the host. (A block per thread is slow for small
// tensors; a faster, still ordered reduction is future work.)
#include <cmath>
#include <cstdint>
#include <vector>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

__host__ __device__ inline double sign_of(double d) { return double((d > 0) - (d < 0)); }

template <class T>
struct abs_error_term {
    const T *x, *x_hat;
    T* dx_hat;
    double g;
    __host__ __device__ double operator()(std::int64_t i) const {
        const double d = double(x_hat[i]) - double(x[i]);
        if (dx_hat) dx_hat[i] += static_cast<T>(g * sign_of(d));
        return d < 0 ? -d : d;
    }
};
template <class T>
struct squared_error_term {
    const T *x, *x_hat;
    T* dx_hat;
    double g;
    __host__ __device__ double operator()(std::int64_t i) const {
        const double d = double(x_hat[i]) - double(x[i]);
        if (dx_hat) dx_hat[i] += static_cast<T>(g * 2.0 * d);
        return d * d;
    }
};
/// 1/(σ² + δ) with σ² = exp(logvar); d/dlogvar = −σ²/(σ² + δ)² = −v/(1 + δ/σ²).
template <class T>
struct inverse_variance_term {
    const T* logvar;
    double delta;
    T* dlogvar;
    double g;
    __host__ __device__ double operator()(std::int64_t i) const {
        const double s = exp(double(logvar[i]));
        const double v = 1.0 / (s + delta);
        if (dlogvar) dlogvar[i] += static_cast<T>(-g * v / (1.0 + delta / s));
        return v;
    }
};
template <class T>
struct magnitude_term {
    const T* z;
    double tau;
    T* dz;
    double g;
    __host__ __device__ double operator()(std::int64_t i) const {
        const double zi = double(z[i]);
        const double e = exp((zi < 0 ? -zi : zi) - tau);
        if (dz) dz[i] += static_cast<T>(g * sign_of(zi) * e);
        return e;
    }
};
template <class T>
struct gaussian_kl_term {
    const T *mean, *logvar;
    T *dmean, *dlogvar;
    double g;
    __host__ __device__ double operator()(std::int64_t i) const {
        const double m = double(mean[i]), lv = double(logvar[i]);
        const double s = exp(lv);
        if (dmean) dmean[i] += static_cast<T>(g * m);
        if (dlogvar) dlogvar[i] += static_cast<T>(g * 0.5 * (s - 1.0));
        return 0.5 * (m * m + s - 1.0 - lv);
    }
};
template <class T>
struct exp_term {
    const T* x;
    __host__ __device__ double operator()(std::int64_t i) const { return exp(double(x[i])); }
};
template <class T>
struct nonfinite_term {
    const T* x;
    __host__ __device__ double operator()(std::int64_t i) const { return isfinite(double(x[i])) ? 0.0 : 1.0; }
};

/// partial[b] = Σ term(i) over block b, in order.
template <class Term>
struct block_sum_op {
    Term term;
    std::int64_t n, block;
    double* partial;
    __host__ __device__ void operator()(std::int64_t b) const {
        const std::int64_t end = (b + 1) * block < n ? (b + 1) * block : n;
        double s = 0;
        for (std::int64_t i = b * block; i < end; ++i) s += term(i);
        partial[b] = s;
    }
};

/// Per channel c of z (B, C, S): the mean, then the sum of squared deviations from it.
template <class T>
struct channel_moments_op {
    double *mean, *m2;
    const T* z;
    std::int64_t B, C, S;
    __host__ __device__ void operator()(std::int64_t c) const {
        const std::int64_t count = B * S;
        double s = 0;
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) s += double(z[(b * C + c) * S + j]);
        const double mu = count > 0 ? s / double(count) : 0.0;
        double q = 0;
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t j = 0; j < S; ++j) {
                const double d = double(z[(b * C + c) * S + j]) - mu;
                q += d * d;
            }
        mean[c] = mu;
        m2[c] = q;
    }
};

} // namespace cuda_detail

template <>
struct loss_kernels<cuda> {
    static constexpr std::int64_t block_size = 8192;  // the cpu backend's, so the sums agree in order

    /// Σ |x̂ − x|; dx_hat += g · sign(x̂ − x).
    template <class T>
    static double abs_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::abs_error_term<T>{x, x_hat, dx_hat, g});
    }
    /// Σ (x̂ − x)²; dx_hat += g · 2(x̂ − x).
    template <class T>
    static double squared_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::squared_error_term<T>{x, x_hat, dx_hat, g});
    }
    /// Σ 1/(σ² + δ) with σ² = exp(logvar); dlogvar += g · (−σ²/(σ² + δ)²).
    template <class T>
    static double inverse_variance(const T* logvar, double delta, T* dlogvar, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::inverse_variance_term<T>{logvar, delta, dlogvar, g});
    }
    /// Σ exp(|z| − τ); dz += g · sign(z) · exp(|z| − τ).
    template <class T>
    static double magnitude(const T* z, double tau, T* dz, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::magnitude_term<T>{z, tau, dz, g});
    }
    /// Σ ½(μ² + σ² − 1 − log σ²); dmean += g · μ, dlogvar += g · ½(σ² − 1).
    template <class T>
    static double gaussian_kl(const T* mean, const T* logvar, T* dmean, T* dlogvar, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::gaussian_kl_term<T>{mean, logvar, dmean, dlogvar, g});
    }
    /// Σ exp(x).
    template <class T>
    static double exp_sum(const T* x, std::int64_t n) {
        return blocked_sum(n, cuda_detail::exp_term<T>{x});
    }
    /// Per channel of z (B, C, S): mean and sum of squared deviations, into host arrays of C doubles.
    template <class T>
    static void channel_moments(double* mean, double* m2, const T* z, std::int64_t B, std::int64_t C, std::int64_t S) {
        if (C <= 0) return;
        tensor<double, cuda> out(tensor_shape{2, C});
        thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                         thrust::counting_iterator<std::int64_t>(C),
                         cuda_detail::channel_moments_op<T>{out.data(), out.data() + C, z, B, C, S});
        memory<cuda>::copy_to_host(mean, out.data(), static_cast<std::size_t>(C) * sizeof(double));
        memory<cuda>::copy_to_host(m2, out.data() + C, static_cast<std::size_t>(C) * sizeof(double));
    }
    /// Number of NaN or infinite elements.
    template <class T>
    static std::int64_t count_nonfinite(const T* x, std::int64_t n) {
        return static_cast<std::int64_t>(blocked_sum(n, cuda_detail::nonfinite_term<T>{x}));
    }

private:
    template <class Term>
    static double blocked_sum(std::int64_t n, Term term) {
        if (n <= 0) return 0.0;
        const std::int64_t blocks = (n + block_size - 1) / block_size;
        tensor<double, cuda> partial(tensor_shape{blocks});
        thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                         thrust::counting_iterator<std::int64_t>(blocks),
                         cuda_detail::block_sum_op<Term>{term, n, block_size, partial.data()});
        double total = 0;
        for (double p : partial.to_vector()) total += p;  // waits for the stream; block order, as the cpu
        return total;
    }
};

} // namespace vediff
