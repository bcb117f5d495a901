#pragma once
// KL divergence of the posterior N(μ, σ²) from N(0, 1): β · Σ ½(μ² + σ² − 1 − log σ²) over the
// latent elements of an image, averaged over the batch, as LDM's DiagonalGaussianDistribution.kl()
// with VA-VAE's weighting. β = 1e-6 is the LDM / VA-VAE setting, the one under which the paper
// finds the posterior variance collapsing (σ² ≈ 1e-8).
#include <string_view>

#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

struct kl_divergence {
    struct config {
        double weight = 1e-6;  // β
    };
    static constexpr std::string_view name = "kl";

    config cfg{};

    kl_divergence() = default;
    explicit kl_divergence(const config& c) : cfg(c) {}

    /// Adds β·μ/divisor into grads.dmean and β·½(σ² − 1)/divisor into grads.dlogvar; returns its value.
    template <class T, device D>
    double accumulate(const tokenizer_outputs<T, D>& out, tokenizer_gradients<T, D>& grads, reduction mode) const {
        const double scale = cfg.weight / reduction_divisor(name, mode, out.mean.shape());
        return scale * ops::gaussian_kl_sum(out.mean, out.logvar, grads.dmean, grads.dlogvar, scale);
    }
};

} // namespace vediff::loss
