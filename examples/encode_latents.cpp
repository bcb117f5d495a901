// encode_latents: a trained tokenizer + Fashion-MNIST → the latent cache a diffusion transformer
// trains on (train/latent_cache.hpp): posterior samples z = μ + σ·ε of every image, their labels,
// and the per-channel mean and std of the latents for the normalization.
//   encode_latents --tokenizer runs/ve --out runs/ve/latents.safetensors
#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/data/fashion_mnist.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/train/latent_cache.hpp"
#include "vediff/train/tokenizer_run.hpp"
#include "vediff/util/progress.hpp"

using namespace vediff;

int main(int argc, char** argv) {
    cxxopts::Options options("encode_latents", "Encode a data set with a trained tokenizer into a latent cache");
    // clang-format off
    options.add_options()
        ("tokenizer", "output directory of train_tokenizer", cxxopts::value<std::string>())
        ("out", "latent cache to write (safetensors)", cxxopts::value<std::string>())
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(data::fashion_mnist_default_dir.string()))
        ("split", "train or test", cxxopts::value<std::string>()->default_value("train"))
        ("max-images", "encode only the first N images (0: all)", cxxopts::value<std::int64_t>()->default_value("0"))
        ("seed", "seed of the posterior samples", cxxopts::value<std::uint64_t>()->default_value("0"))
        ("h,help", "this help");
    // clang-format on
    try {
        const auto a = options.parse(argc, argv);
        if (a.count("help")) {
            std::puts(options.help().c_str());
            return 0;
        }
        for (const char* required : {"tokenizer", "out"})
            if (!a.count(required)) throw std::invalid_argument(fmt::format("--{} is required (see --help)", required));
        const std::string split_name = a["split"].as<std::string>();
        if (split_name != "train" && split_name != "test") throw std::invalid_argument(fmt::format("--split {}: expected train or test", split_name));

        auto tokenizer = train::load_tokenizer_run(a["tokenizer"].as<std::string>());
        const auto images = data::load_fashion_mnist<float>(split_name == "train" ? data::split::train : data::split::test,
                                                            data::fashion_mnist_tokenizer_format(a["data"].as<std::string>()));
        const std::int64_t max_images = a["max-images"].as<std::int64_t>();
        const std::int64_t n = max_images > 0 ? std::min(max_images, images.size()) : images.size();
        const std::int64_t batch = 100;

        train::latent_cache cache;
        cache.tokenizer = std::filesystem::absolute(tokenizer.dir).lexically_normal().string();
        cache.tokenizer_config = tokenizer.config.dump();
        cache.latents = tensor<float>(tokenizer.model.latent_shape(n));
        cache.labels.assign(images.labels.begin(), images.labels.begin() + n);
        diffusion::latent_moments moments;
        philox_generator posterior{a["seed"].as<std::uint64_t>(), 0x6c6174656e74ULL, 0};  // "latent"
        util::progress_bar bar((n + batch - 1) / batch, {.label = "encode", .items_per_step = double(batch), .unit = "img"});
        for (std::int64_t begin = 0, step = 0; begin < n; begin += batch, ++step) {
            const std::int64_t end = std::min(n, begin + batch);
            const auto x = images.images.slice(begin, end);
            const auto moments_of_x = tokenizer.model.encode(x);
            auto post = models::gaussian_posterior<float>::from_moments(moments_of_x);
            const auto z = post.sample(posterior);
            ops::copy(cache.latents.slice(begin, end), z.view());
            moments.add(z.view());
            bar.update(step + 1);
        }
        bar.finish();
        cache.channel_mean = moments.mean();
        cache.channel_std = moments.stddev();
        train::save_latent_cache(a["out"].as<std::string>(), cache);
        fmt::print("{} latents {} from {}; channel mean {::.4f}, std {::.4f}; wrote {}\n", n, cache.latents.shape(), cache.tokenizer,
                   cache.channel_mean, cache.channel_std, a["out"].as<std::string>());
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "encode_latents: {}\n", e.what());
        return 1;
    }
}
