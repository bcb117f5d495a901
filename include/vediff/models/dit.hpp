#pragma once
// The class-conditional diffusion transformer (DiT, Peebles & Xie; LightningDiT by its block
// policies), with the reference state_dict names:
//   tokens = x_embedder(x) + pos_embed                 (B, N, D), fixed 2-D sin-cos pos_embed
//   c      = t_embedder(t) + y_embedder(y)             (B, D)
//   tokens = blocks.{i}(tokens, c)                     adaLN-Zero blocks
//   out    = unpatchify(final_layer(tokens, c))        (B, out_channels, H, W)
// With RoPE the state_dict also holds the fixed tables `feat_rope.freqs_cos` and
// `feat_rope.freqs_sin` (N, head_dim), the layout of the PyTorch reference in tests/fixtures/dit_models.py.
// They are there so that reference checkpoints load strictly; the attention layers compute the
// same tables from the config, so loaded values of these two entries are not used.
//
//   using model = models::dit<float>;                       // dit_block<layer_norm, gelu_mlp, no_rope, no_qk_norm>
//   using model = models::lightning_dit<float>;             // dit_block<rms_norm, swiglu, rope_2d, qk_norm>
//   using model = models::diffusion_transformer<models::dit_block<models::rms_norm, models::gelu_mlp,
//                                               models::no_rope, models::qk_norm>>;  // any mix
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/nn/gradient_listener.hpp"
#include "vediff/models/dit_block.hpp"
#include "vediff/models/dit_config.hpp"
#include "vediff/models/dit_embedders.hpp"
#include "vediff/models/dit_policies.hpp"
#include "vediff/models/positional_tables.hpp"
#include "vediff/nn/conditioned.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/patchify.hpp"

namespace vediff::models {

/// The reference initialization (DiT's initialize_weights), as rules by parameter name: Linear
/// weights xavier-uniform and biases 0, the patch projection xavier-uniform over (D, C·p·p), the
/// label table and the timestep MLP's weights N(0, 0.02), every adaLN modulation and the final
/// linear 0 (so the model's output is exactly 0 at init), norm gains 1, fixed tables untouched.
inline nn::init_rule dit_reference_rule(std::string_view name, const tensor_shape& shape, nn::init_rule current) {
    const auto has = [&](std::string_view part) { return name.find(part) != std::string_view::npos; };
    const bool is_bias = name.ends_with(".bias");
    if (current.kind == nn::init_rule::distribution::none) return current;  // pos_embed, feat_rope
    if (has("adaLN_modulation") || name.starts_with("final_layer.linear.")) return nn::init_rule::constant(0);
    if (has("norm") && name.ends_with(".weight")) return current;  // norm gains stay 1
    if (is_bias) return nn::init_rule::constant(0);
    if (name == "y_embedder.embedding_table.weight" || name.starts_with("t_embedder.mlp.")) return nn::init_rule::normal(0.02);
    const std::int64_t fan_out = shape[0], fan_in = shape.numel() / shape[0];
    return nn::init_rule::uniform(nn::xavier_uniform_bound(fan_in, fan_out));
}

/// P: the precision policy of the blocks' and final layer's matrix products (core/precision.hpp);
/// the patch, timestep and label embedders (under 1% of the flops) stay in T.
template <class Design, class T = float, device D = cpu, precision_policy P = fp32>
struct diffusion_transformer {
    using value_type = T;
    using device_type = D;
    using design = Design;
    using precision = P;
    using block_type = dit_block_layer<T, D, Design, P>;
    static constexpr bool has_rope = Design::rope::enabled;

    dit_config config;
    patch_embedder<T, D> x_embedder;
    timestep_embedder<T, D> t_embedder;
    label_embedder<T, D> y_embedder;
    nn::parameter<T, D> pos_embed;  // (1, N, D), fixed
    nn::conditioned_stack<block_type> blocks;
    dit_final_layer<T, D, typename Design::norm, P> final_layer;
    nn::parameter<T, D> rope_cos, rope_sin;  // feat_rope.freqs_cos / freqs_sin (N, head_dim), fixed, with RoPE

    diffusion_transformer() = default;
    /// The reference initialization, drawn from `seed` (nn/init.hpp: each parameter from its own key).
    explicit diffusion_transformer(const dit_config& c, std::uint64_t seed = 0) : config(c) {
        config.validate(has_rope);
        const std::int64_t hidden = c.hidden_size;
        x_embedder = patch_embedder<T, D>(c.in_channels, hidden, c.patch_size);
        t_embedder = timestep_embedder<T, D>(hidden);
        y_embedder = label_embedder<T, D>(c.num_classes, hidden, c.class_dropout_prob, seed);
        pos_embed = fixed_table({1, c.tokens(), hidden}, sincos_pos_embed_2d(hidden, c.grid()));
        for (std::int64_t i = 0; i < c.depth; ++i)
            blocks.push_back(block_type({.dim = hidden, .heads = c.num_heads, .mlp_ratio = c.mlp_ratio, .grid = c.grid()}));
        final_layer = dit_final_layer<T, D, typename Design::norm, P>(hidden, c.patch_size * c.patch_size * c.out_channels());
        if constexpr (has_rope) {
            const auto angles = rope_2d_angles(c.head_dim(), c.grid());
            std::vector<double> cos(angles.size()), sin(angles.size());
            for (std::size_t i = 0; i < angles.size(); ++i) cos[i] = std::cos(angles[i]), sin[i] = std::sin(angles[i]);
            rope_cos = fixed_table({c.tokens(), c.head_dim()}, cos);
            rope_sin = fixed_table({c.tokens(), c.head_dim()}, sin);
        }
        for_each_parameter([](const std::string& name, nn::parameter<T, D>& p) { p.init = dit_reference_rule(name, p.shape(), p.init); });
        nn::initialize(*this, seed);
    }

