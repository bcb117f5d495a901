// sample: N images per class from a trained diffusion transformer (train_dit, its EMA weights by
// default) and the tokenizer it was trained with: noise → sampler with classifier-free guidance →
// de-normalized latents → decoder. Writes a PNG grid (one row per class), the images and labels
// as safetensors (for metrics), and metrics.json with the Fashion-MNIST classifier's accuracy on
// the samples against their conditioning labels.
//   sample --dit runs/dit_ve --classifier runs/classifier/classifier.safetensors --out runs/samples_ve
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/image.hpp"
#include "vediff/io/image_grid.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/models/fashion_classifier.hpp"
#include "vediff/ops/cross_entropy.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/train/checkpoint.hpp"
#include "vediff/train/dit_run.hpp"
#include "vediff/train/tokenizer_run.hpp"

using namespace vediff;
namespace fs = std::filesystem;

namespace {

struct sample_options {
    fs::path dit, tokenizer, classifier, out;
    std::int64_t per_class = 100, batch = 100;
    diffusion::sampler_config sampler;
    std::string sampler_name = "euler";
    diffusion::guidance_config guidance;
    std::uint64_t seed = 0;
    bool use_ema = true;
};

/// Tokenizer-format images (B, 1, 32, 32) in [−1, 1] → the classifier's format (B, 1, 28, 28) in
/// [0, 1]: the 2-pixel border the tokenizer format adds is cut off again.
tensor<float> to_classifier_format(const tensor_view<float>& images) {
    const std::int64_t n = images.dim(0), side = images.dim(2), pad = (side - 28) / 2;
    auto out = tensor<float>::empty({n, 1, 28, 28});
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t r = 0; r < 28; ++r)
            for (std::int64_t c = 0; c < 28; ++c) out.at(i, 0, r, c) = (images.at(i, 0, r + pad, c + pad) + 1.0f) / 2.0f;
    return out;
}

/// The fraction of images the classifier assigns to their label.
double classifier_accuracy(const fs::path& weights, const tensor_view<float>& images, const std::vector<std::int32_t>& labels) {
    const io::safetensors_file f(weights);
    models::fashion_classifier_config c;
    if (auto it = f.metadata().find("width"); it != f.metadata().end()) c.width = std::stoll(it->second);
    models::fashion_classifier<float> net(c);
    io::load_state_dict(weights, net);
    const auto x = to_classifier_format(images);
    std::int64_t correct = 0;
    for (std::int64_t begin = 0; begin < x.dim(0); begin += 500) {
        const std::int64_t end = std::min(x.dim(0), begin + 500);
        const auto logits = net.forward(x.slice(begin, end));
        const auto predicted = ops::argmax(logits.view()).to_vector();
        for (std::int64_t i = begin; i < end; ++i) correct += predicted[std::size_t(i - begin)] == labels[std::size_t(i)];
    }
    return double(correct) / double(x.dim(0));
}

