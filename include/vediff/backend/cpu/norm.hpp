#pragma once
// cpu kernels for group, layer and RMS normalization and their backward passes.
// Statistics are accumulated in double in one pass; gradients of the per-channel (or per-column)
// affine parameters are reduced in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cpu_detail {

struct moments {
    double mean;
    double rstd;  // 1 / sqrt(biased variance + eps)
};

/// Mean and 1/sqrt(var + eps) of n contiguous values in one pass. The sums are taken around the
/// first value (the shifted-data algorithm), so a mean far from zero does not cancel the variance.
template <class T>
inline moments row_moments(const T* x, std::int64_t n, double eps) {
    if (n == 0) return {0.0, 1.0 / std::sqrt(eps)};  // an empty group (zero spatial size)
    const double shift = double(x[0]);
    double s = 0, ss = 0;
#pragma omp simd reduction(+ : s, ss)
    for (std::int64_t i = 0; i < n; ++i) {
        const double d = double(x[i]) - shift;
        s += d;
        ss += d * d;
    }
    const double m = s / double(n);
    const double var = std::max(ss / double(n) - m * m, 0.0);
    return {shift + m, 1.0 / std::sqrt(var + eps)};
}

/// Rows are reduced in this many fixed chunks (at most): per-chunk partial sums, then a sum over
/// chunks in order; the chunk boundaries depend only on the row count.
inline constexpr std::int64_t reduction_chunks = 64;

} // namespace cpu_detail

