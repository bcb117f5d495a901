#pragma once
// cpu kernels of batch normalization (ops/batch_norm.hpp): the evaluation-mode fold into a
// per-channel affine map, and the training-mode statistics, normalization and backward over
// (N, C, inner) with inner = H·W. Sums are taken in double, channel by channel in parallel.
#include <cmath>
#include <cstdint>

#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct batch_norm_kernels<cpu> {
    /// scale = weight / √(var + eps), shift = bias − mean·scale, in double; returns the first
    /// channel whose var + eps is not a positive number or whose values are not finite, else −1.
    template <class T>
    static std::int64_t fold(T* scale, T* shift, const T* weight, const T* bias, const T* mean, const T* var, double eps,
                             std::int64_t channels) {
        for (std::int64_t c = 0; c < channels; ++c) {
            const double denominator = double(var[c]) + eps;
            if (!(denominator > 0) || !std::isfinite(denominator) || !std::isfinite(double(weight[c])) ||
                !std::isfinite(double(bias[c])) || !std::isfinite(double(mean[c])))
                return c;
            const double s = double(weight[c]) / std::sqrt(denominator);
            scale[c] = static_cast<T>(s);
            shift[c] = static_cast<T>(double(bias[c]) - double(mean[c]) * s);
        }
        return -1;
    }

    /// Per channel over (N, inner): mean, biased variance (the normalization's) and 1/√(var + eps).
    template <class T>
    static void statistics(T* mean, T* var, T* rstd, const T* x, std::int64_t n, std::int64_t channels, std::int64_t inner, double eps) {
        const double count = double(n * inner);
#pragma omp parallel for schedule(static)
        for (std::int64_t c = 0; c < channels; ++c) {
            double sum = 0;
            for (std::int64_t b = 0; b < n; ++b) {
                const T* row = x + (b * channels + c) * inner;
                for (std::int64_t i = 0; i < inner; ++i) sum += double(row[i]);
            }
            const double m = sum / count;
            double squares = 0;
            for (std::int64_t b = 0; b < n; ++b) {
                const T* row = x + (b * channels + c) * inner;
                for (std::int64_t i = 0; i < inner; ++i) squares += (double(row[i]) - m) * (double(row[i]) - m);
            }
            const double v = squares / count;
            mean[c] = static_cast<T>(m);
            var[c] = static_cast<T>(v);
            rstd[c] = static_cast<T>(1.0 / std::sqrt(v + eps));
        }
    }

    /// rstd = 1/√(var + eps) per channel (evaluation mode: from the running variance).
    template <class T>
    static void inverse_std(T* rstd, const T* var, std::int64_t channels, double eps) {
        for (std::int64_t c = 0; c < channels; ++c) rstd[c] = static_cast<T>(1.0 / std::sqrt(double(var[c]) + eps));
    }

    /// y = (x − mean)·rstd·weight + bias per channel.
    template <class T>
    static void normalize(T* y, const T* x, const T* mean, const T* rstd, const T* weight, const T* bias, std::int64_t n,
                          std::int64_t channels, std::int64_t inner) {
#pragma omp parallel for collapse(2) schedule(static)
        for (std::int64_t b = 0; b < n; ++b)
            for (std::int64_t c = 0; c < channels; ++c) {
                const T scale = rstd[c] * weight[c], shift = bias[c] - mean[c] * scale;
                const T* in = x + (b * channels + c) * inner;
                T* out = y + (b * channels + c) * inner;
                for (std::int64_t i = 0; i < inner; ++i) out[i] = in[i] * scale + shift;
            }
    }

    /// dweight += Σ dy·x̂, dbias += Σ dy (x̂ = (x − mean)·rstd); dx of the normalization: with
    /// batch statistics (training), dx = weight·rstd·(dy − mean(dy) − x̂·mean(dy·x̂)); with fixed
    /// statistics (evaluation), dx = weight·rstd·dy.
    template <class T>
    static void backward(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* rstd, const T* weight,
                         std::int64_t n, std::int64_t channels, std::int64_t inner, bool batch_statistics) {
        const double count = double(n * inner);
#pragma omp parallel for schedule(static)
        for (std::int64_t c = 0; c < channels; ++c) {
            double sum_dy = 0, sum_dy_xhat = 0;
            const double m = double(mean[c]), r = double(rstd[c]);
            for (std::int64_t b = 0; b < n; ++b) {
                const T* g = dy + (b * channels + c) * inner;
                const T* in = x + (b * channels + c) * inner;
                for (std::int64_t i = 0; i < inner; ++i) {
                    sum_dy += double(g[i]);
                    sum_dy_xhat += double(g[i]) * (double(in[i]) - m) * r;
                }
            }
            dweight[c] += static_cast<T>(sum_dy_xhat);
            dbias[c] += static_cast<T>(sum_dy);
            const double k = double(weight[c]) * r;
            const double mean_dy = batch_statistics ? sum_dy / count : 0.0;
            const double mean_dy_xhat = batch_statistics ? sum_dy_xhat / count : 0.0;
            for (std::int64_t b = 0; b < n; ++b) {
                const T* g = dy + (b * channels + c) * inner;
                const T* in = x + (b * channels + c) * inner;
                T* out = dx + (b * channels + c) * inner;
                for (std::int64_t i = 0; i < inner; ++i)
                    out[i] = static_cast<T>(k * (double(g[i]) - mean_dy - (double(in[i]) - m) * r * mean_dy_xhat));
            }
        }
    }

    /// running = (1 − momentum)·running + momentum·batch, with the batch variance made unbiased
    /// (× count / (count − 1)), as torch.nn.BatchNorm2d does.
    template <class T>
    static void update_running(T* running_mean, T* running_var, const T* mean, const T* var, std::int64_t channels, double momentum,
                               std::int64_t count) {
        const double unbias = count > 1 ? double(count) / double(count - 1) : 1.0;
        for (std::int64_t c = 0; c < channels; ++c) {
            running_mean[c] = static_cast<T>((1 - momentum) * double(running_mean[c]) + momentum * double(mean[c]));
            running_var[c] = static_cast<T>((1 - momentum) * double(running_var[c]) + momentum * double(var[c]) * unbias);
        }
    }
};

} // namespace vediff
