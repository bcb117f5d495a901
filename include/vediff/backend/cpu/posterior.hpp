#pragma once
// cpu kernels of the diagonal Gaussian posterior: splitting moments (B, 2C, S) into mean and
// clamped log-variance (B, C, S), the reparameterized sample and their backwards.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct posterior_kernels<cpu> {
    /// Row b of moments is [mean_b | logvar_b], each `inner` long: mean, logvar = clamp(raw, lo, hi), raw.
    template <class T>
    static void split(T* mean, T* logvar, T* raw_logvar, const T* moments, std::int64_t outer, std::int64_t inner, T lo, T hi) {
        cpu_detail::parallel_for(outer * inner, [=](std::int64_t i) {
            const std::int64_t b = i / inner, k = i % inner;
            const T raw = moments[(2 * b + 1) * inner + k];
            mean[i] = moments[2 * b * inner + k];
            raw_logvar[i] = raw;
            // min(max(·)) keeps NaN as NaN, like torch.clamp.
            logvar[i] = std::min(std::max(raw, lo), hi);
        });
    }
    /// dmoments rows [dmean_b | dlogvar_b·1{lo ≤ raw ≤ hi}] (torch.clamp passes the gradient at the bounds).
    template <class T>
    static void split_backward(T* dmoments, const T* dmean, const T* dlogvar, const T* raw_logvar, std::int64_t outer,
                               std::int64_t inner, T lo, T hi) {
        cpu_detail::parallel_for(outer * inner, [=](std::int64_t i) {
            const std::int64_t b = i / inner, k = i % inner;
            const T raw = raw_logvar[i];
            dmoments[2 * b * inner + k] = dmean[i];
            dmoments[(2 * b + 1) * inner + k] = (raw >= lo && raw <= hi) ? dlogvar[i] : T(0);
        });
    }
    /// z = mean + exp(logvar/2)·eps
    template <class T>
    static void sample(T* z, const T* mean, const T* logvar, const T* eps, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { z[i] = mean[i] + std::exp(T(0.5) * logvar[i]) * eps[i]; }, 8);
    }
    /// dmean += dz; dlogvar += dz·eps·exp(logvar/2)/2
    template <class T>
    static void sample_backward(T* dmean, T* dlogvar, const T* dz, const T* logvar, const T* eps, std::int64_t n) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            dmean[i] += dz[i];
            dlogvar[i] += dz[i] * eps[i] * T(0.5) * std::exp(T(0.5) * logvar[i]);
        }, 8);
    }
};

} // namespace vediff
