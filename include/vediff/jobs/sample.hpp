#pragma once
// The sample job (`vediff sample`): N images per class from a trained diffusion
// transformer (its EMA weights by default) and the tokenizer it was trained with: noise → sampler
// with classifier-free guidance → de-normalized latents → decoder. Writes a PNG grid (one row per
// class), the images and labels as safetensors (for metrics), and metrics.json with the
// Fashion-MNIST classifier's accuracy on the samples against their conditioning labels.
// The images are 8-bit (metrics/eight_bit_images.hpp), stored as their [−1, 1] float levels.
// The noise is drawn per sample (diffusion/sampling_noise.hpp): sample i is the same for any
// --batch. Decoding runs under nn::no_grad (jobs/inference.hpp); the DiT in inference mode too.
//   vediff sample --dit runs/dit_ve --classifier runs/classifier/classifier.safetensors --out runs/samples_ve
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/diffusion/adaptive_ode.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/diffusion/sampling_noise.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/image.hpp"
#include "vediff/io/image_grid.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/jobs/inference.hpp"
#include "vediff/metrics/classifier_score.hpp"
#include "vediff/metrics/eight_bit_images.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/train/checkpoint.hpp"
#include "vediff/train/dit_run.hpp"
#include "vediff/train/tokenizer_run.hpp"

