#pragma once
// cuda kernels of the diagonal Gaussian posterior: splitting moments (B, 2C, S) into mean and
// clamped log-variance (B, C, S), the reparameterized sample and their backwards; one thread per
// latent element, the cpu backend's arithmetic.
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct posterior_split_op {
    T *mean, *logvar, *raw_logvar;
    const T* moments;
    std::int64_t inner;
    T lo, hi;
    __host__ __device__ void operator()(std::int64_t i) const {
        const std::int64_t b = index_div(i, inner), k = index_mod(i, inner);
        const T raw = moments[(2 * b + 1) * inner + k];
        mean[i] = moments[2 * b * inner + k];
        raw_logvar[i] = raw;
        // Comparisons that keep NaN as NaN, like torch.clamp (and the cpu's min(max(·))).
        const T low = raw < lo ? lo : raw;
        logvar[i] = hi < low ? hi : low;
    }
};

template <class T>
struct posterior_split_backward_op {
    T* dmoments;
    const T *dmean, *dlogvar, *raw_logvar;
    std::int64_t inner;
    T lo, hi;
    __host__ __device__ void operator()(std::int64_t i) const {
        const std::int64_t b = index_div(i, inner), k = index_mod(i, inner);
        const T raw = raw_logvar[i];
        dmoments[2 * b * inner + k] = dmean[i];
        dmoments[(2 * b + 1) * inner + k] = (raw >= lo && raw <= hi) ? dlogvar[i] : T(0);
    }
};

template <class T>
struct posterior_sample_op {
    T* z;
    const T *mean, *logvar, *eps;
    __host__ __device__ void operator()(std::int64_t i) const { z[i] = mean[i] + exp(T(0.5) * logvar[i]) * eps[i]; }
};

template <class T>
struct posterior_sample_backward_op {
    T *dmean, *dlogvar;
    const T *dz, *logvar, *eps;
    __host__ __device__ void operator()(std::int64_t i) const {
        dmean[i] += dz[i];
        dlogvar[i] += dz[i] * eps[i] * T(0.5) * exp(T(0.5) * logvar[i]);
    }
};

} // namespace cuda_detail

template <>
struct posterior_kernels<cuda> {
    /// Row b of moments is [mean_b | logvar_b], each `inner` long: mean, logvar = clamp(raw, lo, hi), raw.
    template <class T>
    static void split(T* mean, T* logvar, T* raw_logvar, const T* moments, std::int64_t outer, std::int64_t inner, T lo, T hi) {
        run(outer * inner, cuda_detail::posterior_split_op<T>{mean, logvar, raw_logvar, moments, inner, lo, hi});
    }
    /// dmoments rows [dmean_b | dlogvar_b·1{lo ≤ raw ≤ hi}].
    template <class T>
    static void split_backward(T* dmoments, const T* dmean, const T* dlogvar, const T* raw_logvar, std::int64_t outer,
                               std::int64_t inner, T lo, T hi) {
        run(outer * inner, cuda_detail::posterior_split_backward_op<T>{dmoments, dmean, dlogvar, raw_logvar, inner, lo, hi});
    }
    /// z = mean + exp(logvar/2)·eps
    template <class T>
    static void sample(T* z, const T* mean, const T* logvar, const T* eps, std::int64_t n) {
        run(n, cuda_detail::posterior_sample_op<T>{z, mean, logvar, eps});
    }
    /// dmean += dz; dlogvar += dz·eps·exp(logvar/2)/2
    template <class T>
    static void sample_backward(T* dmean, T* dlogvar, const T* dz, const T* logvar, const T* eps, std::int64_t n) {
        run(n, cuda_detail::posterior_sample_backward_op<T>{dmean, dlogvar, dz, logvar, eps});
    }

private:
    template <class F>
    static void run(std::int64_t n, F f) {
        if (n > 0)
            cuda_detail::thrust_call("thrust::for_each", [&] {
                return thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()),
                                        thrust::counting_iterator<std::int64_t>(0), thrust::counting_iterator<std::int64_t>(n),
                                        f);
            });
    }
};

} // namespace vediff
