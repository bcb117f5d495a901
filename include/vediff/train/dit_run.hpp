#pragma once
// What `vediff train-dit` saves and `vediff sample` reads back: the run configuration (model
// sizes, block design, optimization, the latent cache's normalization and tokenizer), and the
// model together with its EMA in one state_dict (the model's names, then the average under "ema.").
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/strict_json.hpp"
#include "vediff/core/error.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/optim/ema.hpp"

namespace vediff::train {

struct dit_run_config {
    // Data: the latent cache, and what it says about itself.
    std::string latents;
    std::string tokenizer;
    std::string tokenizer_config = "{}";          // the tokenizer's run configuration (JSON), from the cache
    std::vector<double> latent_mean, latent_std;  // (C), what the model's latents are normalized with
    std::string latent_scaling = "channel";       // channel (LightningDiT's, from the cache) | scalar (SD's scaling_factor)
    // Model.
    std::string design = "lightningdit";  // dit | lightningdit
    models::dit_config model;             // input_size, in_channels and num_classes come from the cache
    // Optimization (LightningDiT's AdamW betas; a higher lr and a shorter EMA suit short runs).
    std::int64_t steps = 100000, batch = 128, warmup = 200;
    double lr = 5e-4, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.0, clip = 1.0;
    double ema_decay = 0.999;
    // adamw | muon (optim/muon.hpp: Muon for the blocks' weight matrices at muon_lr, AdamW at lr
    // with the betas above for the rest; weight_decay for both).
    std::string optimizer = "adamw";
    double muon_lr = 0.02;
    std::string time_sampling = "logit_normal";  // uniform | logit_normal
    bool cosine_term = false;
    std::uint64_t seed = 0;
    double time_budget_s = 0;  // > 0: stop once this much training time has passed
    // fp32 | bf16 (core/precision.hpp: bf16_mixed, matrix products on bf16 operands, fp32 master weights).
    std::string precision = "fp32";

    nlohmann::json to_json() const;
    /// The configuration a checkpoint saved; a missing or mistyped field is an error naming it,
    /// except the fields runs saved before they existed lack (tokenizer_config, optimizer,
    /// muon_lr, latent_scaling, precision), which take their defaults.
    static dit_run_config from_json(nlohmann::json j);
};

} // namespace vediff::train

// One field list each: VEDIFF_JSON_FIELDS writes to_json and a strict from_json from it (a field
// missing in the JSON throws, naming it; a value of another type or out of range too).
namespace vediff::models {
VEDIFF_JSON_FIELDS(dit_config, input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                                   class_dropout_prob, num_classes, learn_sigma)
} // namespace vediff::models

namespace vediff::train {

VEDIFF_JSON_FIELDS(dit_run_config, latents, tokenizer, tokenizer_config, latent_mean, latent_std, latent_scaling, design, model, steps,
                                   batch, warmup, lr, beta1, beta2, weight_decay, clip, ema_decay, optimizer, muon_lr, time_sampling,
                                   cosine_term, seed, time_budget_s, precision)

inline nlohmann::json dit_run_config::to_json() const {
    nlohmann::json j = *this;
    // The options added after the first runs are written only when not their defaults, so that
    // configurations and experiment presets saved before they existed (docs/runs) still compare
    // equal; from_json fills them in.
    const dit_run_config defaults;
    if (optimizer == defaults.optimizer) j.erase("optimizer");
    if (muon_lr == defaults.muon_lr) j.erase("muon_lr");
    if (latent_scaling == defaults.latent_scaling) j.erase("latent_scaling");
    if (precision == defaults.precision) j.erase("precision");
    return j;
}

inline dit_run_config dit_run_config::from_json(nlohmann::json j) {
    const dit_run_config defaults;
    if (j.is_object()) {
        if (!j.contains("tokenizer_config")) j["tokenizer_config"] = defaults.tokenizer_config;
        if (!j.contains("optimizer")) j["optimizer"] = defaults.optimizer;
        if (!j.contains("muon_lr")) j["muon_lr"] = defaults.muon_lr;
        if (!j.contains("latent_scaling")) j["latent_scaling"] = defaults.latent_scaling;
        if (!j.contains("precision")) j["precision"] = defaults.precision;
    }
    try {
        return j.get<dit_run_config>();
    } catch (const nlohmann::json::exception& e) {
        throw io_error(fmt::format("DiT run configuration: {}", e.what()));
    } catch (const std::invalid_argument& e) {
        throw io_error(fmt::format("DiT run configuration: {}", e.what()));
    }
}

/// Calls f.template operator()<Design>() with the block design named by `design`.
template <class F>
decltype(auto) with_dit_design(const std::string& design, F&& f) {
    if (design == "dit") return f.template operator()<models::dit_design>();
    if (design == "lightningdit") return f.template operator()<models::lightning_dit_design>();
    throw std::invalid_argument(fmt::format("--design {}: expected dit or lightningdit", design));
}

/// A model and its EMA seen as one state_dict: the model's parameters, then the average's under "ema.".
template <class Model>
struct model_with_ema {
    using value_type = typename Model::value_type;
    using device_type = typename Model::device_type;

    Model& model;
    optim::ema<value_type, device_type>& average;

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        model.for_each_parameter(f, prefix);
        average.for_each_parameter(f, nn::join_name(prefix, "ema"));
    }
};

} // namespace vediff::train
