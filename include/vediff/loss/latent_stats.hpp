#pragma once
// Statistics of the latents a tokenizer produces: the mean posterior variance (the paper's σ²,
// which collapses towards 1e-8 under KL(1e-6) and stays near 0.06 under VE) and the per-channel
// mean and standard deviation of the sampled z (what a diffusion model's latent normalization
// divides by). The accumulator merges batches exactly (Chan et al.'s pairwise update of the
// per-channel mean and sum of squared deviations), so a test-set figure does not depend on how
// the set was batched.
#include <cmath>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

struct latent_statistics {
    double sigma2_mean = 0;            // mean of σ² = exp(logvar) over every latent element
    std::vector<double> channel_mean;  // (C) mean of z over the batch and every position
    std::vector<double> channel_std;   // (C) std of z, unbiased (n − 1) as torch.std; 0 for n < 2
    std::int64_t elements = 0;         // latent elements behind sigma2_mean
    std::int64_t per_channel = 0;      // values behind each channel's mean and std
};

class latent_statistics_accumulator {
public:
    /// Adds a batch: logvar and z of the same shape (B, C, ...).
    template <class T, device D>
    void add(const tensor_view<T, D>& logvar, const tensor_view<T, D>& z) {
        if (!(logvar.shape() == z.shape()) || z.rank() < 2)
            throw shape_error(fmt::format("latent_statistics: logvar {} and z {} must share one (B, C, ...) shape",
                                          logvar.shape(), z.shape()));
        const auto m = ops::channel_moments(z);
        if (count_ > 0 && m.mean.size() != mean_.size())
            throw shape_error(fmt::format("latent_statistics: z {} has {} channels, earlier batches {}", z.shape(),
                                          m.mean.size(), mean_.size()));
        sigma2_sum_ += ops::exp_sum(logvar);
        elements_ += logvar.numel();
        if (count_ == 0) {
            count_ = m.count;
            mean_ = m.mean;
            m2_ = m.m2;
            return;
        }
        const double na = double(count_), nb = double(m.count), n = na + nb;
        for (std::size_t c = 0; c < mean_.size(); ++c) {
            const double delta = m.mean[c] - mean_[c];
            mean_[c] += delta * nb / n;
            m2_[c] += m.m2[c] + delta * delta * na * nb / n;
        }
        count_ += m.count;
    }

    latent_statistics result() const {
        latent_statistics s;
        s.sigma2_mean = elements_ > 0 ? sigma2_sum_ / double(elements_) : 0.0;
        s.channel_mean = mean_;
        s.channel_std.resize(m2_.size());
        for (std::size_t c = 0; c < m2_.size(); ++c) s.channel_std[c] = count_ > 1 ? std::sqrt(m2_[c] / double(count_ - 1)) : 0.0;
        s.elements = elements_;
        s.per_channel = count_;
        return s;
    }

    void reset() { *this = latent_statistics_accumulator{}; }

private:
    double sigma2_sum_ = 0;
    std::int64_t elements_ = 0;
    std::int64_t count_ = 0;        // values per channel so far
    std::vector<double> mean_, m2_; // (C)
};

/// The statistics of one batch.
template <class T, device D>
latent_statistics summarize_latents(const tensor_view<T, D>& logvar, const tensor_view<T, D>& z) {
    latent_statistics_accumulator acc;
    acc.add(logvar, z);
    return acc.result();
}

} // namespace vediff::loss
