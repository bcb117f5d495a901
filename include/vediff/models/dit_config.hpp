#pragma once
// The sizes of a diffusion transformer, with the reference constructors' names (DiT's models.py),
// and the reference configurations S, B, L, XL.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace vediff::models {

struct dit_config {
    std::int64_t input_size = 32;  // latent height = width
    std::int64_t patch_size = 2;
    std::int64_t in_channels = 4;
    std::int64_t hidden_size = 1152;
    std::int64_t depth = 28;
    std::int64_t num_heads = 16;
    double mlp_ratio = 4.0;
    double class_dropout_prob = 0.1;
    std::int64_t num_classes = 1000;
    bool learn_sigma = false;  // DiT's default is true; the flow-matching models here predict velocity only

    std::int64_t grid() const { return input_size / patch_size; }
    std::int64_t tokens() const { return grid() * grid(); }
    std::int64_t out_channels() const { return learn_sigma ? 2 * in_channels : in_channels; }
    std::int64_t head_dim() const { return hidden_size / num_heads; }

    /// Throws std::invalid_argument naming the first inconsistent size.
    void validate(bool rope = false) const {
        auto fail = [](const std::string& what) { throw std::invalid_argument("dit_config: " + what); };
        if (input_size <= 0 || patch_size <= 0 || input_size % patch_size != 0)
            fail(fmt::format("input_size {} is not a positive multiple of patch_size {}", input_size, patch_size));
        if (in_channels <= 0 || depth < 0 || num_classes <= 0) fail(fmt::format("in_channels {}, depth {} and num_classes {} must be positive", in_channels, depth, num_classes));
        if (num_heads <= 0 || hidden_size <= 0 || hidden_size % num_heads != 0)
            fail(fmt::format("hidden_size {} is not divisible by num_heads {}", hidden_size, num_heads));
        if (hidden_size % 4 != 0) fail(fmt::format("hidden_size {} must be a multiple of 4 (2-D sin-cos position embedding)", hidden_size));
        if (rope && head_dim() % 4 != 0) fail(fmt::format("head dim {} must be a multiple of 4 for 2-D RoPE", head_dim()));
        if (!(mlp_ratio > 0)) fail(fmt::format("mlp_ratio {} must be positive", mlp_ratio));
        if (!(class_dropout_prob >= 0 && class_dropout_prob < 1)) fail(fmt::format("class_dropout_prob {} must be in [0, 1)", class_dropout_prob));
    }

    /// A reference size ("S", "B", "L", "XL") with the given patch; other fields keep their values.
    dit_config with_size(const std::string& size, std::int64_t patch) const {
        dit_config c = *this;
        c.patch_size = patch;
        if (size == "S") c.depth = 12, c.hidden_size = 384, c.num_heads = 6;
        else if (size == "B") c.depth = 12, c.hidden_size = 768, c.num_heads = 12;
        else if (size == "L") c.depth = 24, c.hidden_size = 1024, c.num_heads = 16;
        else if (size == "XL") c.depth = 28, c.hidden_size = 1152, c.num_heads = 16;
        else throw std::invalid_argument(fmt::format("dit_config: unknown size '{}' (S, B, L, XL)", size));
        return c;
    }
};

} // namespace vediff::models