template <class Design>
int run(const train::dit_run_config& cfg, sample_options opt) {
    using model_type = models::diffusion_transformer<Design, float, cpu>;
    model_type model(cfg.model);
    optim::ema<float> average(model);
    train::model_with_ema<model_type> model_and_average{model, average};
    io::load_state_dict(opt.dit / "checkpoint" / train::model_file_name, model_and_average);
    if (opt.use_ema) average.copy_to(model);
    model.train(false);
    auto tokenizer = train::load_tokenizer_run(opt.tokenizer.empty() ? fs::path(cfg.tokenizer) : opt.tokenizer);
    const diffusion::latent_normalization<float> normalization(cfg.latent_mean, cfg.latent_std);

    const std::int64_t classes = cfg.model.num_classes, n = classes * opt.per_class;
    const tensor_shape latent{cfg.model.in_channels, cfg.model.input_size, cfg.model.input_size};
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) labels[std::size_t(i)] = static_cast<std::int32_t>(i / opt.per_class);
    tensor<float> images;
    philox_generator noise_gen{opt.seed, 0x6e6f697365ULL, 0}, sde_gen{opt.seed, 0x736465ULL, 0};  // "noise", "sde"
    const auto velocity_model = [&](const tensor_view<float>& x, const tensor_view<float>& t, const tensor_view<std::int32_t>& y) {
        return model.forward(x, t, y);
    };
    const auto start = std::chrono::steady_clock::now();
    for (std::int64_t begin = 0; begin < n; begin += opt.batch) {
        const std::int64_t end = std::min(n, begin + opt.batch);
        auto x0 = tensor<float>({end - begin, latent[0], latent[1], latent[2]});
        ops::fill_normal(x0.view(), noise_gen);
        auto v = diffusion::make_guided_velocity<float, cpu>(
            std::cref(velocity_model), std::vector<std::int32_t>(labels.begin() + begin, labels.begin() + end),
            static_cast<std::int32_t>(classes), opt.guidance);
        const auto z_normalized = diffusion::sample(v, x0.view(), opt.sampler, sde_gen);
        const auto z = normalization.denormalize(z_normalized.view());
        const auto decoded = tokenizer.model.decode(z);
        if (!images.defined()) images = tensor<float>({n, decoded.dim(1), decoded.dim(2), decoded.dim(3)});
        ops::copy(images.slice(begin, end), decoded.view());
        fmt::print("sampled {}/{}\n", end, n);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    fs::create_directories(opt.out);
    std::vector<tensor_view<float>> rows;
    const std::int64_t shown = std::min<std::int64_t>(opt.per_class, 16);
    for (std::int64_t c = 0; c < classes; ++c) rows.push_back(images.slice(c * opt.per_class, c * opt.per_class + shown));
    io::write_png(opt.out / "samples.png", io::make_image_grid(rows, {.columns = shown}));
    io::safetensors_writer w;
    w.add("images", images.view());
    w.add("labels", tensor<std::int32_t>::from_host({n}, std::span<const std::int32_t>(labels)).view());
    w.write(opt.out / "samples.safetensors");

    nlohmann::json metrics = {{"dit", opt.dit.string()}, {"tokenizer", tokenizer.dir.string()}, {"ema", opt.use_ema},
                              {"sampler", opt.sampler_name}, {"steps", opt.sampler.steps}, {"cfg_scale", opt.guidance.scale},
                              {"cfg_interval", {opt.guidance.interval_start, opt.guidance.interval_end}}, {"seed", opt.seed},
                              {"images", n}, {"per_class", opt.per_class}, {"sampling_seconds", seconds},
                              {"images_per_second", double(n) / seconds}, {"threads", omp_get_max_threads()}};
    if (!opt.classifier.empty()) {
        metrics["classifier"] = opt.classifier.string();
        metrics["classifier_accuracy"] = classifier_accuracy(opt.classifier, images.view(), labels);
    }
    io::write_file_atomically(opt.out / "metrics.json", [&](io::atomic_file& f) { f.write(metrics.dump(2) + "\n"); });
    fmt::print("{} images in {:.1f} s ({:.2f} images/s){}; wrote {}\n", n, seconds, double(n) / seconds,
               metrics.contains("classifier_accuracy") ? fmt::format(", classifier accuracy {:.4f}", metrics["classifier_accuracy"].get<double>()) : "",
               (opt.out / "metrics.json").string());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    cxxopts::Options options("sample", "Class-conditional samples of a trained diffusion transformer, decoded by its tokenizer");
    // clang-format off
    options.add_options()
        ("dit", "output directory of train_dit", cxxopts::value<std::string>())
        ("tokenizer", "tokenizer directory (default: the one the latents came from)", cxxopts::value<std::string>()->default_value(""))
        ("classifier", "Fashion-MNIST classifier weights (from classify_fashion_mnist)",
         cxxopts::value<std::string>()->default_value("runs/classifier/classifier.safetensors"))
        ("out", "output directory", cxxopts::value<std::string>()->default_value("runs/samples"))
        ("per-class", "images per class", cxxopts::value<std::int64_t>()->default_value("100"))
        ("batch", "images per sampling batch", cxxopts::value<std::int64_t>()->default_value("100"))
        ("sampler", "euler | heun | sde", cxxopts::value<std::string>()->default_value("euler"))
        ("steps", "sampler steps", cxxopts::value<int>()->default_value("50"))
        ("time-shift", "ODE time shift s (1: none)", cxxopts::value<double>()->default_value("1"))
        ("cfg", "classifier-free guidance scale (1: none)", cxxopts::value<double>()->default_value("4"))
        ("cfg-interval", "guide only for t in [a, b], e.g. 0,1", cxxopts::value<std::string>()->default_value("0,1"))
        ("cfg-first-channels", "guide only the first k channels (the reference code's quirk: 3; 0 = all)",
         cxxopts::value<std::int64_t>()->default_value("0"))
        ("no-classifier", "do not report the classifier's accuracy")
        ("no-ema", "sample with the raw weights instead of the EMA")
        ("seed", "random seed", cxxopts::value<std::uint64_t>()->default_value("0"))
        ("h,help", "this help");
    // clang-format on
    try {
        const auto a = options.parse(argc, argv);
        if (a.count("help")) {
            std::puts(options.help().c_str());
            return 0;
        }
        if (!a.count("dit")) throw std::invalid_argument("--dit is required (see --help)");
        sample_options opt;
        opt.dit = a["dit"].as<std::string>();
        opt.tokenizer = a["tokenizer"].as<std::string>();
        if (!a.count("no-classifier")) {
            opt.classifier = a["classifier"].as<std::string>();
            if (!fs::exists(opt.classifier))
                throw io_error(fmt::format("--classifier {}: no such file (train it with ./vediff.sh demo, or pass --no-classifier)",
                                           opt.classifier.string()));
        }
        opt.out = a["out"].as<std::string>();
        opt.per_class = a["per-class"].as<std::int64_t>();
        opt.batch = a["batch"].as<std::int64_t>();
        if (opt.per_class < 1 || opt.batch < 1) throw std::invalid_argument("--per-class and --batch must be positive");
        opt.sampler_name = a["sampler"].as<std::string>();
        if (opt.sampler_name == "euler") opt.sampler.kind = diffusion::sampler_kind::euler;
        else if (opt.sampler_name == "heun") opt.sampler.kind = diffusion::sampler_kind::heun;
        else if (opt.sampler_name == "sde") opt.sampler.kind = diffusion::sampler_kind::euler_maruyama;
        else throw std::invalid_argument(fmt::format("--sampler {}: expected euler, heun or sde", opt.sampler_name));
        opt.sampler.steps = a["steps"].as<int>();
        opt.sampler.time_shift = a["time-shift"].as<double>();
        opt.guidance.scale = a["cfg"].as<double>();
        const auto interval = a["cfg-interval"].as<std::string>();
        if (std::sscanf(interval.c_str(), "%lf,%lf", &opt.guidance.interval_start, &opt.guidance.interval_end) != 2)
            throw std::invalid_argument(fmt::format("--cfg-interval {}: expected two numbers a,b", interval));
        opt.guidance.first_channels = a["cfg-first-channels"].as<std::int64_t>();
        opt.use_ema = a.count("no-ema") == 0;
        opt.seed = a["seed"].as<std::uint64_t>();
        const auto checkpoint_dir = opt.dit / "checkpoint";
        if (!train::checkpoint_exists(checkpoint_dir)) throw io_error(fmt::format("--dit {}: no checkpoint in {}", opt.dit.string(), checkpoint_dir.string()));
        const auto cfg = train::dit_run_config::from_json(nlohmann::json::parse(train::read_train_state(checkpoint_dir).config_json));
        return train::with_dit_design(cfg.design, [&]<class Design>() { return run<Design>(cfg, opt); });
    } catch (const std::exception& e) {
        fmt::print(stderr, "sample: {}\n", e.what());
        return 1;
    }
}
