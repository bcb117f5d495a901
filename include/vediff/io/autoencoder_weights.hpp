#pragma once
// Published tokenizer weights in either of the field's two namings:
//   ldm        the state_dict of LDM's / VA-VAE's AutoencoderKL (taming / ldm code), the names
//              models::autoencoder_kl itself uses
//   diffusers  diffusers' AutoencoderKL (Stable Diffusion's VAE as it is distributed)
// The map from LDM names to diffusers names, for a tokenizer of L levels (i the LDM level, finest 0):
//   {en,de}coder.conv_in / conv_out                  same
//   {en,de}coder.norm_out                            {en,de}coder.conv_norm_out
//   encoder.down.i.block.j.<p>                       encoder.down_blocks.i.resnets.j.<p>
//   decoder.up.i.block.j.<p>                         decoder.up_blocks.(L−1−i).resnets.j.<p>   (diffusers counts from the coarsest)
//     with <p>: norm1, conv1, norm2, conv2; nin_shortcut → conv_shortcut
//   encoder.down.i.downsample.conv                   encoder.down_blocks.i.downsamplers.0.conv
//   decoder.up.i.upsample.conv                       decoder.up_blocks.(L−1−i).upsamplers.0.conv
//   {en,de}coder.mid.block_1 / block_2               {en,de}coder.mid_block.resnets.0 / 1
//   {en,de}coder.mid.attn_1.norm / q / k / v / proj_out
//                                                    {en,de}coder.mid_block.attentions.0.group_norm / to_q / to_k / to_v / to_out.0
//   quant_conv, post_quant_conv                      same
// The attention projections are 1×1 convolutions in LDM, (C, C, 1, 1), and linear layers in
// diffusers, (C, C); loading accepts either shape there, saving in diffusers naming writes (C, C).
// Attention inside the levels (LDM's `attn_resolutions`, VA-VAE's 16×16) has no place in diffusers'
// AutoencoderKL blocks: such a tokenizer has no diffusers naming, and saving one is a named error.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "vediff/core/error.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/autoencoder.hpp"

namespace vediff::io {

enum class weight_naming { ldm, diffusers };

inline weight_naming parse_weight_naming(std::string_view s) {
    if (s == "ldm") return weight_naming::ldm;
    if (s == "diffusers") return weight_naming::diffusers;
    throw std::invalid_argument(fmt::format("unknown weight naming '{}' (expected ldm or diffusers)", s));
}
constexpr std::string_view to_string(weight_naming n) { return n == weight_naming::ldm ? "ldm" : "diffusers"; }

namespace detail {
inline std::vector<std::string> split_name(const std::string& name) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t dot; (dot = name.find('.', start)) != std::string::npos; start = dot + 1) parts.push_back(name.substr(start, dot - start));
    parts.push_back(name.substr(start));
    return parts;
}
inline std::string join_from(const std::vector<std::string>& parts, std::size_t first) {
    std::string out;
    for (std::size_t k = first; k < parts.size(); ++k) out += (out.empty() ? "" : ".") + parts[k];
    return out;
}
inline std::int64_t level_index(const std::string& name, const std::string& part) {
    std::size_t used = 0;
    long long v = -1;
    try {
        v = std::stoll(part, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != part.size() || v < 0) throw std::invalid_argument(fmt::format("autoencoder name '{}': '{}' is not a level index", name, part));
    return v;
}
} // namespace detail

/// The diffusers name of an LDM autoencoder parameter name, for a tokenizer of `levels` levels.
/// Throws std::invalid_argument for a name without a diffusers counterpart (attention inside a level).
inline std::string diffusers_name(const std::string& ldm, std::int64_t levels) {
    const auto p = detail::split_name(ldm);
    const auto fail = [&](const char* why) -> std::string {
        throw std::invalid_argument(fmt::format("autoencoder parameter '{}' has no diffusers name: {}", ldm, why));
    };
    if (p.size() < 2) return fail("too short");
    if (p[0] == "quant_conv" || p[0] == "post_quant_conv") return ldm;
    if (p[0] != "encoder" && p[0] != "decoder") return fail("not an encoder, decoder or quant_conv parameter");
    const std::string& part = p[1];
    if (part == "conv_in" || part == "conv_out") return ldm;
    if (part == "norm_out") return p[0] + ".conv_norm_out." + detail::join_from(p, 2);
    if (part == "mid" && p.size() >= 4) {
        if (p[2] == "block_1") return p[0] + ".mid_block.resnets.0." + detail::join_from(p, 3);
        if (p[2] == "block_2") return p[0] + ".mid_block.resnets.1." + detail::join_from(p, 3);
        if (p[2] == "attn_1") {
            static const std::map<std::string, std::string> attention{
                {"norm", "group_norm"}, {"q", "to_q"}, {"k", "to_k"}, {"v", "to_v"}, {"proj_out", "to_out.0"}};
            const auto it = attention.find(p[3]);
            if (it == attention.end()) return fail("unknown mid-block attention part");
            return p[0] + ".mid_block.attentions.0." + it->second + "." + detail::join_from(p, 4);
        }
        return fail("unknown mid-block part");
    }
    if ((part == "down" && p[0] == "encoder") || (part == "up" && p[0] == "decoder")) {
        if (p.size() < 5) return fail("too short");
        const std::int64_t i = detail::level_index(ldm, p[2]);
        if (i >= levels) return fail("level index beyond the tokenizer's levels");
        const std::int64_t block = part == "down" ? i : levels - 1 - i;
        const std::string prefix = fmt::format("{}.{}_blocks.{}.", p[0], part, block);
        if (p[3] == "block") {
            std::string rest = detail::join_from(p, 5);
            const std::string& layer = p.size() > 5 ? p[5] : rest;
            if (layer == "nin_shortcut") rest = "conv_shortcut." + detail::join_from(p, 6);
            return prefix + "resnets." + p[4] + "." + rest;
        }
        if (p[3] == "downsample" || p[3] == "upsample") return prefix + (part == "down" ? "downsamplers.0." : "upsamplers.0.") + detail::join_from(p, 4);
        if (p[3] == "attn") return fail("attention inside a level (attn_resolutions) has no place in diffusers' AutoencoderKL blocks");
        return fail("unknown level part");
    }
    return fail("unknown part");
}

