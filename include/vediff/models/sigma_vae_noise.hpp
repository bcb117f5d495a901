#pragma once
// σ-VAE's latent noise, the fixed-noise alternative to KL and VE (LatentLM, Sun et al. 2024,
// arXiv 2412.08635; NextStep-1, arXiv 2508.10711): the encoder's mean only, and
//     z = μ + σ_b·ε,   ε ~ N(0, I),   one σ_b ≥ 0 per image, drawn afresh at every step,
// with no KL term, so the latent variance cannot collapse: the decoder must be robust to noise of
// a scale the user fixes. Two laws of σ_b:
//   normal  — LatentLM's σ ~ N(0, C_σ), read as σ_b = C_σ·|n_b|, n_b ~ N(0, 1) (ε is symmetric,
//             so the sign of σ is immaterial); E[σ_b²] = C_σ².
//   uniform — the NextStep-1 tokenizer's training config, σ_b ~ U(0, C) ("noise_strength");
//             E[σ_b²] = C²/3.
// The encoder keeps its (B, 2C, h, w) moments, so checkpoints stay AutoencoderKL's, but its
// log-variance half is unused: fix_variance() replaces the posterior's logvar by log σ_b² and
// cuts its gradient, so the logvar channels of conv_out receive none. The latent statistics
// (σ² of the log) then report the noise the decoder actually saw.
//
// σ_b of image i (i counts over the global batch, or over a data set) at draw d is a pure
// function of (seed, d, i): Philox stream sigma_stream + d, element i. A data-parallel shard,
// a resumed run and a single process therefore draw the same σ_b for the same image slot.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::models {

struct sigma_vae_noise {
    enum class law { normal, uniform };
    /// Streams "sigm"·2³² and up: apart from the loaders', flips' and initializers' streams.
    static constexpr std::uint64_t sigma_stream = std::uint64_t{0x7369676d} << 32;

    /// Draws outside training (whose draws are step indices): the test-set evaluations, encoding.
    static constexpr std::uint64_t evaluation_draw = std::uint64_t{1} << 62;
    static constexpr std::uint64_t encoding_draw = evaluation_draw + 1;

    double scale = 0.5;  // C_σ
    law distribution = law::normal;

    static law parse_law(std::string_view name) {
        if (name == "normal") return law::normal;
        if (name == "uniform") return law::uniform;
        throw std::invalid_argument(fmt::format("sigma-VAE noise law '{}': expected normal or uniform", name));
    }
    static std::string_view law_name(law l) { return l == law::normal ? "normal" : "uniform"; }

    void validate() const {
        if (!(scale >= 0.0) || !std::isfinite(scale))
            throw std::invalid_argument(fmt::format("sigma-VAE noise scale {} must be finite and ≥ 0", scale));
    }

    /// E[σ_b²]: the latent variance the noise adds.
    double expected_variance() const { return distribution == law::normal ? scale * scale : scale * scale / 3.0; }

    /// σ_b of image `index` at draw `draw`.
    double sigma(std::uint64_t seed, std::uint64_t draw, std::int64_t index) const {
        const auto i = static_cast<std::uint64_t>(index);
        if (distribution == law::normal) return scale * std::abs(philox_normal<double>(seed, sigma_stream + draw, 0, i));
        return scale * philox_uniform<double>(seed, sigma_stream + draw, 0, i);
    }

    /// Draws σ_b for the posterior's images (rows first_index, first_index + 1, … of the global
    /// batch or data set) and makes them its variance: logvar[b] = log σ_b², clamped as the
    /// encoder's is. After this, post.sample() draws z = μ + σ_b·ε, and its backward reaches μ only.
    template <class T, device D>
    void fix_variance(gaussian_posterior<T, D>& post, std::uint64_t seed, std::uint64_t draw, std::int64_t first_index) const {
        validate();
        tensor<T, D> logvar(post.mean.shape());
        for (std::int64_t b = 0; b < logvar.dim(0); ++b) {
            const double s = sigma(seed, draw, first_index + b);
            const double lv = s > 0.0 ? 2.0 * std::log(s) : gaussian_posterior<T, D>::logvar_min;
            ops::fill(logvar[b], static_cast<T>(std::clamp(lv, gaussian_posterior<T, D>::logvar_min, gaussian_posterior<T, D>::logvar_max)));
        }
        post.fix_variance(std::move(logvar));
    }
};

} // namespace vediff::models
