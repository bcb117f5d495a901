#pragma once
// Sampling robustness of a tokenizer's decoder: how much the decoded image moves when its latent
// is perturbed on the scale of the latent distribution, as a diffusion model's sampling error
// would perturb it. For each scale s,
//     robustness(s) = mean over the N latents of PSNR(decode(z), decode(z + s·std_c·ε)),
// ε ~ N(0, I), std_c the per-channel standard deviation of the latents (what a diffusion model's
// latent normalization divides by), images in [−1, 1] (data range 2). A decoder whose output is
// robust to latent noise keeps a high PSNR as s grows.
//
// One ε per latent serves every scale (common random numbers: the curve over s is not blurred by
// fresh noise at each point), and each latent's ε is reserved up front (per_sample_draws), so the
// values do not depend on the batch size. s = 0 compares decode(z) with itself: PSNR +inf, as
// metrics/psnr.hpp reports identical images, for a deterministic decoder. The decodes run under
// nn::no_grad: the decoder keeps no activations and no views of the loop-local perturbed latents.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "vediff/core/tensor.hpp"
#include "vediff/metrics/per_sample_draws.hpp"
#include "vediff/metrics/psnr.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::metrics {

struct robustness_options {
    std::vector<double> scales = {0.05, 0.1, 0.2, 0.5};  // s, in units of each channel's std
    std::int64_t batch_size = 32;                        // latents decoded at once
    double data_range = 2.0;                             // images in [−1, 1]
};

/// decode: a callable latents view (B, C, H, W) → images tensor<T, D>. Returns the mean PSNR in dB
/// for each of opt.scales. Advances gen by one N(0, I) draw per latent element.
template <class Decoder, class T, device D>
std::vector<double> sampling_robustness(Decoder&& decode, const tensor_view<T, D>& latents, std::span<const double> channel_std,
                                        philox_generator& gen, const robustness_options& opt = {}) {
    if (latents.rank() != 4 || latents.dim(0) < 1 || latents.numel() == 0)
        throw shape_error(fmt::format("sampling_robustness: latents must be a non-empty (N, C, H, W) batch, got shape {}", latents.shape()));
    const std::int64_t n = latents.dim(0), channels = latents.dim(1);
    if (static_cast<std::int64_t>(channel_std.size()) != channels)
        throw shape_error(fmt::format("sampling_robustness: {} channel stds for latents {} of {} channels", channel_std.size(),
                                      latents.shape(), channels));
    for (double s : channel_std)
        if (!(s >= 0 && std::isfinite(s)))
            throw std::invalid_argument(fmt::format("sampling_robustness: channel stds {} must be finite and non-negative", channel_std));
    for (double s : opt.scales)
        if (!(s >= 0 && std::isfinite(s)))
            throw std::invalid_argument(fmt::format("sampling_robustness: scales {} must be finite and non-negative", opt.scales));
    if (opt.batch_size < 1) throw std::invalid_argument(fmt::format("sampling_robustness: batch size {} is not positive", opt.batch_size));

    const nn::no_grad inference;
    std::vector<T> std_host(channel_std.begin(), channel_std.end());
    const auto std_c = tensor<T, D>::from_host({1, channels, 1, 1}, std::span<const T>(std_host));
    const per_sample_draws noise(gen, n, latents.numel() / n);
    std::vector<double> psnr_sum(opt.scales.size(), 0.0);
    for (std::int64_t first = 0; first < n; first += opt.batch_size) {
        const std::int64_t last = std::min(n, first + opt.batch_size);
        const auto z = latents.slice(first, last);
        tensor<T, D> eps(z.shape());
        for (std::int64_t i = first; i < last; ++i) {
            auto g = noise(i);
            ops::fill_normal(eps[i - first], g);
        }
        const auto step = ops::mul_broadcast(eps.view(), std_c.view());  // std_c·ε
        const tensor<T, D> clean = decode(z);
        for (std::size_t k = 0; k < opt.scales.size(); ++k) {
            auto perturbed = tensor<T, D>::copy_of(z);
            ops::axpy(perturbed.view(), step.view(), static_cast<T>(opt.scales[k]));
            const tensor<T, D> moved = decode(perturbed.view());
            for (double p : psnr_per_image(clean.view(), moved.view(), opt.data_range)) psnr_sum[k] += p;
        }
    }
    for (auto& s : psnr_sum) s /= double(n);
    return psnr_sum;
}

} // namespace vediff::metrics
