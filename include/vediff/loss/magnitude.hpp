#pragma once
// Magnitude regularizer: weight · Σ exp(|z| − τ) over the latent elements of the sampled z of an
// image (per_image_sum: averaged over the batch). VE alone is not scale-invariant: scaling the
// whole latent space (μ and σ) by c, with the decoder undoing it, divides the VE term by c², so
// the encoder could lower it by inflating the latents instead of spreading them. This term pins
// the scale: negligible for |z| up to about τ, exponential beyond.
// With of_mean the term weighs μ instead (σ-VAE, models/sigma_vae_noise.hpp): there the noise is
// fixed, not the encoder's, and on z = μ + σ_b·ε a large draw of σ_b alone would make the term
// (and its gradient) explode by exp(|σ_b·ε|) while μ did nothing wrong.
#include <string_view>

#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

struct magnitude_regularizer {
    struct config {
        double weight = 1e-6;  // λ2
        double tau = 1.0;      // τ
        bool of_mean = false;  // weigh μ (gradient into dmean) instead of the sampled z
    };
    static constexpr std::string_view name = "magnitude";

    config cfg{};

    magnitude_regularizer() = default;
    explicit magnitude_regularizer(const config& c) : cfg(c) {}

    /// Adds λ2·sign(z)·exp(|z| − τ)/divisor into grads.dz (0 at z = 0), or with of_mean the same
    /// of μ into grads.dmean; returns its value.
    template <class T, device D>
    double accumulate(const tokenizer_outputs<T, D>& out, tokenizer_gradients<T, D>& grads, reduction mode) const {
        const auto& latent = cfg.of_mean ? out.mean : out.z;
        auto& gradient = cfg.of_mean ? grads.dmean : grads.dz;
        const double scale = cfg.weight / reduction_divisor(name, mode, latent.shape());
        return scale * ops::magnitude_penalty_sum(latent, cfg.tau, gradient, scale);
    }
};

} // namespace vediff::loss
