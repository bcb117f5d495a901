#pragma once
// One forward pass of a model described by its reference config (io/model_config.hpp) and loaded
// strictly from safetensors weights: what the `forward` example runs, so that anyone can compare
// vediff with PyTorch on their own weights.
//   dit, lightningdit   inputs x (B, C, H, W) float, t (B) float (given to the timestep embedder
//                       as is), y (B) integer labels (num_classes: the null class) → out
//   autoencoder         inputs x (B, C, H, W) → mean, logvar (the posterior after quant_conv,
//                       logvar clamped to [−30, 20]) and decoded = decoder(post_quant_conv(mean))
//   inception           config {} (the FID Inception has one architecture); inputs x (N, 3 or 1, H, W)
//                       in [0, 1] → pool3 (N, 2048), logits (N, 1008), spatial (N, 2023)
//                       (models/inception.hpp)
//   lpips               config {}; inputs x0, x1 (N, 3, H, W) in [−1, 1] → distance (N) (models/lpips.hpp)
// LightningDiT's four switches select the block policies at compile time; all 16 mixes exist.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "vediff/io/model_config.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/inception.hpp"
#include "vediff/models/lpips.hpp"
#include "vediff/nn/grad_mode.hpp"

namespace vediff::io {

using named_tensors = std::map<std::string, tensor<float, cpu>>;

namespace detail {

template <class Design>
named_tensors transformer_forward(const models::dit_config& config, const std::filesystem::path& weights,
                                  const safetensors_file& inputs) {
    models::diffusion_transformer<Design, float, cpu> model(config);
    load_state_dict(weights, model, /*strict=*/true);
    model.train(false);
    const auto x = inputs.get<float>("x");
    const auto t = inputs.get<float>("t");
    const auto y = inputs.get<std::int32_t>("y");
    named_tensors out;
    out.emplace("out", model.forward(x, t, y));
    return out;
}

template <class Norm, class Mlp, class Rope>
named_tensors pick_qk(const transformer_flags& f, const models::dit_config& c, const std::filesystem::path& w, const safetensors_file& in) {
    if (f.use_qknorm) return transformer_forward<models::dit_block<Norm, Mlp, Rope, models::qk_norm>>(c, w, in);
    return transformer_forward<models::dit_block<Norm, Mlp, Rope, models::no_qk_norm>>(c, w, in);
}
template <class Norm, class Mlp>
named_tensors pick_rope(const transformer_flags& f, const models::dit_config& c, const std::filesystem::path& w, const safetensors_file& in) {
    if (f.use_rope) return pick_qk<Norm, Mlp, models::rope_2d>(f, c, w, in);
    return pick_qk<Norm, Mlp, models::no_rope>(f, c, w, in);
}
template <class Norm>
named_tensors pick_mlp(const transformer_flags& f, const models::dit_config& c, const std::filesystem::path& w, const safetensors_file& in) {
    if (f.use_swiglu) return pick_rope<Norm, models::swiglu>(f, c, w, in);
    return pick_rope<Norm, models::gelu_mlp>(f, c, w, in);
}

} // namespace detail

/// Runs `model` ("dit", "lightningdit", "autoencoder", "inception" or "lpips"); errors name the file and the cause.
inline named_tensors run_forward(const std::string& model, const std::filesystem::path& config_path,
                                 const std::filesystem::path& weights, const std::filesystem::path& inputs_path) {
    const auto json = read_json_file(config_path);
    const safetensors_file inputs(inputs_path);
    if (model == "dit" || model == "lightningdit") {
        const auto c = transformer_config_from_json(json, config_path.string());
        const auto& f = c.flags;
        if (model == "dit" && (f.use_qknorm || f.use_swiglu || f.use_rope || f.use_rmsnorm))
            throw io_error(fmt::format("{}: LightningDiT switches are on; run it as --model lightningdit", config_path.string()));
        if (f.use_rmsnorm) return detail::pick_mlp<models::rms_norm>(f, c.model, weights, inputs);
        return detail::pick_mlp<models::layer_norm>(f, c.model, weights, inputs);
    }
    if (model == "autoencoder") {
        models::autoencoder_kl<float> ae(autoencoder_config_from_json(json, config_path.string()));
        load_state_dict(weights, ae, /*strict=*/true);
        const auto x = inputs.get<float>("x");
        auto post = models::gaussian_posterior<float>::from_moments(ae.encode(x));
        named_tensors out;
        out.emplace("decoded", ae.decode(post.mean));
        out.emplace("mean", std::move(post.mean));
        out.emplace("logvar", std::move(post.logvar));
        return out;
    }
    if (model == "inception") {
        if (!json.is_object() || !json.empty())
            throw io_error(fmt::format("{}: the FID Inception takes no config keys (write {{}}), got {}", config_path.string(),
                                       json.dump()));
        auto net = std::make_unique<models::fid_inception_v3<float>>();  // 24M parameters: off the stack
        load_state_dict(weights, *net, /*strict=*/true);
        auto features = net->forward(inputs.get<float>("x"));
        named_tensors out;
        out.emplace("pool3", std::move(features.pool3));
        out.emplace("logits", std::move(features.logits));
        out.emplace("spatial", std::move(features.spatial));
        return out;
    }
    if (model == "lpips") {
        if (!json.is_object() || !json.empty())
            throw io_error(fmt::format("{}: LPIPS takes no config keys (write {{}}), got {}", config_path.string(), json.dump()));
        auto net = std::make_unique<models::lpips<float>>();  // 14.7M parameters: off the stack
        load_state_dict(weights, *net, /*strict=*/true);
        nn::no_grad inference;
        const auto x0 = inputs.get<float>("x0"), x1 = inputs.get<float>("x1");
        named_tensors out;
        out.emplace("distance", net->forward(x0, x1));
        return out;
    }
    throw io_error(fmt::format("forward: unknown model '{}' (dit, lightningdit, autoencoder, inception, lpips)", model));
}

} // namespace vediff::io
