#pragma once
// Model configurations from JSON with the reference constructors' keyword names, so that a
// PyTorch model's kwargs describe the same vediff model:
//   DiT / LightningDiT  input_size, patch_size, in_channels, hidden_size, depth, num_heads,
//                       num_classes, learn_sigma, [mlp_ratio = 4, class_dropout_prob = 0.1],
//                       LightningDiT's use_qknorm, use_swiglu, use_rope, use_rmsnorm (default false);
//   LDM autoencoder     its ddconfig: ch, out_ch, ch_mult, num_res_blocks, attn_resolutions,
//                       in_channels, resolution, z_channels; plus embed_dim.
// Unknown keys are errors (a misspelt key would otherwise silently keep a default).
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/core/strict_json.hpp"
#include "vediff/models/autoencoder_config.hpp"
#include "vediff/models/dit_config.hpp"

namespace vediff::io {

/// The four LightningDiT switches of a transformer config (all false: DiT).
struct transformer_flags {
    bool use_qknorm = false, use_swiglu = false, use_rope = false, use_rmsnorm = false;
};

struct transformer_config {
    models::dit_config model;
    transformer_flags flags;
};

/// Reads a JSON object from a file; io_error names the file and the parser's message.
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw io_error(fmt::format("{}: cannot open", path.string()));
    try {
        auto j = nlohmann::json::parse(in);
        if (!j.is_object()) throw io_error(fmt::format("{}: a JSON object is needed", path.string()));
        return j;
    } catch (const nlohmann::json::exception& e) {
        throw io_error(fmt::format("{}: {}", path.string(), e.what()));
    }
}

namespace detail {
class json_fields {
public:
    json_fields(const nlohmann::json& j, std::string source) : j_(j), source_(std::move(source)) {}

    template <class V>
    void required(const char* key, V& out) {
        if (!j_.contains(key)) fail(fmt::format("missing key \"{}\"", key));
        read(key, out);
    }
    template <class V>
    void optional(const char* key, V& out) {
        if (j_.contains(key)) read(key, out);
    }
    void no_other_keys() const {
        for (const auto& [key, value] : j_.items())
            if (!used_.contains(key)) fail(fmt::format("unknown key \"{}\"", key));
    }

private:
    template <class V>
    void read(const char* key, V& out) {
        used_.insert(key);
        try {
            strict_json_convert(j_.at(key), out, key);  // no silent casts: 3.7 is not an integer
        } catch (const nlohmann::json::exception&) {
            fail(fmt::format("key \"{}\" has the wrong type ({})", key, j_.at(key).dump()));
        } catch (const std::invalid_argument&) {
            fail(fmt::format("key \"{}\" has the wrong type or range ({})", key, j_.at(key).dump()));
        }
    }
    [[noreturn]] void fail(const std::string& cause) const { throw io_error(fmt::format("{}: {}", source_, cause)); }

    const nlohmann::json& j_;
    std::string source_;
    std::set<std::string> used_;
};
} // namespace detail

/// A DiT or LightningDiT configuration; `source` names the file in errors.
inline transformer_config transformer_config_from_json(const nlohmann::json& j, const std::string& source) {
    transformer_config c;
    detail::json_fields f(j, source);
    f.required("input_size", c.model.input_size);
    f.required("patch_size", c.model.patch_size);
    f.required("in_channels", c.model.in_channels);
    f.required("hidden_size", c.model.hidden_size);
    f.required("depth", c.model.depth);
    f.required("num_heads", c.model.num_heads);
    f.required("num_classes", c.model.num_classes);
    f.required("learn_sigma", c.model.learn_sigma);
    f.optional("mlp_ratio", c.model.mlp_ratio);
    f.optional("class_dropout_prob", c.model.class_dropout_prob);
    f.optional("use_qknorm", c.flags.use_qknorm);
    f.optional("use_swiglu", c.flags.use_swiglu);
    f.optional("use_rope", c.flags.use_rope);
    f.optional("use_rmsnorm", c.flags.use_rmsnorm);
    f.no_other_keys();
    try {
        c.model.validate(c.flags.use_rope);
    } catch (const std::invalid_argument& e) {
        throw io_error(fmt::format("{}: {}", source, e.what()));
    }
    return c;
}

/// An LDM AutoencoderKL configuration (ddconfig keys + embed_dim).
inline models::autoencoder_config autoencoder_config_from_json(const nlohmann::json& j, const std::string& source) {
    models::autoencoder_config c;
    detail::json_fields f(j, source);
    f.required("ch", c.ch);
    f.required("out_ch", c.out_channels);
    f.required("ch_mult", c.ch_mult);
    f.required("num_res_blocks", c.num_res_blocks);
    f.required("attn_resolutions", c.attn_resolutions);
    f.required("in_channels", c.in_channels);
    f.required("resolution", c.resolution);
    f.required("z_channels", c.z_channels);
    f.required("embed_dim", c.embed_dim);
    // Keys of LDM's ddconfig that do not change the forward pass here.
    bool double_z = true;
    double dropout = 0;
    f.optional("double_z", double_z);
    f.optional("dropout", dropout);
    f.no_other_keys();
    if (!double_z) throw io_error(fmt::format("{}: double_z false (a deterministic encoder) is not supported", source));
    try {
        c.validate();
    } catch (const std::invalid_argument& e) {
        throw io_error(fmt::format("{}: {}", source, e.what()));
    }
    return c;
}

} // namespace vediff::io
