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

#include "vediff/models/dit.hpp"
#include "vediff/optim/ema.hpp"

namespace vediff::train {

struct dit_run_config {
    // Data: the latent cache, and what it says about itself.
    std::string latents;
    std::string tokenizer;
    std::string tokenizer_config = "{}";          // the tokenizer's run configuration (JSON), from the cache
    std::vector<double> latent_mean, latent_std;  // (C), from the cache
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

    nlohmann::json to_json() const {
        nlohmann::json j = {{"latents", latents}, {"tokenizer", tokenizer}, {"tokenizer_config", tokenizer_config}, {"latent_mean", latent_mean}, {"latent_std", latent_std},
                {"design", design},
                {"model", {{"input_size", model.input_size}, {"patch_size", model.patch_size}, {"in_channels", model.in_channels},
                           {"hidden_size", model.hidden_size}, {"depth", model.depth}, {"num_heads", model.num_heads},
                           {"mlp_ratio", model.mlp_ratio}, {"class_dropout_prob", model.class_dropout_prob},
                           {"num_classes", model.num_classes}, {"learn_sigma", model.learn_sigma}}},
                {"steps", steps}, {"batch", batch}, {"warmup", warmup}, {"lr", lr}, {"beta1", beta1}, {"beta2", beta2},
                {"weight_decay", weight_decay}, {"clip", clip}, {"ema_decay", ema_decay}, {"time_sampling", time_sampling},
                {"cosine_term", cosine_term}, {"seed", seed}, {"time_budget_s", time_budget_s}};
        // Recorded only when not the default, so an AdamW run's configuration reads as before.
        if (optimizer != "adamw") {
            j["optimizer"] = optimizer;
            j["muon_lr"] = muon_lr;
        }
        return j;
    }

    static dit_run_config from_json(const nlohmann::json& j) {
        dit_run_config c;
        c.latents = j.at("latents").get<std::string>();
        c.tokenizer = j.at("tokenizer").get<std::string>();
        c.tokenizer_config = j.value("tokenizer_config", std::string("{}"));  // absent in runs saved before it was kept
        c.latent_mean = j.at("latent_mean").get<std::vector<double>>();
        c.latent_std = j.at("latent_std").get<std::vector<double>>();
        c.design = j.at("design").get<std::string>();
        const auto& m = j.at("model");
        c.model.input_size = m.at("input_size").get<std::int64_t>();
        c.model.patch_size = m.at("patch_size").get<std::int64_t>();
        c.model.in_channels = m.at("in_channels").get<std::int64_t>();
        c.model.hidden_size = m.at("hidden_size").get<std::int64_t>();
        c.model.depth = m.at("depth").get<std::int64_t>();
        c.model.num_heads = m.at("num_heads").get<std::int64_t>();
        c.model.mlp_ratio = m.at("mlp_ratio").get<double>();
        c.model.class_dropout_prob = m.at("class_dropout_prob").get<double>();
        c.model.num_classes = m.at("num_classes").get<std::int64_t>();
        c.model.learn_sigma = m.at("learn_sigma").get<bool>();
        c.steps = j.at("steps").get<std::int64_t>();
        c.batch = j.at("batch").get<std::int64_t>();
        c.warmup = j.at("warmup").get<std::int64_t>();
        c.lr = j.at("lr").get<double>();
        c.beta1 = j.at("beta1").get<double>();
        c.beta2 = j.at("beta2").get<double>();
        c.weight_decay = j.at("weight_decay").get<double>();
        c.clip = j.at("clip").get<double>();
        c.ema_decay = j.at("ema_decay").get<double>();
        c.time_sampling = j.at("time_sampling").get<std::string>();
        c.cosine_term = j.at("cosine_term").get<bool>();
        c.seed = j.at("seed").get<std::uint64_t>();
        c.time_budget_s = j.at("time_budget_s").get<double>();
        c.optimizer = j.value("optimizer", std::string("adamw"));  // absent: AdamW (and runs saved before the choice)
        c.muon_lr = j.value("muon_lr", 0.02);
        return c;
    }
};

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
