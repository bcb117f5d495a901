#pragma once
// The encode job (`vediff encode`, examples/encode_latents): a trained tokenizer + Fashion-MNIST or
// a folder of images → the latent cache a diffusion transformer trains on (train/latent_cache.hpp):
// posterior samples z = μ + σ·ε of every image (σ-VAE runs: their fixed noise; with
// --posterior-mean, μ), their labels, and the per-channel mean and std of the latents. Both the
// images and the cache stream: a batch at a time is decoded (the next one on another thread),
// encoded and appended to the file, so an ImageNet folder never lies in memory whole.
//   encode --tokenizer runs/ve --out runs/ve/latents.safetensors
//   encode --tokenizer runs/f8 --image-folder imagenet/train --image-size 256 --flip --out latents.safetensors
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <span>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "vediff/data/fashion_mnist.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/data/image_stream.hpp"
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
    std::string split = "train";      // train | test (Fashion-MNIST)
    std::string image_folder;         // non-empty: encode every image of this folder instead (streamed)
    std::int64_t image_size = 256;    // image-folder: side after the crop
    int channels = 3;                 // image-folder: 1 or 3
    std::string crop = "adm";         // image-folder: adm | resize (data/image_stream.hpp)
    bool fail_on_corrupt = false;     // image-folder: an unreadable file ends the job (default: replaced, named)
    bool flip = false;                // also encode every image mirrored (LightningDiT's feature extraction)
    std::int64_t max_images = 0;      // > 0: only the first N images
    std::uint64_t seed = 0;           // of the posterior samples
    bool posterior_mean = false;      // cache μ instead of samples z = μ + σ·ε
    std::string device = "cpu";       // where the encoder runs; the cache is written from the host
};

namespace encode_detail {

/// The images to encode, read a batch at a time: Fashion-MNIST from memory or a folder's files.
struct image_source {
    std::int64_t size = 0;
    std::function<data::labeled_images<float>(std::int64_t begin, std::int64_t end)> read;
};

inline image_source open_images(const encode_job& job, std::shared_ptr<data::unreadable_files> unreadable) {
    if (job.image_folder.empty()) {
        auto images = std::make_shared<data::labeled_images<float>>(data::load_fashion_mnist<float>(
            job.split == "train" ? data::split::train : data::split::test, data::fashion_mnist_tokenizer_format(job.data)));
        const std::int64_t n = job.max_images > 0 ? std::min(job.max_images, images->size()) : images->size();
        return {n, [images](std::int64_t begin, std::int64_t end) {
                    return data::labeled_images<float>{tensor<float>::copy_of(images->images.slice(begin, end)),
                                                       std::vector<std::int32_t>(images->labels.begin() + begin, images->labels.begin() + end)};
                }};
    }
    const data::image_preprocessing prep{.size = job.image_size, .channels = job.channels, .crop = data::parse_crop_policy(job.crop)};
    prep.validate();
    auto files = std::make_shared<data::image_files>(data::list_labeled_images(job.image_folder));
    const std::int64_t n = job.max_images > 0 ? std::min(job.max_images, files->size()) : files->size();
    const bool fail = job.fail_on_corrupt;
    return {n, [files, prep, fail, unreadable](std::int64_t begin, std::int64_t end) {
                return data::load_image_range<float>(*files, begin, end, prep, fail ? nullptr : unreadable.get());
            }};
}

/// Encodes the images batch by batch into the cache at job.out. The next batch decodes on another
/// thread while this one encodes, and only those two batches are in memory. With job.flip each
/// batch of B images is followed in the cache by the same B images mirrored.
template <device D>
void encode(const encode_job& job) {
    auto tokenizer = train::load_tokenizer_run<D>(job.tokenizer);
    auto unreadable = std::make_shared<data::unreadable_files>();
    const auto source = open_images(job, unreadable);
    if (source.size < 1) throw std::invalid_argument("encode: no images to encode");
    const std::int64_t batch = 100, copies = job.flip ? 2 : 1;

    const auto latent = tokenizer.model.latent_shape(1);
    philox_generator posterior{job.seed, 0x6c6174656e74ULL, 0};  // "latent"
    const data::random_horizontal_flip mirror{.probability = 1.0};
    util::progress_bar bar((source.size + batch - 1) / batch, {.label = "encode", .items_per_step = double(batch), .unit = "img"});
    const auto moments = train::write_latent_cache(
        job.out, source.size * copies, {latent[1], latent[2], latent[3]}, std::filesystem::absolute(tokenizer.dir).lexically_normal().string(),
        tokenizer.config.dump(), [&](const auto& append) {
            auto pending = std::async(std::launch::async, source.read, std::int64_t{0}, std::min(source.size, batch));
            for (std::int64_t begin = 0, step = 0; begin < source.size; begin += batch, ++step) {
                const std::int64_t end = std::min(source.size, begin + batch);
                auto images = pending.get();
                if (end < source.size) pending = std::async(std::launch::async, source.read, end, std::min(source.size, end + batch));
                for (std::int64_t copy = 0; copy < copies; ++copy) {
                    if (copy == 1) (void)mirror(images.images.view(), 0);
                    const view_on<float, D> x(images.images.view());
                    const std::int64_t first_row = (begin * copies) + copy * (end - begin);
                    auto post = tokenizer.posterior(x.view(), job.seed, models::sigma_vae_noise::encoding_draw, first_row);
                    const auto z = job.posterior_mean ? tensor<float, D>::copy_of(post.mean.view()) : post.sample(posterior);
                    const view_on<float, cpu> z_on_host(z.view());
                    append(z_on_host.view(), std::span<const std::int32_t>(images.labels));
                }
                bar.update(step + 1);
            }
        });
    bar.finish();
    const auto skipped = unreadable->indices();
    fmt::print("{} latents ({} images{}) of shape ({}, {}, {}); channel mean {::.4f}, std {::.4f}; {}wrote {}\n", source.size * copies, source.size,
               job.flip ? " and their mirror images" : "", latent[1], latent[2], latent[3], moments.mean(), moments.stddev(),
               skipped.empty() ? std::string() : fmt::format("{} unreadable files replaced; ", skipped.size()), job.out.string());
}

} // namespace encode_detail

