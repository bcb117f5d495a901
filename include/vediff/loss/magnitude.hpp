#pragma once
// Magnitude regularizer: weight · Σ exp(|z| − τ) over the latent elements of the sampled z of an
// image (per_image_sum: averaged over the batch). VE alone is not scale-invariant: scaling the
// whole latent space (μ and σ) by c, with the decoder undoing it, divides the VE term by c², so
// the encoder could lower it by inflating the latents instead of spreading them. This term pins
// the scale: negligible for |z| up to about τ, exponential beyond.
#include <string_view>

#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

struct magnitude_regularizer {
    struct config {
        double weight = 1e-6;  // λ2
        double tau = 1.0;      // τ
    };
    static constexpr std::string_view name = "magnitude";

    config cfg{};

    magnitude_regularizer() = default;
    explicit magnitude_regularizer(const config& c) : cfg(c) {}

    /// Adds λ2·sign(z)·exp(|z| − τ)/divisor into grads.dz (0 at z = 0); returns its value.
    template <class T, device D>
    double accumulate(const tokenizer_outputs<T, D>& out, tokenizer_gradients<T, D>& grads, reduction mode) const {
        const double scale = cfg.weight / reduction_divisor(name, mode, out.z.shape());
        return scale * ops::magnitude_penalty_sum(out.z, cfg.tau, grads.dz, scale);
    }
};

} // namespace vediff::loss
