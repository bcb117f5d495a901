#pragma once
// A trained tokenizer, read back from the output directory of `vediff train-tokenizer`: the model
// sizes from the run configuration in DIR/checkpoint/train_state.safetensors, the weights from
// DIR/checkpoint/model.safetensors (strictly).
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/sigma_vae_noise.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/train/checkpoint.hpp"

namespace vediff::train {

/// The checkpoint is device-neutral: load_tokenizer_run<cuda> reads the same files onto the GPU.
template <device D = cpu>
struct tokenizer_run {
    std::filesystem::path dir;
    nlohmann::json config;  // the run's configuration, as train_tokenizer saved it
    models::autoencoder_kl<float, D> model;
    std::optional<models::sigma_vae_noise> sigma_vae;  // the fixed noise of a run trained with --loss sigma-vae

    /// The posterior of images x (rows first_index, … of a data set): the encoder's, or for a
    /// σ-VAE run, μ with the run's noise law (draw `draw` of models::sigma_vae_noise).
    models::gaussian_posterior<float, D> posterior(const tensor_view<float, D>& x, std::uint64_t seed, std::uint64_t draw,
                                                   std::int64_t first_index) {
        const nn::no_grad inference;
        auto post = models::gaussian_posterior<float, D>::from_moments(model.encode(x));
        if (sigma_vae) sigma_vae->fix_variance(post, seed, draw, first_index);
        return post;
    }
};

/// The σ-VAE noise law of a run configuration (train-tokenizer's), if it trained with one.
inline std::optional<models::sigma_vae_noise> sigma_vae_noise_of(const nlohmann::json& config) {
    if (!config.contains("loss") || config.at("loss") != "sigma-vae") return std::nullopt;
    models::sigma_vae_noise noise;
    noise.scale = config.at("sigma_vae_scale").get<double>();
    noise.distribution = models::sigma_vae_noise::parse_law(config.at("sigma_vae_law").get<std::string>());
    noise.validate();
    return noise;
}

/// Loads the tokenizer trained into `dir` onto device D; io_error names the file and the missing piece.
template <device D = cpu>
tokenizer_run<D> load_tokenizer_run(const std::filesystem::path& dir) {
    const auto checkpoint = dir / "checkpoint";
    if (!checkpoint_exists(checkpoint))
        throw io_error(fmt::format("tokenizer {}: no checkpoint in {} (train one with vediff train-tokenizer --out {})", dir.string(),
                                   checkpoint.string(), dir.string()));
    const auto config = nlohmann::json::parse(read_train_state(checkpoint).config_json);
    models::autoencoder_config c;
    try {
        c = config.at("model").get<models::autoencoder_config>();
    } catch (const nlohmann::json::exception& e) {
        throw io_error(fmt::format("tokenizer {}: the run configuration lacks a model size: {}", dir.string(), e.what()));
    }
    tokenizer_run<D> run{dir, config, models::autoencoder_kl<float, D>(c), {}};
    try {
        run.sigma_vae = sigma_vae_noise_of(config);
    } catch (const std::exception& e) {
        throw io_error(fmt::format("tokenizer {}: the run configuration's sigma-VAE noise is unreadable: {}", dir.string(), e.what()));
    }
    io::load_state_dict(checkpoint_model_file(checkpoint), run.model);
    return run;
}

} // namespace vediff::train