/// Whether a state_dict name is an attention projection, a 1×1 convolution in LDM and a linear
/// layer in diffusers.
inline bool is_attention_projection_weight(const std::string& ldm) {
    for (const char* part : {".attn_1.q.weight", ".attn_1.k.weight", ".attn_1.v.weight", ".attn_1.proj_out.weight"})
        if (ldm.size() > std::string_view(part).size() && ldm.ends_with(part)) return true;
    return false;
}

/// The naming of a file's autoencoder tensors: diffusers when any encoder/decoder name has the
/// diffusers block names.
inline weight_naming detect_weight_naming(const safetensors_file& f) {
    for (const auto& name : f.names())
        if (name.starts_with("encoder.down_blocks.") || name.starts_with("decoder.up_blocks.") || name.starts_with("encoder.mid_block.") ||
            name.starts_with("decoder.mid_block."))
            return weight_naming::diffusers;
    return weight_naming::ldm;
}

/// Loads a tokenizer's weights from a safetensors file in either naming (detected), e.g. SD's VAE
/// from diffusers or an LDM / VA-VAE state_dict converted to safetensors. Every parameter must be
/// there with its shape (attention projections: (C, C) or (C, C, 1, 1)). Tensors of the training
/// loss (names starting "loss.", which LDM checkpoints carry: LPIPS, the discriminator) are
/// skipped; any other tensor the model lacks is an error. All problems are reported together and
/// the model is untouched when there is any. Returns the naming the file had.
template <class T, device D, precision_policy P>
weight_naming load_autoencoder_weights(const std::filesystem::path& path, models::autoencoder_kl<T, D, P>& ae) {
    const safetensors_file f(path);
    const weight_naming naming = detect_weight_naming(f);
    const std::int64_t levels = ae.config.levels();
    std::vector<std::string> problems;
    std::map<std::string, bool> used;
    std::vector<std::pair<std::string, nn::parameter<T, D>*>> plan;
    for (auto& [name, p] : nn::named_parameters(ae)) {
        std::string stored = name;
        if (naming == weight_naming::diffusers) {
            try {
                stored = diffusers_name(name, levels);
            } catch (const std::invalid_argument& e) {
                problems.push_back(e.what());
                continue;
            }
        }
        if (!f.contains(stored)) {
            problems.push_back(fmt::format("tensor '{}' {} is missing from the file", stored, p->shape()));
            continue;
        }
        used[stored] = true;
        const auto& file_shape = f.entry(stored).shape;
        const bool linear_form = is_attention_projection_weight(name) && file_shape.rank() == 2 && p->shape().rank() == 4 &&
                                 file_shape[0] == p->shape()[0] && file_shape[1] == p->shape()[1] && p->shape()[2] == 1 && p->shape()[3] == 1;
        if (!(file_shape == p->shape()) && !linear_form)
            problems.push_back(fmt::format("tensor '{}' has shape {} in the file but {} in the model", stored, file_shape, p->shape()));
        plan.emplace_back(stored, p);
    }
    std::vector<std::string> unexpected;
    for (const auto& name : f.names())
        if (!used.count(name) && !name.starts_with("loss.")) unexpected.push_back("'" + name + "'");
    if (!unexpected.empty())
        problems.push_back(fmt::format("tensors that are not the tokenizer's: {}", fmt::join(unexpected, ", ")));
    if (!problems.empty())
        throw io_error(fmt::format("load_autoencoder_weights: {} ({} naming): {}", path.string(), to_string(naming), fmt::join(problems, "; ")));
    for (auto& [stored, p] : plan) f.read_into(stored, p->value.view().reshape(f.entry(stored).shape));
    return naming;
}

/// Writes the tokenizer's weights in the given naming (atomically, like every safetensors write).
template <class T, device D, precision_policy P>
void save_autoencoder_weights(const std::filesystem::path& path, models::autoencoder_kl<T, D, P>& ae, weight_naming naming,
                              const metadata_map& metadata = {}) {
    safetensors_writer w;
    const std::int64_t levels = ae.config.levels();
    for (auto& [name, p] : nn::named_parameters(ae)) {
        if (naming == weight_naming::ldm) {
            w.add(name, p->value.view());
            continue;
        }
        const std::string stored = diffusers_name(name, levels);  // throws for attention inside a level
        if (is_attention_projection_weight(name))
            w.add(stored, p->value.view().reshape({p->shape()[0], p->shape()[1]}));
        else
            w.add(stored, p->value.view());
    }
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write(path);
}

} // namespace vediff::io
