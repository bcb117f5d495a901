#pragma once
// The configuration of the LDM AutoencoderKL (its `ddconfig` plus `embed_dim`), shared by the
// encoder, the decoder and the autoencoder. Defaults: the Fashion-MNIST tokenizer, 1×32×32 images
// → 4×8×8 latents (f4).
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "vediff/core/strict_json.hpp"
namespace vediff::models {

struct autoencoder_config {
    std::int64_t in_channels = 1, out_channels = 1, ch = 64;
    std::vector<std::int64_t> ch_mult = {1, 2, 2};
    std::int64_t num_res_blocks = 1, z_channels = 4, embed_dim = 4, resolution = 32;
    std::vector<std::int64_t> attn_resolutions = {};
    std::int64_t norm_groups = 32;
    double norm_eps = 1e-6;

    /// Number of resolution levels (len(ch_mult)); all but the last halve the resolution.
    std::int64_t levels() const { return static_cast<std::int64_t>(ch_mult.size()); }
    /// The image-to-latent size ratio, 2^(levels − 1).
    std::int64_t downsampling_factor() const { return std::int64_t{1} << (levels() - 1); }
    std::int64_t latent_resolution() const { return resolution / downsampling_factor(); }
    /// Channels of level i's ResnetBlocks (ch·ch_mult[i]).
    std::int64_t level_channels(std::int64_t i) const { return ch * ch_mult[static_cast<std::size_t>(i)]; }
    /// Whether blocks at this (square) resolution are followed by an AttnBlock.
    bool attends_at(std::int64_t res) const {
        return std::find(attn_resolutions.begin(), attn_resolutions.end(), res) != attn_resolutions.end();
    }

    /// Throws std::invalid_argument naming the offending field.
    void validate() const {
        auto fail = [](const std::string& why) { throw std::invalid_argument("autoencoder_config: " + why); };
        if (in_channels <= 0 || out_channels <= 0 || ch <= 0 || z_channels <= 0 || embed_dim <= 0 || num_res_blocks <= 0)
            fail(fmt::format("in_channels {}, out_channels {}, ch {}, z_channels {}, embed_dim {} and num_res_blocks {} must be "
                             "positive",
                             in_channels, out_channels, ch, z_channels, embed_dim, num_res_blocks));
        if (ch_mult.empty() || ch_mult.size() > 16) fail(fmt::format("ch_mult {} must have 1 to 16 entries", ch_mult));
        if (norm_groups <= 0) fail(fmt::format("norm_groups {} must be positive", norm_groups));
        if (!(norm_eps > 0)) fail(fmt::format("norm_eps {} must be positive", norm_eps));
        for (auto m : ch_mult)
            if (m <= 0 || (ch * m) % norm_groups != 0)
                fail(fmt::format("ch {} × ch_mult {} gives widths not all divisible by norm_groups {}", ch, ch_mult, norm_groups));
        if (ch % norm_groups != 0) fail(fmt::format("ch {} is not divisible by norm_groups {}", ch, norm_groups));
        if (resolution <= 0 || resolution % downsampling_factor() != 0)
            fail(fmt::format("resolution {} must be a positive multiple of 2^(len(ch_mult) − 1) = {}", resolution,
                             downsampling_factor()));
    }
};

/// The published tokenizers' architectures by name, for 3-channel images (the resolution is the
/// training images', 256 for the published weights):
///   "f8c4"    LDM / Stable Diffusion's VAE (kl-f8): ch 128, ch_mult (1, 2, 4, 4), 2 res blocks,
///             attention in the mid block only, z 4
///   "f16d32"  VA-VAE (LightningDiT's tokenizer): ch 128, ch_mult (1, 1, 2, 2, 4), 2 res blocks,
///             attention at 16×16 and in the mid block, z 32
/// Throws std::invalid_argument for another name, listing these.
inline autoencoder_config published_autoencoder(std::string_view name, std::int64_t resolution = 256) {
    autoencoder_config c;
    c.in_channels = c.out_channels = 3;
    c.ch = 128;
    c.num_res_blocks = 2;
    c.norm_groups = 32;
    c.resolution = resolution;
    if (name == "f8c4") {
        c.ch_mult = {1, 2, 4, 4};
        c.z_channels = c.embed_dim = 4;
        c.attn_resolutions = {};
    } else if (name == "f16d32") {
        c.ch_mult = {1, 1, 2, 2, 4};
        c.z_channels = c.embed_dim = 32;
        c.attn_resolutions = {16};
    } else {
        throw std::invalid_argument(fmt::format("unknown tokenizer architecture '{}' (expected f8c4 or f16d32)", name));
    }
    c.validate();
    return c;
}

// The fields a tokenizer run saves ("model" of its configuration), one list for writing and
// reading; norm_eps is the reference's constant and is not saved.
VEDIFF_JSON_FIELDS(autoencoder_config, in_channels, out_channels, ch, ch_mult, num_res_blocks, z_channels, embed_dim,
                   resolution, attn_resolutions, norm_groups)

} // namespace vediff::models