template <>
struct norm_kernels<cpu> {
    /// x (n, channels, spatial) → y; mean, rstd (n, groups). weight, bias (channels) or null.
    template <class T>
    static void group_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, std::int64_t n,
                                   std::int64_t channels, std::int64_t spatial, std::int64_t groups, double eps) {
        const std::int64_t cg = channels / groups;
        const std::int64_t m = cg * spatial;  // a group's elements are contiguous
        cpu_detail::parallel_for(n * groups, [=](std::int64_t ng) {
            const std::int64_t g = ng % groups;
            const T* xs = x + ng * m;
            T* ys = y + ng * m;
            const auto st = cpu_detail::row_moments(xs, m, eps);
            mean[ng] = T(st.mean);
            rstd[ng] = T(st.rstd);
            for (std::int64_t j = 0; j < cg; ++j) {
                const std::int64_t c = g * cg + j;
                // y = x·a + b with a = rstd·w, b = bias − mean·a: one fused multiply-add per element.
                const double a = st.rstd * (weight ? double(weight[c]) : 1.0);
                const T at = T(a), bt = T((bias ? double(bias[c]) : 0.0) - st.mean * a);
                const T* xc = xs + j * spatial;
                T* yc = ys + j * spatial;
                for (std::int64_t s = 0; s < spatial; ++s) yc[s] = xc[s] * at + bt;
            }
        }, m);
    }

    /// dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂)) over each group, written as
    /// dx = rstd·γ_c·dy + p·x + q per (n, group); dweight += Σ dy·x̂, dbias += Σ dy (null to skip).
    template <class T>
    static void group_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t n, std::int64_t channels, std::int64_t spatial,
                                    std::int64_t groups) {
        const std::int64_t cg = channels / groups;
        // Per (n, c): Σ_s dy·x and Σ_s dy.
        std::vector<double> sum_dy_x(static_cast<std::size_t>(n * channels)), sum_dy(sum_dy_x.size());
        cpu_detail::parallel_for(n * channels, [&](std::int64_t nc) {
            const T* d = dy + nc * spatial;
            const T* xc = x + nc * spatial;
            double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
            for (std::int64_t s = 0; s < spatial; ++s) {
                a += double(d[s]) * double(xc[s]);
                b += double(d[s]);
            }
            sum_dy_x[static_cast<std::size_t>(nc)] = a;
            sum_dy[static_cast<std::size_t>(nc)] = b;
        }, spatial);

        const double inv_m = 1.0 / double(cg * spatial);
        cpu_detail::parallel_for(n * groups, [&](std::int64_t ng) {
            const std::int64_t g = ng % groups;
            const double mu = double(mean[ng]), r = double(rstd[ng]);
            double s1 = 0, s2 = 0;  // Σ γ·dy and Σ γ·dy·x over the group
            for (std::int64_t j = 0; j < cg; ++j) {
                const std::int64_t c = g * cg + j;
                const double w = weight ? double(weight[c]) : 1.0;
                s1 += w * sum_dy[static_cast<std::size_t>(ng * cg + j)];
                s2 += w * sum_dy_x[static_cast<std::size_t>(ng * cg + j)];
            }
            const double mean_g = s1 * inv_m;                        // mean(γ·dy)
            const double mean_gx = r * (s2 - mu * s1) * inv_m;       // mean(γ·dy·x̂)
            const T p = T(-r * r * mean_gx);
            const T q = T(r * (mu * r * mean_gx - mean_g));
            for (std::int64_t j = 0; j < cg; ++j) {
                const std::int64_t c = g * cg + j;
                const T a = T(r * (weight ? double(weight[c]) : 1.0));
                const std::int64_t off = (ng * cg + j) * spatial;
                for (std::int64_t s = 0; s < spatial; ++s) dx[off + s] = a * dy[off + s] + p * x[off + s] + q;
            }
        }, cg * spatial);

        if (!dweight && !dbias) return;
        cpu_detail::parallel_for(channels, [&](std::int64_t c) {
            const std::int64_t g = c / cg;
            double dw = 0, db = 0;
            for (std::int64_t i = 0; i < n; ++i) {
                const auto nc = static_cast<std::size_t>(i * channels + c);
                const double mu = double(mean[i * groups + g]), r = double(rstd[i * groups + g]);
                dw += r * (sum_dy_x[nc] - mu * sum_dy[nc]);
                db += sum_dy[nc];
            }
            if (dweight) dweight[c] += T(dw);
            if (dbias) dbias[c] += T(db);
        }, n);
    }

    /// x (rows, dim) normalized over dim → y; mean, rstd (rows). weight, bias (dim) or null.
    template <class T>
    static void layer_norm_forward(T* y, T* mean, T* rstd, const T* x, const T* weight, const T* bias, std::int64_t rows,
                                   std::int64_t dim, double eps) {
        cpu_detail::parallel_for(rows, [=](std::int64_t i) {
            const T* xr = x + i * dim;
            T* yr = y + i * dim;
            const auto st = cpu_detail::row_moments(xr, dim, eps);
            mean[i] = T(st.mean);
            rstd[i] = T(st.rstd);
            const T mu = T(st.mean), r = T(st.rstd);
            if (weight) {
                for (std::int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] - mu) * r * weight[j] + (bias ? bias[j] : T(0));
            } else {
                for (std::int64_t j = 0; j < dim; ++j) yr[j] = (xr[j] - mu) * r;
            }
        }, dim);
    }

    /// dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂)) per row; dweight += Σ_rows dy·x̂,
    /// dbias += Σ_rows dy (null to skip).
    template <class T>
    static void layer_norm_backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd,
                                    const T* weight, std::int64_t rows, std::int64_t dim) {
        const bool param_grads = dweight || dbias;
        row_chunks(rows, dim, param_grads ? 2 : 0, dweight, dbias, [=](std::int64_t i, double* partial) {
            const T* d = dy + i * dim;
            const T* xr = x + i * dim;
            T* dxr = dx + i * dim;
            const double mu = double(mean[i]), r = double(rstd[i]);
            double s1 = 0, s2 = 0;  // Σ γ·dy, Σ γ·dy·(x − mean)
            // Two loops: a weight test inside one keeps it scalar.
            if (weight) {
#pragma omp simd reduction(+ : s1, s2)
                for (std::int64_t j = 0; j < dim; ++j) {
                    const double g = double(d[j]) * double(weight[j]);
                    s1 += g;
                    s2 += g * (double(xr[j]) - mu);
                }
            } else {
#pragma omp simd reduction(+ : s1, s2)
                for (std::int64_t j = 0; j < dim; ++j) {
                    s1 += double(d[j]);
                    s2 += double(d[j]) * (double(xr[j]) - mu);
                }
            }
            const T mean_g = T(s1 / double(dim)), mean_gx = T(r * s2 / double(dim));
            const T mut = T(mu), rt = T(r);
            for (std::int64_t j = 0; j < dim; ++j) {
                const T xhat = (xr[j] - mut) * rt;
                const T g = weight ? d[j] * weight[j] : d[j];
                dxr[j] = rt * (g - mean_g - xhat * mean_gx);
            }
            if (!partial) return;
            double* pw = partial;
            double* pb = partial + dim;
#pragma omp simd
            for (std::int64_t j = 0; j < dim; ++j) {
                pw[j] += double(d[j]) * ((double(xr[j]) - mu) * r);
                pb[j] += double(d[j]);
            }
        });
    }

    /// y = x·rstd·weight with rstd = 1/sqrt(mean(x²) + eps) per row of (rows, dim).
    template <class T>
    static void rms_norm_forward(T* y, T* rstd, const T* x, const T* weight, std::int64_t rows, std::int64_t dim,
                                 double eps) {
        cpu_detail::parallel_for(rows, [=](std::int64_t i) {
            const T* xr = x + i * dim;
            T* yr = y + i * dim;
            double ss = 0;
#pragma omp simd reduction(+ : ss)
            for (std::int64_t j = 0; j < dim; ++j) ss += double(xr[j]) * double(xr[j]);
            const T r = T(1.0 / std::sqrt(ss / double(dim) + eps));
            rstd[i] = r;
            for (std::int64_t j = 0; j < dim; ++j) yr[j] = xr[j] * r * weight[j];
        }, dim);
    }

    /// dx = rstd·(g − x·rstd²·mean(g·x)) with g = dy·weight; dweight += Σ_rows dy·x·rstd.
    template <class T>
    static void rms_norm_backward(T* dx, T* dweight, const T* dy, const T* x, const T* rstd, const T* weight,
                                  std::int64_t rows, std::int64_t dim) {
        row_chunks(rows, dim, dweight ? 1 : 0, dweight, static_cast<T*>(nullptr), [=](std::int64_t i, double* partial) {
            const T* d = dy + i * dim;
            const T* xr = x + i * dim;
            T* dxr = dx + i * dim;
            const T* w = weight;  // a local: GCC gathers through a captured pointer in a simd loop
            const double r = double(rstd[i]);
            double s = 0;
#pragma omp simd reduction(+ : s)
            for (std::int64_t j = 0; j < dim; ++j) s += double(d[j]) * double(w[j]) * double(xr[j]);
            const T rt = T(r), k = T(r * r * r * s / double(dim));
            for (std::int64_t j = 0; j < dim; ++j) dxr[j] = rt * d[j] * w[j] - k * xr[j];
            if (!partial) return;
#pragma omp simd
            for (std::int64_t j = 0; j < dim; ++j) partial[j] += double(d[j]) * double(xr[j]) * r;
        });
    }

