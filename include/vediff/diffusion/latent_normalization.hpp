#pragma once
// Channel-wise latent normalization (LightningDiT's `latent_norm`): a diffusion model is trained
// on z_n = (z − μ)/σ, with μ and σ each channel's mean and unbiased (n − 1, as torch.std) standard
// deviation over the training latents, and its samples are mapped back by z = z_n·σ + μ before
// the tokenizer decodes them. Forgetting either direction is the most reported LightningDiT
// mistake (FID 130 instead of 40), hence one object owning both.
//
// The statistics are accumulated in double: ops::channel_moments gives each batch's per-channel
// mean and sum of squared deviations, and ops::merge_moments merges batches exactly, so the
// result does not depend on how the latents were batched.
//
// Stored as two (C) tensors named "latent_mean" and "latent_std" (for_each_tensor).
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::diffusion {

/// Per-channel mean and unbiased variance of latents (N, C, ...) added batch by batch, in double.
class latent_moments {
public:
    template <class T, device D>
    void add(const tensor_view<T, D>& z) {
        if (z.rank() < 2) throw shape_error(fmt::format("latent_moments: latents must be (N, C, ...), got shape {}", z.shape()));
        ops::merge_moments(moments_, ops::channel_moments(z), fmt::format("latent_moments: latents {}", z.shape()));
    }

    std::int64_t count() const { return moments_.count; }  // values per channel
    const std::vector<double>& mean() const { return moments_.mean; }
    /// Unbiased standard deviation per channel; needs at least two values per channel.
    std::vector<double> stddev() const {
        const auto n = moments_.count;
        if (n < 2) throw std::invalid_argument(fmt::format("latent_moments: {} values per channel, need at least 2", n));
        std::vector<double> s(moments_.m2.size());
        for (std::size_t c = 0; c < s.size(); ++c) s[c] = std::sqrt(moments_.m2[c] / double(n - 1));
        return s;
    }

private:
    ops::channel_moments_result moments_;
};

/// How a diffusion model's latents are scaled, as the field stores it:
///   channel  LightningDiT / VA-VAE: z_n = (z − μ_c)/σ_c per channel (the cache's statistics)
///   scalar   Stable Diffusion: z_n = z·scaling_factor, scaling_factor = 1/σ with σ the std of all
///            latent elements (around their overall mean, unbiased), and no shift
enum class latent_scaling { channel, scalar };

inline latent_scaling parse_latent_scaling(std::string_view s) {
    if (s == "channel") return latent_scaling::channel;
    if (s == "scalar") return latent_scaling::scalar;
    throw std::invalid_argument(fmt::format("unknown latent scaling '{}' (expected channel or scalar)", s));
}

/// The std of all latent elements from each channel's mean and unbiased std over `count` values
/// per channel (exactly: the pooled sum of squares about the overall mean, divided by C·count − 1).
inline double pooled_stddev(std::span<const double> channel_mean, std::span<const double> channel_std, std::int64_t count) {
    if (channel_mean.size() != channel_std.size() || channel_mean.empty() || count < 2)
        throw std::invalid_argument(fmt::format("pooled_stddev: {} means, {} stds, {} values per channel", channel_mean.size(),
                                                channel_std.size(), count));
    const double n = double(count), c = double(channel_mean.size());
    double overall = 0;
    for (const double m : channel_mean) overall += m / c;
    double squares = 0;
    for (std::size_t k = 0; k < channel_mean.size(); ++k)
        squares += (n - 1) * channel_std[k] * channel_std[k] + n * (channel_mean[k] - overall) * (channel_mean[k] - overall);
    return std::sqrt(squares / (c * n - 1));
}

/// The mean and std vectors (C) a latent_normalization takes for the chosen scaling: the channel
/// statistics as they are, or zeros and the pooled std in every channel (SD's scaling_factor).
inline std::pair<std::vector<double>, std::vector<double>> scaling_statistics(latent_scaling scaling, const std::vector<double>& channel_mean,
                                                                              const std::vector<double>& channel_std, std::int64_t count) {
    if (scaling == latent_scaling::channel) return {channel_mean, channel_std};
    const double s = pooled_stddev(channel_mean, channel_std, count);
    return {std::vector<double>(channel_mean.size(), 0.0), std::vector<double>(channel_mean.size(), s)};
}

template <class T = float, device D = cpu>
class latent_normalization {
public:
    static constexpr const char* mean_name = "latent_mean";
    static constexpr const char* std_name = "latent_std";

    /// From statistics: mean and std (C) on the host; every std must be > 0.
    latent_normalization(std::span<const double> mean, std::span<const double> stddev) {
        if (mean.size() != stddev.size() || mean.empty())
            throw shape_error(fmt::format("latent_normalization: {} means and {} standard deviations", mean.size(), stddev.size()));
        std::vector<T> m(mean.size()), s(mean.size());
        for (std::size_t c = 0; c < mean.size(); ++c) {
            if (!(stddev[c] > 0) || !std::isfinite(stddev[c]) || !std::isfinite(mean[c]))
                throw std::invalid_argument(fmt::format("latent_normalization: channel {} has mean {} and std {}", c, mean[c], stddev[c]));
            m[c] = T(mean[c]);
            s[c] = T(stddev[c]);
        }
        const tensor_shape shape{static_cast<std::int64_t>(m.size())};
        mean_ = tensor<T, D>::from_host(shape, std::span<const T>(m));
        std_ = tensor<T, D>::from_host(shape, std::span<const T>(s));
        refresh();
    }
    /// From accumulated moments.
    explicit latent_normalization(const latent_moments& m) : latent_normalization(m.mean(), m.stddev()) {}
    /// From saved tensors "latent_mean" and "latent_std", each (C).
    latent_normalization(const tensor_view<T, D>& mean, const tensor_view<T, D>& stddev) {
        if (mean.rank() != 1 || !(mean.shape() == stddev.shape()))
            throw shape_error(fmt::format("latent_normalization: mean {} and std {} must both be (C)", mean.shape(), stddev.shape()));
        const auto m = mean.to_vector(), s = stddev.to_vector();
        *this = latent_normalization(std::vector<double>(m.begin(), m.end()), std::vector<double>(s.begin(), s.end()));
    }

    /// The statistics of one tensor of latents (N, C, ...).
    static latent_normalization fit(const tensor_view<T, D>& latents) {
        latent_moments m;
        m.add(latents);
        return latent_normalization(m);
    }

    /// (z − μ)/σ per channel, z (N, C, ...).
    tensor<T, D> normalize(const tensor_view<T, D>& z) const {
        const auto s = channel_shape("normalize", z);
        auto centered = ops::add_broadcast(z, neg_mean_.reshape(s));
        return ops::mul_broadcast(centered.view(), inv_std_.reshape(s));
    }
    /// z·σ + μ per channel: the inverse, applied to samples before decoding.
    tensor<T, D> denormalize(const tensor_view<T, D>& z) const {
        const auto s = channel_shape("denormalize", z);
        auto scaled = ops::mul_broadcast(z, std_.reshape(s));
        return ops::add_broadcast(scaled.view(), mean_.reshape(s));
    }

    std::int64_t channels() const { return mean_.dim(0); }
    const tensor<T, D>& mean() const { return mean_; }
    const tensor<T, D>& stddev() const { return std_; }

    /// Visits ("latent_mean", mean) and ("latent_std", std), the names they are saved under.
    template <class F>
    void for_each_tensor(F&& f) const {
        f(std::string(mean_name), mean_);
        f(std::string(std_name), std_);
    }

private:
    void refresh() {
        neg_mean_ = ops::scale(mean_.view(), T(-1));
        auto host = std_.to_vector();
        for (auto& v : host) v = T(1) / v;
        inv_std_ = tensor<T, D>::from_host(std_.shape(), std::span<const T>(host));
    }
    /// (1, C, 1, ...) of z's rank, after checking z's channels against the statistics'.
    tensor_shape channel_shape(const char* op, const tensor_view<T, D>& z) const {
        if (z.rank() < 2 || z.dim(1) != channels())
            throw shape_error(fmt::format("latent_normalization::{}: latents of shape {} do not have the {} channels of the "
                                          "statistics of shape {}", op, z.shape(), channels(), mean_.shape()));
        tensor_shape s{1, channels()};
        for (int a = 2; a < z.rank(); ++a) s.push_back(1);
        return s;
    }

    tensor<T, D> mean_, std_;          // (C)
    tensor<T, D> neg_mean_, inv_std_;  // (C): −μ and 1/σ, so normalize is an add and a multiply
};

} // namespace vediff::diffusion