    tensor<T, D> forward(tensor<T, D>&&, const tensor_view<T, D>&, const tensor_view<std::int32_t, D>&) = delete;  // x must outlive backward
    /// x (B, C, H, W), t (B) used as given, y (B) labels in [0, num_classes] (num_classes: the null
    /// class) → (B, out_channels, H, W).
    tensor<T, D> forward(const tensor_view<T, D>& x, const tensor_view<T, D>& t, const tensor_view<std::int32_t, D>& y) {
        const tensor_shape expected{x.rank() == 4 ? x.dim(0) : -1, config.in_channels, config.input_size, config.input_size};
        if (!(x.shape() == expected))
            throw shape_error(fmt::format("diffusion_transformer: x {} must be (B, {}, {}, {})", x.shape(), config.in_channels,
                                          config.input_size, config.input_size));
        if (t.rank() != 1 || t.dim(0) != x.dim(0) || y.rank() != 1 || y.dim(0) != x.dim(0))
            throw shape_error(fmt::format("diffusion_transformer: t {} and y {} must be ({}) for x {}", t.shape(), y.shape(), x.dim(0), x.shape()));
        std::optional<nn::no_grad> inference;
        if (!keep_for_backward_) inference.emplace();
        // Locals, moved into the members below when backward will need them (a move keeps the
        // storage, so the views the layers took stay valid); otherwise released on return.
        auto patches = x_embedder.forward(x);
        auto tokens = ops::add_broadcast(patches.view(), pos_embed.value.view());
        auto conditioning = ops::add(t_embedder.forward(t).view(), y_embedder.forward(y).view());
        auto hidden = blocks.forward(tokens, conditioning);
        auto out_tokens = final_layer.forward(hidden, conditioning);
        auto out = ops::unpatchify(out_tokens.view(), config.patch_size, config.input_size, config.input_size);
        const bool keep = record_.keep();
        patches_ = keep ? std::move(patches) : tensor<T, D>{};
        tokens_ = keep ? std::move(tokens) : tensor<T, D>{};
        conditioning_ = keep ? std::move(conditioning) : tensor<T, D>{};
        hidden_ = keep ? std::move(hidden) : tensor<T, D>{};
        out_tokens_ = keep ? std::move(out_tokens) : tensor<T, D>{};
        return out;
    }

    /// dout (B, out_channels, H, W) → dx (B, C, H, W); accumulates every trainable parameter's gradient.
    tensor<T, D> backward(const tensor_view<T, D>& dout) {
        record_.require("diffusion_transformer");
        auto dout_tokens = ops::unpatchify_backward(dout, config.patch_size);
        auto dconditioning = tensor<T, D>::zeros(conditioning_.shape());
        auto dhidden = final_layer.backward(dout_tokens, dconditioning);
        nn::announce_final_gradients(final_layer);  // each announcement lets data parallelism send it
        auto dtokens = blocks.backward(dhidden, dconditioning);  // announces each block
        t_embedder.backward(dconditioning);
        nn::announce_final_gradients(t_embedder);
        y_embedder.backward(dconditioning);
        nn::announce_final_gradients(y_embedder);
        auto dx = x_embedder.backward(dtokens);  // pos_embed is fixed: no gradient
        nn::announce_final_gradients(x_embedder);
        return dx;
    }

    /// Training (on) or evaluation (off). Evaluation turns label dropout off and runs forward under
    /// nn::no_grad unless keep_for_backward: a sampler's forward keeps no activations, and a
    /// backward after it throws. train(false, true) is the deterministic function with gradients.
    void train(bool on, bool keep_for_backward) {
        y_embedder.train(on);
        keep_for_backward_ = keep_for_backward;
    }
    void train(bool on) { train(on, on); }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "pos_embed"), pos_embed);
        x_embedder.for_each_parameter(f, nn::join_name(prefix, "x_embedder"));
        t_embedder.for_each_parameter(f, nn::join_name(prefix, "t_embedder"));
        y_embedder.for_each_parameter(f, nn::join_name(prefix, "y_embedder"));
        blocks.for_each_parameter(f, nn::join_name(prefix, "blocks"));
        final_layer.for_each_parameter(f, nn::join_name(prefix, "final_layer"));
        if constexpr (has_rope) {
            f(nn::join_name(prefix, "feat_rope.freqs_cos"), rope_cos);
            f(nn::join_name(prefix, "feat_rope.freqs_sin"), rope_sin);
        }
    }

private:
    static nn::parameter<T, D> fixed_table(tensor_shape shape, const std::vector<double>& values) {
        std::vector<T> rounded(values.begin(), values.end());
        nn::parameter<T, D> p(shape, /*is_trainable=*/false);
        p.value = tensor<T, D>::from_host(shape, std::span<const T>(rounded));
        return p;
    }

    bool keep_for_backward_ = true;
    nn::backward_record record_;
    tensor<T, D> patches_;       // (B, N, D), x_embedder's output
    tensor<T, D> tokens_;        // (B, N, D), + pos_embed: the blocks' input
    tensor<T, D> conditioning_;  // (B, D)
    tensor<T, D> hidden_;        // (B, N, D), the final layer's input
    tensor<T, D> out_tokens_;    // (B, N, p²·out_channels)
};

template <class T = float, device D = cpu, precision_policy P = fp32>
using dit = diffusion_transformer<dit_design, T, D, P>;
template <class T = float, device D = cpu, precision_policy P = fp32>
using lightning_dit = diffusion_transformer<lightning_dit_design, T, D, P>;

} // namespace vediff::models
