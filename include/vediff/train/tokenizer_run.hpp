#pragma once
// A trained tokenizer, read back from the output directory of `vediff train-tokenizer`: the model
// sizes from the run configuration in DIR/checkpoint/train_state.safetensors, the weights from
// DIR/checkpoint/model.safetensors (strictly).
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/train/checkpoint.hpp"

namespace vediff::train {

/// The checkpoint is device-neutral: load_tokenizer_run<cuda> reads the same files onto the GPU.
template <device D = cpu>
struct tokenizer_run {
    std::filesystem::path dir;
    nlohmann::json config;  // the run's configuration, as train_tokenizer saved it
    models::autoencoder_kl<float, D> model;
};

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
    tokenizer_run<D> run{dir, config, models::autoencoder_kl<float, D>(c)};
    io::load_state_dict(checkpoint / model_file_name, run.model);
    return run;
}

} // namespace vediff::train
