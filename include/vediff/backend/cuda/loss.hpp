#pragma once
// cuda kernels for the terms of the tokenizer loss (reconstruction, VE, KL): each sums a
// per-element value and, given a gradient buffer (non-null), adds g times the per-element
// derivative into it, in one pass. The sums are blocked as on the cpu backend: each block of
// `block_size` elements is summed in double by a block of threads (a row job of
// cooperative_reduction.hpp), and the block sums are added on the host in block order; only those
// few doubles cross to the host. The order is fixed, so a sum is reproducible, though not the
// cpu's bit for bit (the cpu sums each block in sequence).
#include <cmath>
#include <cstdint>
#include <vector>

#include "vediff/backend/cuda/cooperative_reduction.hpp"
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

/// Block b of `block` consecutive elements (the last one shorter), a row: Σ term(i), saved to
/// partial[b].
template <class Term>
struct block_sum_job {
    Term term;
    std::int64_t n, block;
    double* partial;

    using accumulator = double;
    using row_result = double;
    __host__ __device__ accumulator identity() const { return 0.0; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ std::int64_t reduce_length(std::int64_t b) const { return (b + 1) * block < n ? block : n - b * block; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return 0; }
    __host__ __device__ accumulator load(std::int64_t b, std::int64_t j) const { return term(b * block + j); }
    __host__ __device__ row_result finish(std::int64_t, accumulator s) const { return s; }
    __host__ __device__ void save(std::int64_t b, const row_result& s) const { partial[b] = s; }
    __host__ __device__ void store(std::int64_t, std::int64_t, const row_result&) const {}
};

/// Channel c of z (B, C, S), a row of B·S values: Σ (z − center[c])^power, saved as
/// out[c] = scale · sum; power 1 with no center gives the mean, power 2 about the mean the m2.
template <class T>
struct channel_power_sum_job {
    const T* z;
    const double* center;  // null: 0
    double* out;
    std::int64_t B, C, S;
    int power;
    double scale;

    using accumulator = double;
    using row_result = double;
    __host__ __device__ accumulator identity() const { return 0.0; }
    __host__ __device__ static accumulator combine(accumulator a, accumulator b) { return a + b; }
    __host__ __device__ std::int64_t reduce_length(std::int64_t) const { return B * S; }
    __host__ __device__ std::int64_t map_length(std::int64_t) const { return 0; }
    __host__ __device__ accumulator load(std::int64_t c, std::int64_t j) const {
        const double d = double(z[((j / S) * C + c) * S + j % S]) - (center ? center[c] : 0.0);
        return power == 1 ? d : d * d;
    }
    __host__ __device__ row_result finish(std::int64_t, accumulator s) const { return scale * s; }
    __host__ __device__ void save(std::int64_t c, const row_result& s) const { out[c] = s; }
    __host__ __device__ void store(std::int64_t, std::int64_t, const row_result&) const {}
};

} // namespace cuda_detail

template <>
struct loss_kernels<cuda> {
    static constexpr std::int64_t block_size = 8192;  // the cpu backend's

    /// Σ |x̂ − x|; dx_hat += g · sign(x̂ − x).
    template <class T>
    static double abs_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_sum(n, cuda_detail::abs_error_term<T>{x, x_hat, dx_hat, g});
    }
    /// Σ (x̂ − x)²; dx_hat += g · 2(x̂ − x).
    template <class T>
    static double squared_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return sum_in_order(squared_error_partials(x, x_hat, dx_hat, n, g));
    }
    /// squared_error's block sums, left on the device (nothing waits): added in order, they are
    /// its value (deferred_sum reads them when asked).
    template <class T>
    static tensor<double, cuda> squared_error_partials(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_partials(n, cuda_detail::squared_error_term<T>{x, x_hat, dx_hat, g});
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
        const std::int64_t count = B * S;
        cuda_detail::reduce_rows(cuda_detail::channel_power_sum_job<T>{z, nullptr, out.data(), B, C, S, 1, count > 0 ? 1.0 / double(count) : 0.0},
                                 C, count);
        cuda_detail::reduce_rows(cuda_detail::channel_power_sum_job<T>{z, out.data(), out.data() + C, B, C, S, 2, 1.0}, C, count);
        memory<cuda>::copy_to_host(mean, out.data(), static_cast<std::size_t>(C) * sizeof(double));
        memory<cuda>::copy_to_host(m2, out.data() + C, static_cast<std::size_t>(C) * sizeof(double));
    }
    /// Number of NaN or infinite elements.
    template <class T>
    static std::int64_t count_nonfinite(const T* x, std::int64_t n) {
        return static_cast<std::int64_t>(blocked_sum(n, cuda_detail::nonfinite_term<T>{x}));
    }

private:
    /// The block sums of term over [0, n), on the device.
    template <class Term>
    static tensor<double, cuda> blocked_partials(std::int64_t n, Term term) {
        const std::int64_t blocks = n > 0 ? (n + block_size - 1) / block_size : 0;
        tensor<double, cuda> partial(tensor_shape{blocks});
        if (blocks > 0)
            cuda_detail::reduce_rows(cuda_detail::block_sum_job<Term>{term, n, block_size, partial.data()}, blocks, block_size);
        return partial;
    }
    static double sum_in_order(const tensor<double, cuda>& partial) {
        double total = 0;
        for (double p : partial.to_vector()) total += p;  // waits for the stream; block order, as the cpu
        return total;
    }
    template <class Term>
    static double blocked_sum(std::int64_t n, Term term) {
        if (n <= 0) return 0.0;
        return sum_in_order(blocked_partials(n, term));
    }
};

} // namespace vediff
