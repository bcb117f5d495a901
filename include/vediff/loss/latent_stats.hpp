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
        ops::merge_moments(moments_, ops::channel_moments(z), fmt::format("latent_statistics: z {}", z.shape()));
        sigma2_sum_ += ops::exp_sum(logvar);
        elements_ += logvar.numel();
    }

    latent_statistics result() const {
        latent_statistics s;
        s.sigma2_mean = elements_ > 0 ? sigma2_sum_ / double(elements_) : 0.0;
        const auto n = moments_.count;
        s.channel_mean = moments_.mean;
        s.channel_std.resize(moments_.m2.size());
        for (std::size_t c = 0; c < moments_.m2.size(); ++c) s.channel_std[c] = n > 1 ? std::sqrt(moments_.m2[c] / double(n - 1)) : 0.0;
        s.elements = elements_;
        s.per_channel = n;
        return s;
    }

    void reset() { *this = latent_statistics_accumulator{}; }

private:
    double sigma2_sum_ = 0;
    std::int64_t elements_ = 0;
    ops::channel_moments_result moments_;  // of z, per channel, so far
};

/// The statistics of one batch.
template <class T, device D>
latent_statistics summarize_latents(const tensor_view<T, D>& logvar, const tensor_view<T, D>& z) {
    latent_statistics_accumulator acc;
    acc.add(logvar, z);
    return acc.result();
}

} // namespace vediff::loss