private:
    /// Runs row_body(i, partial) for every row, in parallel over fixed chunks of rows; each chunk
    /// has `vectors` zeroed partial vectors of length dim (laid out back to back), which are then
    /// summed over chunks in order and added to out0 (and out1 when vectors == 2).
    template <class T, class RowBody>
    static void row_chunks(std::int64_t rows, std::int64_t dim, int vectors, T* out0, T* out1, RowBody&& row_body) {
        const std::int64_t chunks = std::max<std::int64_t>(1, std::min(rows, cpu_detail::reduction_chunks));
        const std::int64_t per_chunk = (rows + chunks - 1) / chunks;
        const std::int64_t width = vectors * dim;
        std::vector<double> partials(static_cast<std::size_t>(chunks * width), 0.0);
        cpu_detail::parallel_for(chunks, [&](std::int64_t ch) {
            double* partial = width ? partials.data() + ch * width : nullptr;
            const std::int64_t end = std::min(rows, (ch + 1) * per_chunk);
            for (std::int64_t i = ch * per_chunk; i < end; ++i) row_body(i, partial);
        }, per_chunk * dim);
        if (!width) return;
        cpu_detail::parallel_for(width, [&](std::int64_t j) {
            double s = 0;
            for (std::int64_t ch = 0; ch < chunks; ++ch) s += partials[static_cast<std::size_t>(ch * width + j)];
            T* out = j < dim ? out0 : out1;
            if (out) out[j % dim] += T(s);
        }, chunks);
    }
};

} // namespace vediff
