#pragma once
// The encode job (`vediff encode`, examples/encode_latents): a trained tokenizer + Fashion-MNIST →
// the latent cache a diffusion transformer trains on (train/latent_cache.hpp): posterior samples
// z = μ + σ·ε of every image (or, with --posterior-mean, μ), their labels, and the per-channel
// mean and std of the latents.
//   encode --tokenizer runs/ve --out runs/ve/latents.safetensors
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "vediff/data/fashion_mnist.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/jobs/inference.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/train/latent_cache.hpp"
#include "vediff/train/tokenizer_run.hpp"
#include "vediff/util/progress.hpp"

namespace vediff::jobs {

struct encode_job {
    std::filesystem::path tokenizer;  // output directory of train-tokenizer
    std::filesystem::path out;        // latent cache to write
    std::string data = data::fashion_mnist_default_dir.string();
    std::string split = "train";      // train | test
    std::int64_t max_images = 0;      // > 0: only the first N images
    std::uint64_t seed = 0;           // of the posterior samples
    bool posterior_mean = false;      // cache μ instead of samples z = μ + σ·ε
    std::string device = "cpu";       // where the encoder runs; the cache is written from the host
};

namespace encode_detail {

template <device D>
train::latent_cache encode(const encode_job& job) {
    auto tokenizer = train::load_tokenizer_run<D>(job.tokenizer);
    const auto images = data::load_fashion_mnist<float>(job.split == "train" ? data::split::train : data::split::test,
                                                        data::fashion_mnist_tokenizer_format(job.data));
    const std::int64_t n = job.max_images > 0 ? std::min(job.max_images, images.size()) : images.size();
    const std::int64_t batch = 100;

    train::latent_cache cache;
    cache.tokenizer = std::filesystem::absolute(tokenizer.dir).lexically_normal().string();
    cache.tokenizer_config = tokenizer.config.dump();
    cache.adopt_latents(tensor<float>(tokenizer.model.latent_shape(n)));
    cache.labels.assign(images.labels.begin(), images.labels.begin() + n);
    diffusion::latent_moments moments;
    philox_generator posterior{job.seed, 0x6c6174656e74ULL, 0};  // "latent"
    util::progress_bar bar((n + batch - 1) / batch, {.label = "encode", .items_per_step = double(batch), .unit = "img"});
    for (std::int64_t begin = 0, step = 0; begin < n; begin += batch, ++step) {
        const std::int64_t end = std::min(n, begin + batch);
        const view_on<float, D> x(images.images.slice(begin, end));
        auto post = tokenizer.posterior(x.view(), job.seed, models::sigma_vae_noise::encoding_draw, begin);  // under nn::no_grad
        const auto z = job.posterior_mean ? tensor<float, D>::copy_of(post.mean.view()) : post.sample(posterior);
        const view_on<float, cpu> z_on_host(z.view());
        ops::copy(cache.latents.slice(begin, end), z_on_host.view());
        moments.add(z_on_host.view());
        bar.update(step + 1);
    }
    bar.finish();
    cache.channel_mean = moments.mean();
    cache.channel_std = moments.stddev();
    return cache;
}

} // namespace encode_detail

/// Encodes the data set on job.device (one of Devices) and writes the cache to job.out
/// (atomically); returns the cache.
template <class Devices = cpu_only>
train::latent_cache encode_latents(const encode_job& job) {
    if (job.split != "train" && job.split != "test") throw std::invalid_argument(fmt::format("--split {}: expected train or test", job.split));
    auto cache = with_device<Devices>(job.device, [&]<device D>() { return encode_detail::encode<D>(job); });
    const auto n = cache.latents.dim(0);
    train::save_latent_cache(job.out, cache);
    fmt::print("{} latents {} from {}; channel mean {::.4f}, std {::.4f}; wrote {}\n", n, cache.latents.shape(), cache.tokenizer,
               cache.channel_mean, cache.channel_std, job.out.string());
    return cache;
}

template <class Devices = cpu_only>
void add_encode_options(cxxopts::Options& options) {
    const encode_job d;
    // clang-format off
    options.add_options()
        ("tokenizer", "output directory of train-tokenizer (required)", cxxopts::value<std::string>())
        ("out", "latent cache to write, safetensors (required)", cxxopts::value<std::string>())
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(d.data))
        ("split", "train or test", cxxopts::value<std::string>()->default_value(d.split))
        ("max-images", "encode only the first N images (0: all)", cxxopts::value<std::int64_t>()->default_value(fmt::format("{}", d.max_images)))
        ("seed", "seed of the posterior samples", cxxopts::value<std::uint64_t>()->default_value(fmt::format("{}", d.seed)))
        ("posterior-mean", "cache the posterior means instead of samples");
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
encode_job read_encode_options(const cxxopts::ParseResult& a) {
    return {.tokenizer = required_flag(a, "tokenizer"), .out = required_flag(a, "out"), .data = a["data"].as<std::string>(),
            .split = a["split"].as<std::string>(), .max_images = a["max-images"].as<std::int64_t>(), .seed = a["seed"].as<std::uint64_t>(),
            .posterior_mean = a.count("posterior-mean") > 0, .device = read_device<Devices>(a)};
}

template <class Devices = cpu_only>
int encode_latents_main(int argc, char** argv, const std::string& program = "vediff encode") {
    cxxopts::Options options(program, "Encode a data set with a trained tokenizer into a latent cache");
    add_encode_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)encode_latents<Devices>(read_encode_options<Devices>(a));
        return 0;
    });
}

} // namespace vediff::jobs
