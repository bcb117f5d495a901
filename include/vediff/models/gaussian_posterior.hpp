#pragma once
// The diagonal Gaussian posterior q(z | x) = N(mean, exp(logvar)) of the LDM AutoencoderKL
// (DiagonalGaussianDistribution): the encoder's moments split into [mean | logvar] channels,
// logvar clamped to [−30, 20] (so σ = exp(logvar/2) neither underflows nor overflows), and the
// reparameterized sample z = mean + σ·ε, ε ~ N(0, 1) from a Philox generator.
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/core/error.hpp"

#include "vediff/core/random.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/posterior.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::models {

template <class T = float, device D = cpu>
struct gaussian_posterior {
    static constexpr double logvar_min = -30.0;
    static constexpr double logvar_max = 20.0;

    tensor<T, D> mean;    // (B, C, h, w)
    tensor<T, D> logvar;  // (B, C, h, w), after the clamp

    /// moments (B, 2C, h, w): channels [0, C) the mean, [C, 2C) the log-variance.
    static gaussian_posterior from_moments(const tensor_view<T, D>& moments) {
        auto m = ops::split_gaussian_moments(moments, logvar_min, logvar_max);
        gaussian_posterior p;
        p.mean = std::move(m.mean);
        p.logvar = std::move(m.logvar);
        p.raw_logvar_ = std::move(m.raw_logvar);
        return p;
    }

    /// z = mean + exp(logvar/2)·ε with ε drawn by ops::fill_normal from gen (which advances); ε is
    /// kept for sample_backward.
    tensor<T, D> sample(philox_generator& gen) {
        eps_ = tensor<T, D>(mean.shape());
        ops::fill_normal(eps_.view(), gen);
        return ops::gaussian_sample(mean.view(), logvar.view(), eps_.view());
    }

    /// The distribution's mode (and mean), as a new tensor.
    tensor<T, D> mode() const { return tensor<T, D>::copy_of(mean); }

    /// Replaces the encoder's log-variance by a fixed one (σ-VAE, models/sigma_vae_noise.hpp): the
    /// next sample() draws with it, sample_backward() then adds nothing to dlogvar, and
    /// moments_backward() gives the encoder's logvar channels a zero gradient.
    void fix_variance(tensor<T, D> fixed_logvar) {
        if (!(fixed_logvar.shape() == mean.shape()))
            throw shape_error(fmt::format("gaussian_posterior::fix_variance: logvar {} for a mean of {}", fixed_logvar.shape(), mean.shape()));
        logvar = std::move(fixed_logvar);
        variance_fixed_ = true;
    }
    bool variance_fixed() const { return variance_fixed_; }

    /// The ε of the last sample() (empty before the first).
    const tensor<T, D>& noise() const { return eps_; }

    /// Backward of sample(): ADDS dz into dmean and dz·ε·σ/2 into dlogvar (so a loss's own
    /// gradients with respect to mean and logvar may already be there).
    void sample_backward(const tensor_view<T, D>& dz, const tensor_view<T, D>& dmean, const tensor_view<T, D>& dlogvar) const {
        if (!eps_.defined()) throw std::logic_error("gaussian_posterior::sample_backward: sample() has not been called");
        if (variance_fixed_) ops::axpy(dmean, dz);  // σ is no function of the encoder
        else ops::gaussian_sample_backward(dz, logvar.view(), eps_.view(), dmean, dlogvar);
    }

    /// dmoments (B, 2C, h, w) = [dmean | dlogvar], the latter zero where the clamp was active.
    tensor<T, D> moments_backward(const tensor_view<T, D>& dmean, const tensor_view<T, D>& dlogvar) const {
        if (variance_fixed_) {
            const tensor<T, D> none = tensor<T, D>::zeros(dlogvar.shape());
            return ops::split_gaussian_moments_backward(dmean, none.view(), raw_logvar_.view(), logvar_min, logvar_max);
        }
        return ops::split_gaussian_moments_backward(dmean, dlogvar, raw_logvar_.view(), logvar_min, logvar_max);
    }

private:
    tensor<T, D> raw_logvar_;  // (B, C, h, w), before the clamp
    tensor<T, D> eps_;         // (B, C, h, w), ε of the last sample()
    bool variance_fixed_ = false;
};

} // namespace vediff::models
