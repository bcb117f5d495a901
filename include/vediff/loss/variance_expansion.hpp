#pragma once
// Variance Expansion (VE): weight · Σ 1/(σ² + δ) over the latent elements of an image, with
// σ² = exp(logvar), in place of the KL term. A collapsed posterior (σ² → 0) makes it large, so the
// encoder keeps its variance up against the reconstruction's pull towards zero.
//
// Normalization (reduction.hpp). With per_image_sum (the default) every term is a sum over one
// image, averaged over the batch. For a decoder with Jacobian J (pixels × latent elements) and an
// l2 reconstruction, averaging over ε in z = μ + σ·ε adds Σ_i σ_i²·T_i to the reconstruction, with
// T_i = Σ_j J_ji² (exactly so for a linear decoder; to second order otherwise). Per latent element
// the objective is then
//     σ²·T_i + λ1/(σ² + δ),   minimized at   σ² = √(λ1/T_i) − δ,   i.e. σ = (λ1/T_i)^¼ for δ ≪ σ²,
// the paper's equilibrium (tests/test_loss.cpp checks it by optimizing σ with these gradients).
// With element_mean the reconstruction is divided by the P pixels and VE by the n latent elements
// of an image, so the balance shifts: σ⁴ = λ1·P/(n·T_i), as if λ1 were λ1·P/n (×4 for 1×32×32
// images and 4×8×8 latents, σ larger by 4^¼ ≈ 1.41).
//
// Why δ = 1e-6. δ only guards the division: σ² = exp(logvar) may underflow to 0 (and the
// posterior's clamp still allows σ² = e^−30), where 1/σ² would be infinite. It caps the term at
// λ1/δ per element and the magnitude of its gradient with respect to logvar, λ1·σ²/(σ² + δ)², at
// λ1/(4δ) (reached at σ² = δ). It must stay small against the σ² the method is meant to reach —
// the paper reports σ² ≈ 0.06 — because it shifts the equilibrium by δ in σ² (1.7e-5 relative at
// 0.06 with δ = 1e-6; a δ of 1e-2 would already move it by 17%). At the σ² ≈ 1e-8 a
// KL(1e-6)-trained tokenizer collapses to, the term is ≈ λ1/δ ≈ 1e5 per element: huge on
// purpose, which is what pushes σ² back up.
#include <string_view>

#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

struct variance_expansion {
    struct config {
        double weight = 0.1;   // λ1
        double delta = 1e-6;   // δ ≥ 0, see above
    };
    static constexpr std::string_view name = "ve";

    config cfg{};

    variance_expansion() = default;
    explicit variance_expansion(const config& c) : cfg(c) {}

    /// Adds λ1·(−σ²/(σ² + δ)²)/divisor into grads.dlogvar; returns its value.
    template <class T, device D>
    double accumulate(const tokenizer_outputs<T, D>& out, tokenizer_gradients<T, D>& grads, reduction mode) const {
        const double scale = cfg.weight / reduction_divisor(name, mode, out.logvar.shape());
        return scale * ops::inverse_variance_sum(out.logvar, cfg.delta, grads.dlogvar, scale);
    }
};

} // namespace vediff::loss