/// Encodes the data set on job.device (one of Devices) into the cache job.out (atomically,
/// streamed: the set never lies in memory whole); returns the cache, mapped from the file.
template <class Devices = cpu_only>
train::latent_cache encode_latents(const encode_job& job) {
    if (job.split != "train" && job.split != "test") throw usage_error(fmt::format("--split {}: expected train or test", job.split));
    with_device<Devices>(job.device, [&]<device D>() { encode_detail::encode<D>(job); });
    return train::load_latent_cache(job.out);
}

template <class Devices = cpu_only>
void add_encode_options(cxxopts::Options& options) {
    const encode_job d;
    // clang-format off
    options.add_options()
        ("tokenizer", "output directory of train-tokenizer (required)", cxxopts::value<std::string>())
        ("out", "latent cache to write, safetensors (required)", cxxopts::value<std::string>())
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(d.data))
        ("split", "Fashion-MNIST: train or test", cxxopts::value<std::string>()->default_value(d.split))
        ("image-folder", "encode every PNG/JPEG image of this folder instead (streamed)", cxxopts::value<std::string>()->default_value(""))
        ("image-size", "image-folder: side after the crop", cxxopts::value<std::int64_t>()->default_value(fmt::format("{}", d.image_size)))
        ("channels", "image-folder: 1 or 3", cxxopts::value<int>()->default_value(fmt::format("{}", d.channels)))
        ("crop", "image-folder: adm (ADM's center_crop_arr) or resize", cxxopts::value<std::string>()->default_value(d.crop))
        ("fail-on-corrupt", "image-folder: stop at the first unreadable file (default: the next readable file takes its place, named on stderr)")
        ("flip", "also encode every image mirrored left-right (LightningDiT's feature extraction): twice the latents")
        ("max-images", "encode only the first N images (0: all)", cxxopts::value<std::int64_t>()->default_value(fmt::format("{}", d.max_images)))
        ("seed", "seed of the posterior samples", cxxopts::value<std::uint64_t>()->default_value(fmt::format("{}", d.seed)))
        ("posterior-mean", "cache the posterior means instead of samples");
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
encode_job read_encode_options(const cxxopts::ParseResult& a) {
    return {.tokenizer = required_flag(a, "tokenizer"), .out = required_flag(a, "out"), .data = a["data"].as<std::string>(),
            .split = a["split"].as<std::string>(), .image_folder = a["image-folder"].as<std::string>(),
            .image_size = a["image-size"].as<std::int64_t>(), .channels = a["channels"].as<int>(), .crop = a["crop"].as<std::string>(),
            .fail_on_corrupt = a.count("fail-on-corrupt") > 0, .flip = a.count("flip") > 0, .max_images = a["max-images"].as<std::int64_t>(), .seed = a["seed"].as<std::uint64_t>(),
            .posterior_mean = a.count("posterior-mean") > 0, .device = read_device<Devices>(a)};
}

template <class Devices = cpu_only>
int encode_latents_main(int argc, char** argv, const std::string& program = "vediff encode") {
    cxxopts::Options options(program, "Encode a data set with a trained tokenizer into a latent cache");
    add_encode_options<Devices>(options);
    return run_command(
        options, argc, argv,
        [](const cxxopts::ParseResult& a) {
            (void)encode_latents<Devices>(read_encode_options<Devices>(a));
            return 0;
        },
        {{"out", flag_kind::output_file}});
}

} // namespace vediff::jobs
