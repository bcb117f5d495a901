#pragma once
// cpu kernels for softmax cross-entropy over rows of logits (B, K) with integer labels.
// log-sum-exp subtracts the row maximum first, so large logits do not overflow; per-row losses
// are summed in double in row order (the same result for any number of threads).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct cross_entropy_kernels<cpu> {
    /// Row of the first label outside [0, K), or -1 when all are valid.
    static std::int64_t first_invalid(const std::int32_t* labels, std::int64_t B, std::int64_t K) {
        for (std::int64_t i = 0; i < B; ++i)
            if (labels[i] < 0 || labels[i] >= K) return i;
        return -1;
    }
    static std::int64_t label_at(const std::int32_t* labels, std::int64_t i) { return labels[i]; }

    /// loss[0] = mean over rows of logsumexp(row) − row[label].
    template <class T>
    static void forward(T* loss, const T* logits, const std::int32_t* labels, std::int64_t B, std::int64_t K) {
        std::vector<double> row_loss(static_cast<std::size_t>(B));
        cpu_detail::parallel_for(B, [&](std::int64_t i) {
            const T* z = logits + i * K;
            const auto [m, log_s] = max_and_log_sum_exp(z, K);
            row_loss[static_cast<std::size_t>(i)] = (m - double(z[labels[i]])) + log_s;
        }, K);
        double total = 0;
        for (double v : row_loss) total += v;
        loss[0] = static_cast<T>(B > 0 ? total / double(B) : 0.0);
    }

    /// dlogits = scale · (softmax(logits) − onehot(labels)) / B.
    template <class T>
    static void backward(T* dlogits, const T* logits, const std::int32_t* labels, std::int64_t B, std::int64_t K, T scale) {
        const double f = double(scale) / double(B);
        cpu_detail::parallel_for(B, [=](std::int64_t i) {
            const T* z = logits + i * K;
            T* d = dlogits + i * K;
            const auto [m, log_s] = max_and_log_sum_exp(z, K);
            const std::int64_t y = labels[i];
            for (std::int64_t k = 0; k < K; ++k)
                d[k] = static_cast<T>(f * (std::exp((double(z[k]) - m) - log_s) - (k == y ? 1.0 : 0.0)));
        }, K);
    }

    /// out[i] = the first column of row i holding the row's maximum.
    template <class T>
    static void argmax(std::int32_t* out, const T* logits, std::int64_t B, std::int64_t K) {
        cpu_detail::parallel_for(B, [=](std::int64_t i) {
            const T* z = logits + i * K;
            std::int64_t best = 0;
            for (std::int64_t k = 1; k < K; ++k)
                if (z[k] > z[best]) best = k;
            out[i] = static_cast<std::int32_t>(best);
        }, K);
    }

    static std::int64_t count_equal(const std::int32_t* a, const std::int32_t* b, std::int64_t n) {
        std::int64_t c = 0;
        for (std::int64_t i = 0; i < n; ++i) c += a[i] == b[i];
        return c;
    }

private:
    // The row maximum m and log Σ exp(z − m), kept apart: adding them first would round log Σ to
    // the ulp of m, and a confident row's softmax − 1 would lose its digits to that rounding.
    template <class T>
    static std::pair<double, double> max_and_log_sum_exp(const T* z, std::int64_t K) {
        double m = double(z[0]);
        for (std::int64_t k = 1; k < K; ++k) m = std::max(m, double(z[k]));
        double s = 0;
        for (std::int64_t k = 0; k < K; ++k) s += std::exp(double(z[k]) - m);
        return {m, std::log(s)};
    }
};

} // namespace vediff
