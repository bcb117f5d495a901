#pragma once
// cpu kernels for the terms of the tokenizer loss: each sums a per-element value over a tensor
// and, when given a gradient buffer (non-null), adds g times the per-element derivative into it.
// Values and derivatives are computed in double. Sums run over fixed blocks of `block_size`
// elements whose partial sums are added in block order, so a result does not depend on the
// number of threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct loss_kernels<cpu> {
    static constexpr std::int64_t block_size = 8192;

    /// Σ |x̂ − x|; dx_hat += g · sign(x̂ − x) (0 where they are equal).
    template <class T>
    static double abs_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_sum(n, [=](std::int64_t i) {
            const double d = double(x_hat[i]) - double(x[i]);
            if (dx_hat) dx_hat[i] += static_cast<T>(g * sign(d));
            return std::abs(d);
        });
    }

    /// Σ (x̂ − x)²; dx_hat += g · 2(x̂ − x).
    template <class T>
    static double squared_error(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return sum_in_order(squared_error_partials(x, x_hat, dx_hat, n, g));
    }
    /// squared_error's block sums (added in order, they are its value), for a caller that reads
    /// them later (deferred_sum).
    template <class T>
    static std::vector<double> squared_error_partials(const T* x, const T* x_hat, T* dx_hat, std::int64_t n, double g) {
        return blocked_partials(n, [=](std::int64_t i) {
            const double d = double(x_hat[i]) - double(x[i]);
            if (dx_hat) dx_hat[i] += static_cast<T>(g * 2.0 * d);
            return d * d;
        });
    }

    /// Σ 1/(σ² + δ) with σ² = exp(logvar); dlogvar += g · (−σ²/(σ² + δ)²).
    template <class T>
    static double inverse_variance(const T* logvar, double delta, T* dlogvar, std::int64_t n, double g) {
        return blocked_sum(n, [=](std::int64_t i) {
            const double s = std::exp(double(logvar[i]));
            const double v = 1.0 / (s + delta);
            // σ²/(σ² + δ) written as 1/(1 + δ/σ²): exactly 0 at σ² = 0 and 1 at σ² = ∞, where the
            // direct quotient would be 0/0 or ∞/∞.
            if (dlogvar) dlogvar[i] += static_cast<T>(-g * v / (1.0 + delta / s));
            return v;
        });
    }

    /// Σ exp(|z| − τ); dz += g · sign(z) · exp(|z| − τ) (0 at z = 0).
    template <class T>
    static double magnitude(const T* z, double tau, T* dz, std::int64_t n, double g) {
        return blocked_sum(n, [=](std::int64_t i) {
            const double zi = double(z[i]);
            const double e = std::exp(std::abs(zi) - tau);
            if (dz) dz[i] += static_cast<T>(g * sign(zi) * e);
            return e;
        });
    }

    /// Σ ½(μ² + σ² − 1 − log σ²); dmean += g · μ, dlogvar += g · ½(σ² − 1).
    template <class T>
    static double gaussian_kl(const T* mean, const T* logvar, T* dmean, T* dlogvar, std::int64_t n, double g) {
        return blocked_sum(n, [=](std::int64_t i) {
            const double m = double(mean[i]), lv = double(logvar[i]);
            const double s = std::exp(lv);
            if (dmean) dmean[i] += static_cast<T>(g * m);
            if (dlogvar) dlogvar[i] += static_cast<T>(g * 0.5 * (s - 1.0));
            return 0.5 * (m * m + s - 1.0 - lv);
        });
    }

    /// Σ exp(x).
    template <class T>
    static double exp_sum(const T* x, std::int64_t n) {
        return blocked_sum(n, [=](std::int64_t i) { return std::exp(double(x[i])); });
    }

    /// Per channel c of z (B, C, S): the mean and the sum of squared deviations from it (M2),
    /// over the B·S values, written to host arrays of C doubles. Two passes, so that M2 does not
    /// lose its digits to cancellation when the mean is large against the spread.
    template <class T>
    static void channel_moments(double* mean, double* m2, const T* z, std::int64_t B, std::int64_t C, std::int64_t S) {
        const std::int64_t count = B * S;
        cpu_detail::parallel_for(C, [=](std::int64_t c) {
            double s = 0;
            for (std::int64_t b = 0; b < B; ++b) {
                const T* row = z + (b * C + c) * S;
                for (std::int64_t j = 0; j < S; ++j) s += double(row[j]);
            }
            const double mu = count > 0 ? s / double(count) : 0.0;
            double q = 0;
            for (std::int64_t b = 0; b < B; ++b) {
                const T* row = z + (b * C + c) * S;
                for (std::int64_t j = 0; j < S; ++j) q += (double(row[j]) - mu) * (double(row[j]) - mu);
            }
            mean[c] = mu;
            m2[c] = q;
        }, 2 * count);
    }

    /// Number of NaN or infinite elements.
    template <class T>
    static std::int64_t count_nonfinite(const T* x, std::int64_t n) {
        const double c = blocked_sum(n, [=](std::int64_t i) { return std::isfinite(double(x[i])) ? 0.0 : 1.0; });
        return static_cast<std::int64_t>(c);
    }

private:
    static double sign(double d) { return double((d > 0) - (d < 0)); }

    /// Σ term(i) over each fixed block of [0, n), sequential within the block.
    template <class Term>
    static std::vector<double> blocked_partials(std::int64_t n, Term term) {
        const std::int64_t blocks = (n + block_size - 1) / block_size;
        std::vector<double> partial(static_cast<std::size_t>(blocks));
        cpu_detail::parallel_for(blocks, [&](std::int64_t b) {
            const std::int64_t end = std::min(n, (b + 1) * block_size);
            double s = 0;
            for (std::int64_t i = b * block_size; i < end; ++i) s += term(i);
            partial[static_cast<std::size_t>(b)] = s;
        }, block_size * 8);
        return partial;
    }
    static double sum_in_order(const std::vector<double>& partial) {
        double total = 0;
        for (double p : partial) total += p;
        return total;
    }
    /// Σ term(i) for i in [0, n): the blocks' sums added in block order.
    template <class Term>
    static double blocked_sum(std::int64_t n, Term term) {
        return sum_in_order(blocked_partials(n, term));
    }
};

} // namespace vediff