namespace vediff::jobs {

struct sample_job {
    std::filesystem::path dit, tokenizer, classifier, out = "runs/samples";
    std::int64_t per_class = 100, batch = 100;
    diffusion::sampler_config sampler{.steps = 50};
    std::string sampler_name = "euler";  // euler | heun | sde | dopri5
    diffusion::adaptive_ode_config adaptive;  // --sampler dopri5 (SiT's atol 1e-6, rtol 1e-3)
    diffusion::guidance_config guidance{.scale = 4.0};
    std::uint64_t seed = 0;
    bool use_ema = true;
    std::string device = "cpu";  // where the DiT and the decoder run
    std::string precision = "fp32";  // the DiT's products: fp32 | bf16 (core/precision.hpp), whatever it was trained in
};

/// The samples of a sample job as written to OUT/samples.safetensors.
struct samples {
    tensor<float> images;  // (N, C, H, W), 8-bit levels b/127.5 − 1 in [−1, 1]
    std::vector<std::int32_t> labels;
};

/// The samples as 8-bit images: files written before the sample job quantized (raw decodes) are
/// quantized here, files since are unchanged by it (quantizing twice changes nothing).
inline samples load_samples(const std::filesystem::path& path) {
    const io::safetensors_file f(path);
    io::note_if_unverified(f);
    samples s{f.get<float>("images"), f.get<std::int32_t>("labels").to_vector()};
    if (s.images.rank() != 4 || s.images.dim(0) != static_cast<std::int64_t>(s.labels.size()))
        f.fail(fmt::format("images {} and {} labels do not match", s.images.shape(), s.labels.size()));
    s.images = metrics::as_8bit_images(s.images.view());
    return s;
}

/// The DiT run's configuration, read from DIR/checkpoint; io_error when there is none.
inline train::dit_run_config read_dit_run(const std::filesystem::path& dit) {
    const auto checkpoint_dir = dit / "checkpoint";
    if (!train::checkpoint_exists(checkpoint_dir))
        throw io_error(fmt::format("--dit {}: no checkpoint in {} (train one with train-dit)", dit.string(), checkpoint_dir.string()));
    return train::dit_run_config::from_json(nlohmann::json::parse(train::read_train_state(checkpoint_dir).config_json));
}

/// The tokenizer must be the one whose latents the DiT learned: same latent shape and, where the
/// DiT run recorded it, the same run configuration (a KL tokenizer's decoder cannot read a DiT
/// trained on VE latents, though the shapes agree).
template <device D>
void check_tokenizer_matches(const train::dit_run_config& cfg, const train::tokenizer_run<D>& tokenizer,
                                    const std::filesystem::path& dit) {
    const auto shape = tokenizer.model.latent_shape(1);
    if (shape[1] != cfg.model.in_channels || shape[2] != cfg.model.input_size)
        throw std::invalid_argument(fmt::format("the DiT in {} works on latents ({}, {}, {}), but the tokenizer {} makes {}", dit.string(),
                                                cfg.model.in_channels, cfg.model.input_size, cfg.model.input_size,
                                                tokenizer.dir.string(), shape.to_string()));
    const auto recorded = nlohmann::json::parse(cfg.tokenizer_config);
    if (!recorded.empty() && recorded != tokenizer.config)
        throw std::invalid_argument(fmt::format("the DiT in {} was trained on the latents of tokenizer {}, not {} (their run "
                                                "configurations differ: loss {} vs {}); sample with the tokenizer it was trained on",
                                                dit.string(), cfg.tokenizer, tokenizer.dir.string(), recorded.value("loss", "?"),
                                                tokenizer.config.value("loss", "?")));
}

namespace sample_detail {

template <class Design, device D, class Precision>
nlohmann::json run(const train::dit_run_config& cfg, const sample_job& job) {
    namespace fs = std::filesystem;
    using model_type = models::diffusion_transformer<Design, float, D, Precision>;
    model_type model(cfg.model);
    optim::ema<float, D> average(model);
    train::model_with_ema<model_type> model_and_average{model, average};
    io::load_state_dict(train::checkpoint_model_file(job.dit / "checkpoint"), model_and_average);
    if (job.use_ema) average.copy_to(model);
    model.train(false);
    auto tokenizer = train::load_tokenizer_run<D>(job.tokenizer.empty() ? fs::path(cfg.tokenizer) : job.tokenizer);
    check_tokenizer_matches(cfg, tokenizer, job.dit);
    const diffusion::latent_normalization<float, D> normalization(cfg.latent_mean, cfg.latent_std);

    const std::int64_t classes = cfg.model.num_classes, n = classes * job.per_class;
    const tensor_shape latent{cfg.model.in_channels, cfg.model.input_size, cfg.model.input_size};
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) labels[std::size_t(i)] = static_cast<std::int32_t>(i / job.per_class);
    tensor<float> images;
    philox_generator noise_gen{job.seed, 0x6e6f697365ULL, 0};  // "noise"
    const diffusion::sampling_noise noise(noise_gen, n, latent, job.sampler);
    const auto velocity_model = [&](const tensor_view<float, D>& x, const tensor_view<float, D>& t, const tensor_view<std::int32_t, D>& y) {
        return model.forward(x, t, y);
    };
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::int64_t> function_evaluations;  // dopri5: calls of the guided velocity per batch
    for (std::int64_t begin = 0; begin < n; begin += job.batch) {
        const std::int64_t end = std::min(n, begin + job.batch);
        const auto x0 = noise.initial<float, D>(begin, end);
        auto v = diffusion::make_guided_velocity<float, D>(
            std::cref(velocity_model), std::vector<std::int32_t>(labels.begin() + begin, labels.begin() + end),
            static_cast<std::int32_t>(classes), job.guidance);
        tensor<float, D> z_normalized;
        if (job.sampler_name == "dopri5") {
            auto result = diffusion::sample_dopri5(v, x0.view(), job.adaptive);
            function_evaluations.push_back(result.stats.function_evaluations);
            z_normalized = std::move(result.sample);
        } else {
            z_normalized = diffusion::sample(v, x0.view(), job.sampler, noise.steps<float, D>(begin));
        }
        const auto z = normalization.denormalize(z_normalized.view());
        const auto decoded = decode_to_host(tokenizer.model, z.view());
        if (!images.defined()) images = tensor<float>({n, decoded.dim(1), decoded.dim(2), decoded.dim(3)});
        ops::copy(images.slice(begin, end), decoded.view());
        fmt::print("sampled {}/{}\n", end, n);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    images = metrics::as_8bit_images(images.view());  // what the PNG shows and every metric scores

    fs::create_directories(job.out);
    std::vector<tensor_view<float>> rows;
    const std::int64_t shown = std::min<std::int64_t>(job.per_class, 16);
    for (std::int64_t c = 0; c < classes; ++c) rows.push_back(images.slice(c * job.per_class, c * job.per_class + shown));
    io::write_png(job.out / "samples.png", io::make_image_grid(rows, {.columns = shown}));
    io::safetensors_writer w;
    w.add("images", images.view());
    w.add("labels", tensor<std::int32_t>::from_host({n}, std::span<const std::int32_t>(labels)).view());
    w.write(job.out / "samples.safetensors");

    nlohmann::json metrics = {{"dit", job.dit.string()}, {"tokenizer", tokenizer.dir.string()}, {"ema", job.use_ema},
                              {"sampler", job.sampler_name}, {"steps", job.sampler.steps}, {"cfg_scale", job.guidance.scale},
                              {"cfg_interval", {job.guidance.interval_start, job.guidance.interval_end}}, {"seed", job.seed},
                              {"images", n}, {"per_class", job.per_class}, {"sampling_seconds", seconds},
                              {"images_per_second", double(n) / seconds}, {"threads", omp_get_max_threads()}, {"device", D::name}};
    if (job.sampler_name == "dopri5") {
        metrics["atol"] = job.adaptive.atol;
        metrics["rtol"] = job.adaptive.rtol;
        metrics["function_evaluations"] = std::accumulate(function_evaluations.begin(), function_evaluations.end(), std::int64_t(0));
        metrics["function_evaluations_per_batch"] = function_evaluations;
    }
    metrics["precision"] = std::string(Precision::name);
    if (!job.classifier.empty()) {
        auto net = metrics::load_fashion_classifier(job.classifier);
        metrics["classifier"] = job.classifier.string();
        metrics["classifier_accuracy"] = metrics::classifier_accuracy(net, images.view(), labels);
    }
    io::write_file_atomically(job.out / "metrics.json", [&](io::atomic_file& f) { f.write(metrics.dump(2) + "\n"); });
    fmt::print("{} images in {:.1f} s ({:.2f} images/s){}; wrote {}\n", n, seconds, double(n) / seconds,
               metrics.contains("classifier_accuracy") ? fmt::format(", classifier accuracy {:.4f}", metrics["classifier_accuracy"].get<double>()) : "",
               (job.out / "metrics.json").string());
    return metrics;
}

} // namespace sample_detail

/// Samples and decodes on job.device (one of Devices), and writes OUT/{samples.png,
/// samples.safetensors, metrics.json}; returns the metrics.
template <class Devices = cpu_only>
nlohmann::json sample(const sample_job& job) {
    if (job.per_class < 1 || job.batch < 1) throw std::invalid_argument("--per-class and --batch must be positive");
    const auto cfg = read_dit_run(job.dit);
    return with_device<Devices>(job.device, [&]<device D>() {
        return train::with_dit_design(cfg.design, [&]<class Design>() {
            return with_precision(job.precision, [&]<class Precision>() { return sample_detail::run<Design, D, Precision>(cfg, job); });
        });
    });
}

inline diffusion::sampler_kind parse_sampler(const std::string& name) {
    if (name == "euler") return diffusion::sampler_kind::euler;
    if (name == "heun") return diffusion::sampler_kind::heun;
    if (name == "sde") return diffusion::sampler_kind::euler_maruyama;
    throw usage_error(fmt::format("--sampler {}: expected euler, heun, sde or dopri5", name));
}

template <class Devices = cpu_only>
void add_sample_options(cxxopts::Options& options) {
    const sample_job d;
    const auto dflt = [](auto v) { return fmt::format("{}", v); };
    // clang-format off
    options.add_options()
        ("dit", "output directory of train-dit (required)", cxxopts::value<std::string>())
        ("tokenizer", "tokenizer directory (default: the one the latents came from)", cxxopts::value<std::string>()->default_value(""))
        ("classifier", "Fashion-MNIST classifier weights (from the classifier job)",
         cxxopts::value<std::string>()->default_value("runs/classifier/classifier.safetensors"))
        ("out", "output directory", cxxopts::value<std::string>()->default_value(d.out.string()))
        ("per-class", "images per class", cxxopts::value<std::int64_t>()->default_value(dflt(d.per_class)))
        ("batch", "images per sampling batch", cxxopts::value<std::int64_t>()->default_value(dflt(d.batch)))
        ("sampler", "euler | heun | sde | dopri5 (adaptive: --atol, --rtol)", cxxopts::value<std::string>()->default_value(d.sampler_name))
        ("steps", "sampler steps", cxxopts::value<int>()->default_value(dflt(d.sampler.steps)))
        ("time-shift", "ODE time shift s (1: none)", cxxopts::value<double>()->default_value(dflt(d.sampler.time_shift)))
        ("atol", "dopri5: absolute tolerance", cxxopts::value<double>()->default_value(dflt(d.adaptive.atol)))
        ("rtol", "dopri5: relative tolerance", cxxopts::value<double>()->default_value(dflt(d.adaptive.rtol)))
        ("cfg", "classifier-free guidance scale (1: none)", cxxopts::value<double>()->default_value(dflt(d.guidance.scale)))
        ("cfg-interval", "guide only for t in [a, b], e.g. 0,1", cxxopts::value<std::string>()->default_value("0,1"))
        ("cfg-first-channels", "guide only the first k channels (the reference code's quirk: 3; 0 = all)",
         cxxopts::value<std::int64_t>()->default_value("0"))
        ("no-classifier", "do not report the classifier's accuracy")
        ("no-ema", "sample with the raw weights instead of the EMA")
        ("seed", "random seed", cxxopts::value<std::uint64_t>()->default_value(dflt(d.seed)))
        ("precision", "the DiT's products: fp32 | bf16 (bf16 operands, fp32 accumulation)", cxxopts::value<std::string>()->default_value(d.precision));
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
sample_job read_sample_options(const cxxopts::ParseResult& a) {
    sample_job job;
    job.dit = required_flag(a, "dit");
    job.tokenizer = a["tokenizer"].as<std::string>();
    if (!a.count("no-classifier")) {
        job.classifier = a["classifier"].as<std::string>();
        require_path(job.classifier, "classifier", "train it with `vediff classifier`, or pass --no-classifier");
    }
    job.out = a["out"].as<std::string>();
    job.per_class = a["per-class"].as<std::int64_t>();
    job.batch = a["batch"].as<std::int64_t>();
    job.sampler_name = a["sampler"].as<std::string>();
    if (job.sampler_name == "dopri5") {  // adaptive (diffusion/adaptive_ode.hpp): --steps and --time-shift do not apply
        job.adaptive.atol = a["atol"].as<double>();
        job.adaptive.rtol = a["rtol"].as<double>();
        diffusion::validate(job.adaptive);
    } else {
        job.sampler.kind = parse_sampler(job.sampler_name);
    }
    job.sampler.steps = a["steps"].as<int>();
    job.sampler.time_shift = a["time-shift"].as<double>();
    job.guidance.scale = a["cfg"].as<double>();
    const auto interval = a["cfg-interval"].as<std::string>();
    if (std::sscanf(interval.c_str(), "%lf,%lf", &job.guidance.interval_start, &job.guidance.interval_end) != 2)
        throw usage_error(fmt::format("--cfg-interval {}: expected two numbers a,b", interval));
    job.guidance.first_channels = a["cfg-first-channels"].as<std::int64_t>();
    job.use_ema = a.count("no-ema") == 0;
    job.seed = a["seed"].as<std::uint64_t>();
    job.precision = a["precision"].as<std::string>();
    if (!is_precision_name(job.precision)) throw usage_error(fmt::format("--precision {}: expected fp32 or bf16", job.precision));
    job.device = read_device<Devices>(a);
    return job;
}

template <class Devices = cpu_only>
int sample_main(int argc, char** argv, const std::string& program = "vediff sample") {
    cxxopts::Options options(program, "Class-conditional samples of a trained diffusion transformer, decoded by its tokenizer");
    add_sample_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)sample<Devices>(read_sample_options<Devices>(a));
        return 0;
    });
}

} // namespace vediff::jobs
