#pragma once
// Peak signal-to-noise ratio, PSNR = 10·log10(R² / MSE) dB with R the data range (hi − lo of the
// pixel values: 2 for [−1, 1], 1 for [0, 1]), computed per image and averaged over the batch.
// Identical images have MSE 0 and PSNR +inf (no cap: a cap would hide a perfect reconstruction
// and bias the average); one such image makes the batch mean +inf as well.
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::metrics {

namespace detail {
template <class A>
void require_batch(const char* op, const A& x, const A& y) {
    require_same_shape(op, x, y);
    if (x.rank() < 2 || x.dim(0) < 1 || x.numel() == 0)
        throw shape_error(fmt::format("{}: need a non-empty batch (N, ...) of images, got shape {}", op, x.shape()));
}
} // namespace detail

/// Mean squared error of each image (the first axis indexes images), accumulated in double.
template <class T, device D>
std::vector<double> mse_per_image(const tensor_view<T, D>& x, const tensor_view<T, D>& y) {
    detail::require_batch("mse_per_image", x, y);
    // Metrics are host work: the values are copied to the host, whatever the device.
    const auto a = x.to_vector(), b = y.to_vector();
    const std::int64_t n = x.dim(0), per_image = x.numel() / n;
    std::vector<double> out(static_cast<std::size_t>(n));
    cpu_detail::parallel_for(n, [&](std::int64_t i) {
        double s = 0;
        for (std::int64_t k = i * per_image; k < (i + 1) * per_image; ++k) {
            const double d = double(a[static_cast<std::size_t>(k)]) - double(b[static_cast<std::size_t>(k)]);
            s += d * d;
        }
        out[static_cast<std::size_t>(i)] = s / static_cast<double>(per_image);
    }, per_image);
    return out;
}

/// PSNR in dB of a mean squared error for data range R; +inf for mse 0.
inline double psnr_from_mse(double mse, double data_range = 2.0) {
    if (!(data_range > 0)) throw std::invalid_argument(fmt::format("psnr: data range {} is not positive", data_range));
    if (mse == 0) return std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(data_range * data_range / mse);
}

/// PSNR of each image of x against y (same shape (N, ...)), in dB.
template <class T, device D>
std::vector<double> psnr_per_image(const tensor_view<T, D>& x, const tensor_view<T, D>& y, double data_range = 2.0) {
    auto v = mse_per_image(x, y);
    for (auto& e : v) e = psnr_from_mse(e, data_range);
    return v;
}

/// Mean over the batch of the per-image PSNR, in dB.
template <class T, device D>
double psnr(const tensor_view<T, D>& x, const tensor_view<T, D>& y, double data_range = 2.0) {
    const auto v = psnr_per_image(x, y, data_range);
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

} // namespace vediff::metrics
