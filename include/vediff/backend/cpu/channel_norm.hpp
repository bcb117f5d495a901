#pragma once
// cpu kernels of the unit normalization over channels (ops/channel_norm.hpp): per (n, spatial
// position) over C, sums in double, one task per image and row of positions.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct channel_norm_kernels<cpu> {
    /// norm[n, i] = √Σ_c x[n, c, i]², y = x / (norm + eps).
    template <class T>
    static void forward(T* y, T* norm, const T* x, std::int64_t n, std::int64_t channels, std::int64_t inner, double eps) {
        cpu_detail::parallel_for(n, [=](std::int64_t b) {
            const T* in = x + b * channels * inner;
            T* out = y + b * channels * inner;
            for (std::int64_t i = 0; i < inner; ++i) {
                double s = 0;
                for (std::int64_t c = 0; c < channels; ++c) s += double(in[c * inner + i]) * double(in[c * inner + i]);
                const double r = std::sqrt(s);
                norm[b * inner + i] = static_cast<T>(r);
                const double inv = 1.0 / (r + eps);
                for (std::int64_t c = 0; c < channels; ++c) out[c * inner + i] = static_cast<T>(double(in[c * inner + i]) * inv);
            }
        }, channels * inner);
    }

    /// dx = dy / (r + eps) − x · Σ_c(dy·x) / ((r + eps)²·r), r the norm (the second term 0 where r = 0).
    template <class T>
    static void backward(T* dx, const T* dy, const T* x, const T* norm, std::int64_t n, std::int64_t channels, std::int64_t inner,
                         double eps) {
        cpu_detail::parallel_for(n, [=](std::int64_t b) {
            const T* in = x + b * channels * inner;
            const T* g = dy + b * channels * inner;
            T* out = dx + b * channels * inner;
            for (std::int64_t i = 0; i < inner; ++i) {
                const double r = double(norm[b * inner + i]), d = r + eps;
                double dot = 0;
                for (std::int64_t c = 0; c < channels; ++c) dot += double(g[c * inner + i]) * double(in[c * inner + i]);
                const double k = r > 0 ? dot / (d * d * r) : 0.0;
                for (std::int64_t c = 0; c < channels; ++c)
                    out[c * inner + i] = static_cast<T>(double(g[c * inner + i]) / d - double(in[c * inner + i]) * k);
            }
        }, channels * inner);
    }
};

} // namespace vediff
