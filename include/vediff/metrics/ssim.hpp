#pragma once
// Structural similarity (Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
// visibility to structural similarity", IEEE TIP 2004) with their Gaussian window: 11×11 taps,
// σ 1.5, normalized to sum 1; K1 = 0.01, K2 = 0.03, C1 = (K1·R)², C2 = (K2·R)², R the data range;
// local moments are population moments (Wang et al. and torchmetrics; skimage with
// use_sample_covariance=False). For each channel of an image,
//   SSIM = mean over window positions of (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
// and an image's SSIM is the mean over its channels; the batch value is the mean over images.
// Only 'valid' window positions count (the window lies inside the image: an (H − 10) × (W − 10)
// map), which is what skimage's structural_similarity(gaussian_weights=True) and torchmetrics'
// SSIM average after cropping their padded borders; images need H, W ≥ 11.
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::metrics {

struct ssim_options {
    double data_range = 2.0;  // hi − lo of the pixel values: 2 for [−1, 1], 1 for [0, 1]
    int window = 11;          // odd side of the Gaussian window
    double sigma = 1.5;
    double k1 = 0.01;
    double k2 = 0.03;
};

/// The 1-D Gaussian taps whose outer product is the window (normalized to sum 1).
inline std::vector<double> ssim_gaussian_taps(int window, double sigma) {
    std::vector<double> g(static_cast<std::size_t>(window));
    const double r = (window - 1) / 2.0;
    for (int i = 0; i < window; ++i) g[static_cast<std::size_t>(i)] = std::exp(-(i - r) * (i - r) / (2 * sigma * sigma));
    const double s = std::accumulate(g.begin(), g.end(), 0.0);
    for (auto& v : g) v /= s;
    return g;
}

/// SSIM of each image of x against y, both (N, C, H, W), computed on the host in double.
template <class T, device D>
std::vector<double> ssim_per_image(const tensor_view<T, D>& x, const tensor_view<T, D>& y, const ssim_options& opt = {}) {
    require_same_shape("ssim", x, y);
    require_rank("ssim", x, 4);
    if (opt.window < 1 || opt.window % 2 == 0 || !(opt.sigma > 0) || !(opt.data_range > 0))
        throw std::invalid_argument(fmt::format("ssim: window {} must be odd and positive, sigma {} and data range {} positive", opt.window,
                                                opt.sigma, opt.data_range));
    const std::int64_t n = x.dim(0), channels = x.dim(1), h = x.dim(2), w = x.dim(3), k = opt.window;
    if (n < 1 || channels < 1 || h < k || w < k)
        throw shape_error(fmt::format("ssim: images of shape {} are smaller than the {}×{} window (or the batch is empty)", x.shape(), k, k));
    const auto taps = ssim_gaussian_taps(opt.window, opt.sigma);
    const double c1 = (opt.k1 * opt.data_range) * (opt.k1 * opt.data_range);
    const double c2 = (opt.k2 * opt.data_range) * (opt.k2 * opt.data_range);
    const std::int64_t oh = h - k + 1, ow = w - k + 1;

    // Metrics are host work: the values are copied to the host, whatever the device.
    const auto a = x.to_vector(), b = y.to_vector();
    std::vector<double> plane_mean(static_cast<std::size_t>(n * channels));
    cpu_detail::parallel_for(n * channels, [&](std::int64_t p) {
        const T* px = a.data() + p * h * w;
        const T* py = b.data() + p * h * w;
        // The window is separable: filter rows (h × ow), then columns (oh × ow), for the five
        // moment maps x, y, x², y², xy at once.
        std::vector<double> rows(static_cast<std::size_t>(5 * h * ow));
        for (std::int64_t r = 0; r < h; ++r)
            for (std::int64_t c = 0; c < ow; ++c) {
                double s[5] = {0, 0, 0, 0, 0};
                for (std::int64_t t = 0; t < k; ++t) {
                    const double g = taps[static_cast<std::size_t>(t)];
                    const double u = double(px[r * w + c + t]), v = double(py[r * w + c + t]);
                    s[0] += g * u;
                    s[1] += g * v;
                    s[2] += g * u * u;
                    s[3] += g * v * v;
                    s[4] += g * u * v;
                }
                for (int m = 0; m < 5; ++m) rows[static_cast<std::size_t>((m * h + r) * ow + c)] = s[m];
            }
        double total = 0;
        for (std::int64_t r = 0; r < oh; ++r)
            for (std::int64_t c = 0; c < ow; ++c) {
                double s[5] = {0, 0, 0, 0, 0};
                for (std::int64_t t = 0; t < k; ++t)
                    for (int m = 0; m < 5; ++m) s[m] += taps[static_cast<std::size_t>(t)] * rows[static_cast<std::size_t>((m * h + r + t) * ow + c)];
                const double mx = s[0], my = s[1];
                const double vx = s[2] - mx * mx, vy = s[3] - my * my, cxy = s[4] - mx * my;
                total += (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
            }
        plane_mean[static_cast<std::size_t>(p)] = total / static_cast<double>(oh * ow);
    }, h * w * k * 10);

    std::vector<double> out(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (std::int64_t c = 0; c < channels; ++c) s += plane_mean[static_cast<std::size_t>(i * channels + c)];
        out[static_cast<std::size_t>(i)] = s / static_cast<double>(channels);
    }
    return out;
}

/// Mean over the batch of the per-image SSIM.
template <class T, device D>
double ssim(const tensor_view<T, D>& x, const tensor_view<T, D>& y, const ssim_options& opt = {}) {
    const auto v = ssim_per_image(x, y, opt);
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

} // namespace vediff::metrics
