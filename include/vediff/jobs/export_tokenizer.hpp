#pragma once
// `vediff export`: a trained tokenizer as the field's code loads it.
//   vediff export --tokenizer runs/ve --naming ldm --out ve_ldm.safetensors
//       LDM's / VA-VAE's state_dict names: `AutoencoderKL.load_state_dict(load_file(F), strict=True)`
//   vediff export --tokenizer runs/ve --naming diffusers --out sd_ve/
//       diffusers' layout: sd_ve/diffusion_pytorch_model.safetensors and sd_ve/config.json, so that
//       `AutoencoderKL.from_pretrained("sd_ve")` loads it; scaling_factor is 1/std of all the run's
//       test-set latent elements (SD's convention; diffusion::pooled_stddev of metrics.json's
//       per-channel statistics), 1 when the run has none.
// The latent statistics (per-channel mean and std, as VA-VAE stores them) go into the metadata of
// either file. Files are written to a temporary name and renamed.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/autoencoder_weights.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/train/tokenizer_run.hpp"

namespace vediff::jobs {

struct export_job {
    std::string tokenizer;     // a train-tokenizer output directory
    std::string naming = "ldm";
    std::string out;
};

namespace export_detail {

/// Per-channel mean and unbiased std of the run's test-set latents (metrics.json), if it has them.
struct latent_statistics {
    std::vector<double> mean, std;
    std::int64_t per_channel = 0;  // values behind each channel's statistics
    bool present() const { return !std.empty() && mean.size() == std.size() && per_channel > 1; }
    /// 1/σ with σ the std of all latent elements: SD's scaling_factor.
    double scaling_factor() const { return 1.0 / diffusion::pooled_stddev(mean, std, per_channel); }
};

inline latent_statistics read_latent_statistics(const std::filesystem::path& run, const models::autoencoder_config& c) {
    latent_statistics s;
    std::ifstream in(run / "metrics.json");
    if (!in) return s;
    try {
        const auto j = nlohmann::json::parse(in);
        if (j.contains("latent_channel_mean") && j.contains("latent_channel_std") && j.contains("eval_images")) {
            s.mean = j.at("latent_channel_mean").get<std::vector<double>>();
            s.std = j.at("latent_channel_std").get<std::vector<double>>();
            s.per_channel = j.at("eval_images").get<std::int64_t>() * c.latent_resolution() * c.latent_resolution();
        }
    } catch (const nlohmann::json::exception& e) {
        throw io_error(fmt::format("export: {}: not valid JSON ({})", (run / "metrics.json").string(), e.what()));
    }
    return s;
}

/// diffusers' AutoencoderKL config for the tokenizer.
inline nlohmann::json diffusers_config(const models::autoencoder_config& c, double scaling_factor) {
    std::vector<std::int64_t> widths;
    for (std::int64_t i = 0; i < c.levels(); ++i) widths.push_back(c.level_channels(i));
    return {{"_class_name", "AutoencoderKL"},
            {"in_channels", c.in_channels},
            {"out_channels", c.out_channels},
            {"down_block_types", std::vector<std::string>(static_cast<std::size_t>(c.levels()), "DownEncoderBlock2D")},
            {"up_block_types", std::vector<std::string>(static_cast<std::size_t>(c.levels()), "UpDecoderBlock2D")},
            {"block_out_channels", widths},
            {"layers_per_block", c.num_res_blocks},
            {"act_fn", "silu"},
            {"latent_channels", c.embed_dim},
            {"norm_num_groups", c.norm_groups},
            {"sample_size", c.resolution},
            {"scaling_factor", scaling_factor}};
}

} // namespace export_detail

/// Writes the export; returns what it wrote (paths, naming, scaling factor).
inline nlohmann::json export_tokenizer(const export_job& job) {
    namespace fs = std::filesystem;
    const auto naming = io::parse_weight_naming(job.naming);
    if (job.out.empty()) throw std::invalid_argument("--out is required");
    auto run = train::load_tokenizer_run<cpu>(job.tokenizer);
    const auto& c = run.model.config;
    if (naming == io::weight_naming::diffusers) {
        if (c.embed_dim != c.z_channels)
            throw std::invalid_argument(fmt::format("export --naming diffusers: embed_dim {} differs from z_channels {}, which diffusers' "
                                                    "AutoencoderKL cannot express",
                                                    c.embed_dim, c.z_channels));
        if (!c.attn_resolutions.empty())
            throw std::invalid_argument(fmt::format("export --naming diffusers: the tokenizer has attention inside its levels (at {}), "
                                                    "which diffusers' AutoencoderKL blocks do not have; use --naming ldm",
                                                    c.attn_resolutions));
    }
    const auto stats = export_detail::read_latent_statistics(job.tokenizer, c);
    io::metadata_map metadata{{"format", "pt"}, {"source", fs::absolute(job.tokenizer).lexically_normal().string()},
                              {"naming", std::string(io::to_string(naming))}};
    if (stats.present()) {
        metadata["latent_channel_mean"] = nlohmann::json(stats.mean).dump();
        metadata["latent_channel_std"] = nlohmann::json(stats.std).dump();
        metadata["scaling_factor"] = fmt::format("{}", stats.scaling_factor());
    }
    nlohmann::json report{{"naming", io::to_string(naming)}};
    if (naming == io::weight_naming::ldm) {
        io::save_autoencoder_weights(job.out, run.model, naming, metadata);
        report["weights"] = job.out;
    } else {
        const fs::path dir = job.out;
        std::error_code ec;
        fs::create_directories(dir, ec);
        if (ec) throw io_error(fmt::format("export: cannot create the directory {}: {}", dir.string(), ec.message()));
        const double scaling = stats.present() ? stats.scaling_factor() : 1.0;
        io::save_autoencoder_weights(dir / "diffusion_pytorch_model.safetensors", run.model, naming, metadata);
        io::write_file_atomically(dir / "config.json",
                                  [&](io::atomic_file& f) { f.write(export_detail::diffusers_config(c, scaling).dump(2) + "\n"); });
        report["weights"] = (dir / "diffusion_pytorch_model.safetensors").string();
        report["config"] = (dir / "config.json").string();
        report["scaling_factor"] = scaling;
    }
    if (stats.present()) report["latent_channel_std"] = stats.std;
    return report;
}

inline int export_main(int argc, char** argv, const std::string& program = "vediff export") {
    cxxopts::Options options(program, "Write a trained tokenizer in LDM's or diffusers' naming, for PyTorch code to load");
    // clang-format off
    options.add_options()
        ("tokenizer", "the train-tokenizer output directory", cxxopts::value<std::string>())
        ("naming", "ldm (one safetensors file) | diffusers (a directory: weights + config.json)", cxxopts::value<std::string>()->default_value("ldm"))
        ("out", "the file (ldm) or directory (diffusers) to write", cxxopts::value<std::string>());
    // clang-format on
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        const export_job job{.tokenizer = required_flag(a, "tokenizer"), .naming = a["naming"].as<std::string>(), .out = required_flag(a, "out")};
        require_path(job.tokenizer, "tokenizer", "a train-tokenizer output directory");
        const auto report = export_tokenizer(job);
        fmt::print("wrote {} ({} naming){}\n", report.at("weights").get<std::string>(), job.naming,
                   report.contains("config") ? fmt::format(" and {}", report.at("config").get<std::string>()) : std::string());
        return 0;
    });
}

} // namespace vediff::jobs
