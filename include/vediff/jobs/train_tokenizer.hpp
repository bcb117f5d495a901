#pragma once
// The tokenizer job (`vediff train-tokenizer`, examples/train_tokenizer): trains the LDM-style VAE
// tokenizer (models/autoencoder.hpp) with the Variance Expansion loss (or KL, or reconstruction
// alone) on Fashion-MNIST or a folder of images, with exact-resume checkpoints, a JSON-lines log,
// and test-set PSNR / SSIM / latent variance at the end (OUT/metrics.json).
//   train-tokenizer --loss ve --steps 2000 --out runs/ve
//   train-tokenizer --loss kl --kl-weight 1e-6 --out runs/kl
//   train-tokenizer --out runs/ve --resume          (continues runs/ve/checkpoint)
//   train-tokenizer --image-folder DIR --channels 3 --image-size 256 --loss ve
//       --perceptual-weight 1 --lpips lpips_vgg.safetensors --disc-weight 0.5 --disc-start 50001
//                                                   (LDM's recipe: L1 + LPIPS + PatchGAN, train/tokenizer_critics.hpp)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "vediff/data/fashion_mnist.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/data/image_stream.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/autoencoder_weights.hpp"
#include "vediff/io/image_grid.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/distributed/launch.hpp"
#include "vediff/distributed/zero.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/loss/kl.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/metrics/psnr.hpp"
#include "vediff/metrics/ssim.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/sigma_vae_noise.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/optim/clip.hpp"
#include "vediff/optim/schedule.hpp"
#include "vediff/train/checkpoint.hpp"
#include "vediff/train/jsonl_log.hpp"
#include "vediff/train/loop.hpp"
#include "vediff/train/tokenizer_critics.hpp"
#include "vediff/util/progress.hpp"

namespace vediff::jobs {

struct tokenizer_job {
    // Data.
    std::string data = data::fashion_mnist_default_dir.string();
    std::string image_folder;      // non-empty: train on this folder instead of Fashion-MNIST
    std::int64_t image_size = 32;  // image-folder images are center-cropped and resized to this
    int channels = 1;              // image-folder channels (1 or 3)
    std::string crop = "adm";      // image-folder: adm (ADM's center_crop_arr) | resize (central square, stb resize)
    int workers = 2;               // image-folder: decoding threads (the batches do not depend on it)
    std::int64_t prefetch = 4;     // image-folder: batches decoded ahead
    bool fail_on_corrupt = false;  // image-folder: an unreadable file ends the run (default: skipped, named on stderr)
    // Model.
    models::autoencoder_config model;
    std::string architecture;  // "f8c4" | "f16d32": a published tokenizer's (models::published_autoencoder), replacing `model`'s sizes
    std::string init_from;     // a safetensors file of tokenizer weights (LDM or diffusers naming) to start from
    // Loss.
    std::string loss = "ve";  // ve | kl | ve+kl | sigma-vae | none
    std::string reconstruction = "l1";
    double ve_weight = 0.1, delta = 1e-6, magnitude_weight = 1e-6, tau = 1.0, kl_weight = 1e-6;
    models::sigma_vae_noise sigma_vae;  // --loss sigma-vae: the law of the fixed latent noise
    std::string reduction = "per_image_sum";
    train::critic_config critics;  // LPIPS and the PatchGAN discriminator, off unless their weights are > 0
    // fp32 | bf16: the tokenizer's convolutions on bf16 operands with fp32 sums and master weights
    // (core/precision.hpp: bf16_mixed); the critics, norms, attention and losses stay fp32.
    std::string precision = "fp32";
    // Optimization.
    std::int64_t steps = 2000, batch = 32, warmup = 100;
    double lr = 1e-3, beta1 = 0.5, beta2 = 0.9, weight_decay = 0.0, clip = 0.0;
    std::uint64_t seed = 0;
    // Bookkeeping.
    std::string out = "runs/tokenizer";
    std::int64_t log_every = 25, checkpoint_every = 250, stop_after = 0, eval_images = 10000;
    double time_budget_s = 0;  // > 0: stop training once this much wall time has passed
    bool resume = false;
    std::string device = "cpu";  // where to compute (not part of the run: a checkpoint resumes on any device)
    double comm_timeout_s = 600;  // under mpirun: the longest wait for another rank before the job is ended
    bool zero1 = false;           // under mpirun: shard AdamW's moments over the ranks (ZeRO stage 1)

    nlohmann::json to_json() const {
        nlohmann::json j{{"data", data}, {"image_folder", image_folder}, {"image_size", image_size}, {"channels", channels},
                         {"model", model},
                         {"loss", loss}, {"reconstruction", reconstruction}, {"ve_weight", ve_weight}, {"delta", delta},
                         {"magnitude_weight", magnitude_weight}, {"tau", tau}, {"kl_weight", kl_weight}, {"reduction", reduction},
                         {"steps", steps}, {"batch", batch}, {"warmup", warmup}, {"lr", lr}, {"beta1", beta1}, {"beta2", beta2},
                         {"weight_decay", weight_decay}, {"clip", clip}, {"seed", seed}, {"time_budget_s", time_budget_s}};
        // Written only when used, so that the configurations (and experiment presets) of runs
        // made before these options existed still compare equal.
        if (!architecture.empty()) j["architecture"] = architecture;
        if (!image_folder.empty()) j["crop"] = crop;
        if (!init_from.empty()) j["init_from"] = init_from;
        if (loss == "sigma-vae") {
            j["sigma_vae_scale"] = sigma_vae.scale;
            j["sigma_vae_law"] = models::sigma_vae_noise::law_name(sigma_vae.distribution);
        }
        if (critics.perceptual() || critics.adversarial()) j["critics"] = critics.to_json();
        if (precision != "fp32") j["precision"] = precision;
        return j;
    }
};

namespace tokenizer_detail {
namespace fs = std::filesystem;

/// The held-out images, read a range at a time (Fashion-MNIST's from memory, a folder's from disk).
struct test_images {
    std::int64_t size = 0;
    std::function<tensor<float>(std::int64_t begin, std::int64_t end)> read;
};

/// The training batches: Fashion-MNIST from memory (data::batch_loader), an image folder streamed
/// by worker threads (data::streaming_image_loader); the two share the loader interface.
class training_batches {
public:
    explicit training_batches(data::batch_loader<float> in_memory) : in_memory_(std::move(in_memory)) {}
    explicit training_batches(std::unique_ptr<data::streaming_image_loader<float>> stream) : stream_(std::move(stream)) {}

    data::batch<float, cpu> next() { return stream_ ? stream_->next() : in_memory_->next(); }
    void seek(std::int64_t epoch, std::int64_t position) { stream_ ? stream_->seek(epoch, position) : in_memory_->seek(epoch, position); }
    std::int64_t epoch() const { return stream_ ? stream_->epoch() : in_memory_->epoch(); }
    std::int64_t position() const { return stream_ ? stream_->position() : in_memory_->position(); }
    std::int64_t local_batch_size() const { return stream_ ? stream_->local_batch_size() : in_memory_->local_batch_size(); }
    std::int64_t size() const { return stream_ ? stream_->size() : in_memory_->size(); }
    /// The streaming loader, or nullptr for data held in memory.
    const data::streaming_image_loader<float>* stream() const { return stream_.get(); }

private:
    std::optional<data::batch_loader<float>> in_memory_;
    std::unique_ptr<data::streaming_image_loader<float>> stream_;
};

/// What the trainer reads: the training set's image shape, a loader factory and the test images.
struct datasets {
    std::int64_t channels = 1, resolution = 32;
    std::int64_t train_size = 0;
    data::labeled_images<float> train_in_memory, test_in_memory;  // Fashion-MNIST
    data::image_files train_files, test_files;                    // an image folder (streamed)
    data::image_preprocessing preprocessing;
    bool fail_on_corrupt = false;
    std::shared_ptr<data::unreadable_files> test_unreadable = std::make_shared<data::unreadable_files>();

    bool streamed() const { return !train_files.files.empty(); }

    training_batches loader(const tokenizer_job& cfg, batch_shard shard) const {
        if (!streamed()) return training_batches(data::batch_loader<float>(train_in_memory, cfg.batch, cfg.seed, true, shard));
        return training_batches(std::make_unique<data::streaming_image_loader<float>>(
            train_files, preprocessing, cfg.batch, cfg.seed, shard,
            data::stream_options{.workers = cfg.workers, .prefetch_batches = cfg.prefetch, .skip_corrupt = !cfg.fail_on_corrupt}));
    }

    test_images test() const {
        if (!streamed())
            return {test_in_memory.size(), [this](std::int64_t begin, std::int64_t end) {
                        return tensor<float>::copy_of(test_in_memory.images.slice(begin, end));
                    }};
        return {test_files.size(), [this](std::int64_t begin, std::int64_t end) {
                    return data::load_image_range<float>(test_files, begin, end, preprocessing, fail_on_corrupt ? nullptr : test_unreadable.get())
                        .images;
                }};
    }
};

/// Fashion-MNIST in the tokenizer format (32×32, [−1, 1]), held in memory; or an image folder,
/// listed only (its images are decoded as training reads them), split 19:1: every 20th file in
/// sorted order is held out for testing.
inline datasets load_data(const tokenizer_job& cfg) {
    datasets d;
    if (cfg.image_folder.empty()) {
        d.train_in_memory = data::load_fashion_mnist<float>(data::split::train, data::fashion_mnist_tokenizer_format(cfg.data));
        d.test_in_memory = data::load_fashion_mnist<float>(data::split::test, data::fashion_mnist_tokenizer_format(cfg.data));
        d.channels = d.train_in_memory.images.dim(1);
        d.resolution = d.train_in_memory.images.dim(2);
        d.train_size = d.train_in_memory.size();
        return d;
    }
    d.preprocessing = {.size = cfg.image_size, .channels = cfg.channels, .crop = data::parse_crop_policy(cfg.crop)};
    d.preprocessing.validate();
    d.fail_on_corrupt = cfg.fail_on_corrupt;
    const auto all = data::list_labeled_images(cfg.image_folder);
    std::vector<std::int64_t> train_idx, test_idx;
    for (std::int64_t i = 0; i < all.size(); ++i) (i % 20 == 19 ? test_idx : train_idx).push_back(i);
    if (train_idx.empty() || test_idx.empty())
        throw std::invalid_argument(fmt::format("image folder {}: {} images are too few to hold out a test split", cfg.image_folder, all.size()));
    d.train_files = all.subset(train_idx);
    d.test_files = all.subset(test_idx);
    d.channels = cfg.channels;
    d.resolution = cfg.image_size;
    d.train_size = d.train_files.size();
    return d;
}

/// Test-set reconstruction quality and latent statistics of the trained tokenizer (the model on D,
/// the metrics on the host).
template <device D, precision_policy P>
nlohmann::json evaluate(models::autoencoder_kl<float, D, P>& ae, const test_images& test, std::int64_t max_images, std::uint64_t seed,
                        const fs::path& grid_path, const std::optional<models::sigma_vae_noise>& sigma_vae) {
    const std::int64_t n = std::min(max_images, test.size);
    const std::int64_t batch = 100;
    // A fixed stream for evaluation noise, apart from training's.
    philox_generator eval_gen{seed, 0x6576616cULL, 0};
    loss::latent_statistics_accumulator latents;
    double psnr_mode = 0, psnr_sample = 0, ssim_mode = 0;
    for (std::int64_t begin = 0; begin < n; begin += batch) {
        const std::int64_t end = std::min(n, begin + batch);
        const auto x_images = test.read(begin, end);
        const auto x = x_images.view();
        const view_on<float, D> x_on_device(x);
        auto post = models::gaussian_posterior<float, D>::from_moments(ae.encode(x_on_device.view()));
        if (sigma_vae) sigma_vae->fix_variance(post, seed, models::sigma_vae_noise::evaluation_draw, begin);
        auto z = post.sample(eval_gen);
        latents.add(post.logvar.view(), z.view());
        const auto x_mode_on_device = ae.decode(post.mean);
        const auto x_sample_on_device = ae.decode(z);
        const view_on<float, cpu> x_mode(x_mode_on_device.view()), x_sample(x_sample_on_device.view());
        const double w = double(end - begin);
        psnr_mode += w * metrics::psnr(x, x_mode.view());
        psnr_sample += w * metrics::psnr(x, x_sample.view());
        ssim_mode += w * metrics::ssim(x, x_mode.view());
        if (begin == 0) io::write_reconstruction_grid(grid_path, x.slice(0, std::min<std::int64_t>(16, end)),
                                                      x_mode.view().slice(0, std::min<std::int64_t>(16, end)), {.columns = 16});
    }
    const auto stats = latents.result();
    return {{"psnr", psnr_mode / double(n)},
            {"psnr_sampled", psnr_sample / double(n)},
            {"ssim", ssim_mode / double(n)},
            {"sigma2_mean", stats.sigma2_mean},
            {"latent_channel_mean", stats.channel_mean},
            {"latent_channel_std", stats.channel_std},
            {"eval_images", n}};
}

/// The step's latent statistics over the global batch, from every rank's (equal) shard: σ² is a
/// mean of means; each channel's std comes from the means of z and z² (then made unbiased over
/// the global count).
template <class Parallel>
std::pair<double, std::vector<double>> global_latent_statistics(Parallel& parallel, const loss::latent_statistics& local, std::int64_t step) {
    const std::size_t channels = local.channel_std.size();
    std::vector<double> values{local.sigma2_mean};
    const double n = double(local.per_channel);
    for (std::size_t c = 0; c < channels; ++c) {
        const double m = local.channel_mean[c], var = n > 1 ? local.channel_std[c] * local.channel_std[c] * (n - 1) / n : 0.0;
        values.push_back(m);
        values.push_back(var + m * m);
    }
    if (parallel.size() == 1) return {local.sigma2_mean, local.channel_std};
    const auto global = parallel.mean(std::move(values), fmt::format("the latent statistics of step {}", step));
    const double count = n * double(parallel.size());
    std::vector<double> stds(channels);
    for (std::size_t c = 0; c < channels; ++c) {
        const double m = global[1 + 2 * c], second = global[2 + 2 * c];
        stds[c] = count > 1 ? std::sqrt(std::max(0.0, second - m * m) * count / (count - 1)) : 0.0;
    }
    return {global[0], stds};
}

template <device D, precision_policy Precision = fp32, class Loss, class Comm>
nlohmann::json train(tokenizer_job cfg, Loss loss_fn, Comm& comm) {
    const fs::path out_dir = cfg.out;
    const fs::path checkpoint_dir = out_dir / "checkpoint";
    const bool root = comm.rank() == 0;
    if (root) fs::create_directories(out_dir);

    train::train_state state;
    state.generators["posterior"] = philox_generator{cfg.seed, 1, 0};
    if (cfg.resume) {
        if (!train::checkpoint_exists(checkpoint_dir))
            throw io_error(fmt::format("--resume: no checkpoint in {}", checkpoint_dir.string()));
        // The saved configuration wins (model sizes, loss, schedule), except the run-length knobs.
        const auto saved = nlohmann::json::parse(train::read_train_state(checkpoint_dir).config_json);
        if (root && saved != nlohmann::json(cfg.to_json()))
            fmt::print("note: resuming with the flags given now; the checkpoint was saved with {}\n", saved.dump());
    }

    const auto sets = load_data(cfg);
    if (!cfg.architecture.empty()) {
        cfg.model = models::published_autoencoder(cfg.architecture, sets.resolution);
        if (sets.channels != 3)
            throw usage_error(fmt::format("--architecture {}: the published tokenizers take RGB images; these have {} channel(s) "
                                                    "(--channels 3)",
                                                    cfg.architecture, sets.channels));
    }
    cfg.model.in_channels = cfg.model.out_channels = sets.channels;
    cfg.model.resolution = sets.resolution;
    using model_type = models::autoencoder_kl<float, D, Precision>;
    model_type ae(cfg.model, cfg.seed);
    if (!cfg.init_from.empty() && !cfg.resume) {
        const auto naming = io::load_autoencoder_weights(cfg.init_from, ae);
        if (root) fmt::print("initialized from {} ({} naming)\n", cfg.init_from, io::to_string(naming));
    }
    distributed::data_parallel<Comm, model_type> parallel(comm, ae);
    if (cfg.batch % comm.size() != 0)
        throw usage_error(fmt::format("--batch {}: the global batch does not split evenly over {} ranks", cfg.batch, comm.size()));
    // AdamW; under MPI the sharded AdamW of distributed/zero.hpp (its state sharded with --zero1).
    const optim::adamw_config adam{.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .eps = 1e-8, .weight_decay = cfg.weight_decay};
    using optimizer_type = std::conditional_t<Comm::is_distributed, distributed::sharded_adamw<Comm, float, D>, optim::adamw<float, D>>;
    auto opt = [&] {
        if constexpr (Comm::is_distributed) return optimizer_type(ae, adam, comm, cfg.zero1);
        else return optimizer_type(ae, adam);
    }();
    auto loader = sets.loader(cfg, parallel.shard());
    const auto schedule = optim::constant_with_warmup(cfg.lr, std::min(cfg.warmup, cfg.steps));
    state.config_json = cfg.to_json().dump();
    train::critic_config critic_cfg = cfg.critics;
    if (critic_cfg.disc_lr == 0) critic_cfg.disc_lr = cfg.lr;
    train::tokenizer_critics<float, D, Comm> critics(critic_cfg, cfg.model.in_channels, cfg.seed, comm, cfg.zero1);
    train::optimizer_with_critics<optimizer_type, decltype(critics)> checkpointed{opt, critics};
    if (cfg.resume) {
        train::load_checkpoint(checkpoint_dir, ae, checkpointed, state);
        distributed::adopt_optimizer_state(opt);
        critics.after_load(state.step);
        loader.seek(state.loader_epoch, state.loader_position);
        if (root) fmt::print("resumed from {} at step {}\n", checkpoint_dir.string(), state.step);
    }
    parallel.broadcast_parameters(ae);
    auto& posterior_noise = state.generators.at("posterior");
    posterior_noise.shard = parallel.shard();
    const data::random_horizontal_flip flip{.seed = cfg.seed};
    const auto sigma_vae = cfg.loss == "sigma-vae" ? std::optional<models::sigma_vae_noise>(cfg.sigma_vae) : std::nullopt;
    const bool augment = !cfg.image_folder.empty();

    if (root)
        fmt::print("tokenizer: {} parameters, latents {}, {} training images, loss {} ({}), on {} ({} threads){}\n", nn::parameter_count(ae),
                   ae.latent_shape(cfg.batch).to_string(), sets.train_size, cfg.loss, to_string(loss_fn.mode), D::name,
                   omp_get_max_threads(), comm.size() > 1 ? fmt::format(", {} ranks of batch {}", comm.size(), loader.local_batch_size()) : std::string());

    const auto save = [&] {
        state.loader_epoch = loader.epoch();
        state.loader_position = loader.position();
        train::save_checkpoint(checkpoint_dir, ae, checkpointed, state);
    };
    const auto step = [&](std::int64_t index) {
        distributed::release_optimizer_state(opt);  // the full moments a checkpoint gathered
        critics.release_state();
        auto b = loader.next();
        if (augment) flip(b.images, static_cast<std::uint64_t>(index), b.first_row);
        const view_on<float, D> images(b.images);
        opt.set_lr(schedule(index));
        opt.zero_grad();

        auto moments = ae.encode(images.view());
        auto post = models::gaussian_posterior<float, D>::from_moments(moments);
        if (sigma_vae) sigma_vae->fix_variance(post, cfg.seed, static_cast<std::uint64_t>(index), b.first_row);
        auto z = post.sample(posterior_noise);
        auto x_hat = ae.decode(z);
        auto r = loss_fn.evaluate(loss::tokenizer_outputs<float, D>{images.view(), x_hat, post.mean, post.logvar, z});
        // LPIPS and the adversarial term add to the reconstruction's gradient; the discriminator
        // trains on this step's (detached) reconstruction before the tokenizer's backward.
        train::generator_terms gen;
        train::discriminator_terms disc;
        if (critics.active()) {
            gen = critics.generator(images.view(), x_hat, r.gradients.dx_hat, std::get<2>(ae.decoder.head.layers), index, loss_fn.mode);
            disc = critics.train_discriminator(images.view(), x_hat, index);
        }
        // Every term is a mean over the batch's images, so the global value is the ranks' mean.
        std::vector<std::string> names{"total"};
        std::vector<double> terms{r.total + gen.total()};
        for (const auto& [name, value] : r.breakdown) {
            names.emplace_back(name);
            terms.push_back(value);
        }
        const auto add_term = [&](const char* name, double value) {
            names.emplace_back(name);
            terms.push_back(value);
        };
        if (critics.perceptual_network()) {
            add_term("perceptual", gen.perceptual);
            add_term("lpips", gen.lpips);
        }
        if (critics.discriminator()) {
            add_term("adversarial", gen.adversarial);
            add_term("g", gen.g);
            add_term("d_weight", gen.d_weight);
            add_term("d", disc.d);
            add_term("logits_real", disc.logits_real);
            add_term("logits_fake", disc.logits_fake);
        }
        terms = parallel.mean(std::move(terms), fmt::format("the loss of step {}", index));
        if (!std::isfinite(terms[0])) {
            std::string term = "total";
            for (std::size_t k = 1; k < terms.size(); ++k)
                if (!std::isfinite(terms[k])) {
                    term = names[k];
                    break;
                }
            throw numeric_error(fmt::format("tokenizer: the '{}' term is not finite at step {} (loss {}); the last good checkpoint "
                                            "in {} is untouched",
                                            term, index, terms[0], checkpoint_dir.string()));
        }
        const auto [sigma2_mean, channel_std] = global_latent_statistics(parallel, r.latent, index);
        parallel.begin_backward(ae, index);  // buckets leave as backward finishes them
        auto dz = ae.decode_backward(r.gradients.dx_hat);
        ops::axpy(dz.view(), r.gradients.dz.view());
        post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
        (void)ae.encode_backward(post.moments_backward(r.gradients.dmean, r.gradients.dlogvar));
        parallel.reduce_gradients(ae, index);
        const double grad_norm = cfg.clip > 0 ? optim::clip_grad_norm(ae, cfg.clip) : 0.0;
        opt.step();

        train::step_report report;
        report.loss = terms[0];
        for (std::size_t k = 0; k < r.breakdown.size(); ++k) report.progress.emplace_back(r.breakdown[k].first, terms[k + 1]);
        for (std::size_t k = 1 + r.breakdown.size(); k < terms.size(); ++k)
            if (names[k] == "lpips" || names[k] == "g" || names[k] == "d") report.progress.emplace_back(names[k], terms[k]);
        report.progress.emplace_back("sigma2", sigma2_mean);
        report.log = {{"loss", terms[0]}, {"sigma2_mean", sigma2_mean}, {"latent_channel_std", channel_std}, {"lr", opt.lr()}, {"epoch", b.epoch}};
        for (std::size_t k = 1; k < terms.size(); ++k) report.log[names[k]] = terms[k];
        if (cfg.clip > 0) report.log["grad_norm"] = grad_norm;
        if (const auto* stream = loader.stream()) {
            // Seconds this process has waited for decoded batches since the start (or resume),
            // and the unreadable files skipped: where a run's data path falls behind.
            report.log["data_wait_s"] = stream->stall_seconds();
            report.log["skipped_files"] = stream->skipped_files().size();
        }
        return report;
    };
    const train::loop_options loop{.steps = cfg.steps, .time_budget_s = cfg.time_budget_s, .stop_after = cfg.stop_after,
                                   .log_every = cfg.log_every, .checkpoint_every = cfg.checkpoint_every,
                                   .progress = {.label = "tokenizer", .items_per_step = double(cfg.batch), .unit = "img"}};
    const auto result = train::run_training_loop(state.step, loop, comm, out_dir / "log.jsonl", cfg.resume, step, save,
                                                 [&] {
                                                     distributed::gather_optimizer_state(opt);
                                                     critics.gather_state();
                                                 });
    distributed::release_optimizer_state(opt);
    critics.release_state();
    if (!result.finished()) {
        if (root) fmt::print("stopped after {} steps at step {}; continue with --resume\n", result.steps_this_run(), result.steps);
        return result.to_json();
    }

    // The test-set evaluation is rank 0's (every rank holds the same weights).
    nlohmann::json metrics = result.to_json();
    if (root) {
        const auto test = sets.test();
        fmt::print("evaluating on {} test images\n", std::min(cfg.eval_images, test.size));
        metrics.update(evaluate(ae, test, cfg.eval_images, cfg.seed, out_dir / "reconstructions.png", sigma_vae));
        metrics["images_per_second"] = double(result.steps_this_run() * cfg.batch) / result.seconds;
        metrics["threads"] = omp_get_max_threads();
        metrics["device"] = D::name;
        metrics["ranks"] = comm.size();
        metrics["zero1"] = cfg.zero1 && comm.size() > 1;
        metrics["config"] = cfg.to_json();
        io::write_file_atomically(out_dir / "metrics.json", [&](io::atomic_file& f) { f.write(metrics.dump(2) + "\n"); });
        fmt::print("PSNR {:.2f} dB (sampled z: {:.2f}), SSIM {:.4f}, mean sigma^2 {:.3g}; wrote {}\n", metrics["psnr"].get<double>(),
                   metrics["psnr_sampled"].get<double>(), metrics["ssim"].get<double>(), metrics["sigma2_mean"].get<double>(),
                   (out_dir / "metrics.json").string());
    }
    // No barrier here: the other ranks need nothing from the evaluation, and a wait for it would
    // be bounded by --comm-timeout, which a long evaluation must not trip.
    return metrics;
}

template <class Norm, device D, precision_policy Precision, class Comm>
nlohmann::json train_with(const tokenizer_job& cfg, Comm& comm) {
    const auto mode = loss::parse_reduction(cfg.reduction);
    const loss::reconstruction<Norm> rec;
    const loss::variance_expansion ve({.weight = cfg.ve_weight, .delta = cfg.delta});
    const loss::magnitude_regularizer mag({.weight = cfg.magnitude_weight, .tau = cfg.tau});
    const loss::kl_divergence kl({.weight = cfg.kl_weight});
    if (cfg.loss == "ve")
        return train<D, Precision>(cfg, loss::tokenizer_loss<loss::reconstruction<Norm>, loss::variance_expansion, loss::magnitude_regularizer>{{rec, ve, mag}, mode}, comm);
    if (cfg.loss == "ve+kl")
        return train<D, Precision>(cfg, loss::tokenizer_loss<loss::reconstruction<Norm>, loss::variance_expansion, loss::magnitude_regularizer,
                                                  loss::kl_divergence>{{rec, ve, mag, kl}, mode}, comm);
    if (cfg.loss == "kl") return train<D, Precision>(cfg, loss::tokenizer_loss<loss::reconstruction<Norm>, loss::kl_divergence>{{rec, kl}, mode}, comm);
    if (cfg.loss == "sigma-vae") {
        // The noise is the regularizer; the magnitude term (VE's second, here on μ) keeps μ from
        // outgrowing it.
        cfg.sigma_vae.validate();
        const loss::magnitude_regularizer mag_of_mean({.weight = cfg.magnitude_weight, .tau = cfg.tau, .of_mean = true});
        return train<D, Precision>(cfg, loss::tokenizer_loss<loss::reconstruction<Norm>, loss::magnitude_regularizer>{{rec, mag_of_mean}, mode}, comm);
    }
    if (cfg.loss == "none") return train<D, Precision>(cfg, loss::tokenizer_loss<loss::reconstruction<Norm>>{{rec}, mode}, comm);
    throw usage_error(fmt::format("--loss {}: expected ve, kl, ve+kl, sigma-vae or none", cfg.loss));
}

inline std::vector<std::int64_t> parse_list(const std::string& text, const char* flag) {
    std::vector<std::int64_t> v;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) v.push_back(std::stoll(item));
    if (v.empty() && std::string(flag) != "attn-resolutions") throw usage_error(fmt::format("--{}: empty list", flag));
    return v;
}


} // namespace tokenizer_detail

/// Trains (or, with cfg.resume, continues) a tokenizer into cfg.out on cfg.device (one of Devices).
/// Returns the metrics written to OUT/metrics.json, or {"finished": false, "steps": N} when
/// --stop-after cut the run short.
/// Data-parallel over comm's ranks (--batch is the global batch); rank 0 writes the files and
/// evaluates (the other ranks return the loop's summary only).
template <class Devices = cpu_only, class Comm>
nlohmann::json train_tokenizer(const tokenizer_job& cfg, Comm& comm) {
    return with_device<Devices>(cfg.device, [&]<device D>() {
        if (comm.size() > 1) device_selection<D>::use(comm.local_rank());  // one GPU per rank, before the first tensor on D
        return with_precision(cfg.precision, [&]<precision_policy Precision>() {
            if (cfg.reconstruction == "l1") return tokenizer_detail::train_with<loss::l1, D, Precision>(cfg, comm);
            if (cfg.reconstruction == "l2") return tokenizer_detail::train_with<loss::l2, D, Precision>(cfg, comm);
            throw usage_error(fmt::format("--reconstruction {}: expected l1 or l2", cfg.reconstruction));
        });
    });
}

/// The same in the communicator this process was launched for (one process, or a rank of mpirun).
template <class Devices = cpu_only>
nlohmann::json train_tokenizer(const tokenizer_job& cfg) {
    return distributed::with_launch_communicator(cfg.comm_timeout_s, [&](auto& comm) { return train_tokenizer<Devices>(cfg, comm); });
}

template <class Devices = cpu_only>
void add_tokenizer_options(cxxopts::Options& options) {
    const tokenizer_job d;  // defaults
    const auto dflt = [](auto v) { return fmt::format("{}", v); };
    const auto list = [](const std::vector<std::int64_t>& v) { return fmt::format("{}", fmt::join(v, ",")); };
    // clang-format off
    options.add_options("data")
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(d.data))
        ("image-folder", "train on the PNG/JPEG images of this folder instead", cxxopts::value<std::string>()->default_value(""))
        ("image-size", "image-folder: side after center crop and resize", cxxopts::value<std::int64_t>()->default_value(dflt(d.image_size)))
        ("channels", "image-folder: 1 or 3", cxxopts::value<int>()->default_value(dflt(d.channels)))
        ("crop", "image-folder: adm (ADM's center_crop_arr, the field's ImageNet protocol) or resize (central square, stb resize)",
         cxxopts::value<std::string>()->default_value(d.crop))
        ("workers", "image-folder: threads decoding the coming batches", cxxopts::value<int>()->default_value(dflt(d.workers)))
        ("prefetch", "image-folder: batches decoded ahead", cxxopts::value<std::int64_t>()->default_value(dflt(d.prefetch)))
        ("fail-on-corrupt", "image-folder: end the run at the first unreadable file (default: skip it, named on stderr)");
    options.add_options("model")
        ("architecture", "a published tokenizer's sizes: f8c4 (LDM / SD VAE) or f16d32 (VA-VAE); replaces the flags below",
         cxxopts::value<std::string>()->default_value(""))
        ("init-from", "start from these tokenizer weights (safetensors, LDM or diffusers names), e.g. to fine-tune SD's VAE with VE",
         cxxopts::value<std::string>()->default_value(""))
        ("ch", "base channels", cxxopts::value<std::int64_t>()->default_value(dflt(d.model.ch)))
        ("ch-mult", "channel multipliers per level", cxxopts::value<std::string>()->default_value(list(d.model.ch_mult)))
        ("num-res-blocks", "ResnetBlocks per level", cxxopts::value<std::int64_t>()->default_value(dflt(d.model.num_res_blocks)))
        ("z-channels", "latent channels", cxxopts::value<std::int64_t>()->default_value(dflt(d.model.z_channels)))
        ("attn-resolutions", "resolutions with attention blocks, e.g. 16", cxxopts::value<std::string>()->default_value(list(d.model.attn_resolutions)))
        ("norm-groups", "GroupNorm groups", cxxopts::value<std::int64_t>()->default_value(dflt(d.model.norm_groups)));
    options.add_options("loss")
        ("loss", "ve | kl | ve+kl | sigma-vae | none", cxxopts::value<std::string>()->default_value(d.loss))
        ("reconstruction", "l1 | l2", cxxopts::value<std::string>()->default_value(d.reconstruction))
        ("ve-weight", "lambda1 of the VE term", cxxopts::value<double>()->default_value(dflt(d.ve_weight)))
        ("delta", "delta of 1/(sigma^2 + delta)", cxxopts::value<double>()->default_value(dflt(d.delta)))
        ("magnitude-weight", "lambda2 of exp(|z| - tau)", cxxopts::value<double>()->default_value(dflt(d.magnitude_weight)))
        ("tau", "tau of the magnitude term", cxxopts::value<double>()->default_value(dflt(d.tau)))
        ("kl-weight", "beta of the KL term", cxxopts::value<double>()->default_value(dflt(d.kl_weight)))
        ("sigma-vae-scale", "sigma-vae: C of the per-image noise scale sigma_b", cxxopts::value<double>()->default_value(dflt(d.sigma_vae.scale)))
        ("sigma-vae-law", "sigma-vae: sigma_b = C|n|, n ~ N(0,1) (normal, LatentLM) or C·U(0,1) (uniform, NextStep-1)",
         cxxopts::value<std::string>()->default_value(std::string(models::sigma_vae_noise::law_name(d.sigma_vae.distribution))))
        ("reduction", "per_image_sum | element_mean", cxxopts::value<std::string>()->default_value(d.reduction));
    options.add_options("perceptual and adversarial (LDM's recipe)")
        ("perceptual-weight", "weight of LPIPS on the reconstruction (0: off; LDM 1)", cxxopts::value<double>()->default_value(dflt(d.critics.perceptual_weight)))
        ("lpips", "LPIPS weights (tools/convert_lpips.py), or 'random' for a random network", cxxopts::value<std::string>()->default_value(""))
        ("lpips-width-divisor", "with --lpips random: divide VGG's widths by this (tests)", cxxopts::value<std::int64_t>()->default_value(dflt(d.critics.lpips_width_divisor)))
        ("disc-weight", "weight of the PatchGAN term times the adaptive weight (0: off; LDM 0.5)", cxxopts::value<double>()->default_value(dflt(d.critics.disc_weight)))
        ("disc-start", "first step with the discriminator (LDM 50001)", cxxopts::value<std::int64_t>()->default_value(dflt(d.critics.disc_start)))
        ("disc-loss", "hinge | vanilla (non-saturating)", cxxopts::value<std::string>()->default_value(d.critics.disc_loss))
        ("disc-ndf", "the discriminator's first width", cxxopts::value<std::int64_t>()->default_value(dflt(d.critics.disc_ndf)))
        ("disc-lr", "the discriminator's learning rate (0: --lr)", cxxopts::value<double>()->default_value(dflt(d.critics.disc_lr)));
    options.add_options("training")
        ("steps", "training steps", cxxopts::value<std::int64_t>()->default_value(dflt(d.steps)))
        ("time-budget", "stop training after this many seconds (0: no limit)", cxxopts::value<double>()->default_value(dflt(d.time_budget_s)))
        ("batch", "batch size", cxxopts::value<std::int64_t>()->default_value(dflt(d.batch)))
        ("lr", "learning rate (Adam)", cxxopts::value<double>()->default_value(dflt(d.lr)))
        ("beta1", "Adam beta1", cxxopts::value<double>()->default_value(dflt(d.beta1)))
        ("beta2", "Adam beta2", cxxopts::value<double>()->default_value(dflt(d.beta2)))
        ("weight-decay", "AdamW decoupled weight decay", cxxopts::value<double>()->default_value(dflt(d.weight_decay)))
        ("warmup", "linear warmup steps", cxxopts::value<std::int64_t>()->default_value(dflt(d.warmup)))
        ("clip", "clip the global gradient norm to this (0: off)", cxxopts::value<double>()->default_value(dflt(d.clip)))
        ("seed", "random seed", cxxopts::value<std::uint64_t>()->default_value(dflt(d.seed)))
        ("precision", "fp32 | bf16 (convolutions on bf16 operands, fp32 accumulation and master weights)",
         cxxopts::value<std::string>()->default_value(d.precision));
    options.add_options("output")
        ("out", "output directory", cxxopts::value<std::string>()->default_value(d.out))
        ("resume", "continue from OUT/checkpoint")
        ("log-every", "steps between log lines", cxxopts::value<std::int64_t>()->default_value(dflt(d.log_every)))
        ("checkpoint-every", "steps between checkpoints", cxxopts::value<std::int64_t>()->default_value(dflt(d.checkpoint_every)))
        ("stop-after", "stop after this many steps of this run (then --resume)", cxxopts::value<std::int64_t>()->default_value(dflt(d.stop_after)))
        ("eval-images", "test images to evaluate", cxxopts::value<std::int64_t>()->default_value(dflt(d.eval_images)))
        ("comm-timeout", "under mpirun: seconds to wait for another rank before ending the job", cxxopts::value<double>()->default_value(dflt(d.comm_timeout_s)))
        ("zero1", "under mpirun: shard AdamW's moments over the ranks (ZeRO stage 1)");
    // clang-format on
    add_device_option<Devices>(options, "training");
}

template <class Devices = cpu_only>
tokenizer_job read_tokenizer_options(const cxxopts::ParseResult& a) {
    using tokenizer_detail::parse_list;
    tokenizer_job cfg;
    cfg.data = a["data"].as<std::string>();
    cfg.image_folder = a["image-folder"].as<std::string>();
    cfg.image_size = a["image-size"].as<std::int64_t>();
    cfg.channels = a["channels"].as<int>();
    cfg.crop = a["crop"].as<std::string>();
    (void)data::parse_crop_policy(cfg.crop);  // a bad name fails before any data is read
    cfg.workers = a["workers"].as<int>();
    if (cfg.workers < 0) throw usage_error(fmt::format("--workers {}: a thread count cannot be negative", cfg.workers));
    cfg.prefetch = a["prefetch"].as<std::int64_t>();
    if (cfg.prefetch < 1) throw usage_error(fmt::format("--prefetch {}: at least one batch must be decoded ahead", cfg.prefetch));
    cfg.fail_on_corrupt = a.count("fail-on-corrupt") > 0;
    cfg.model.ch = a["ch"].as<std::int64_t>();
    cfg.model.ch_mult = parse_list(a["ch-mult"].as<std::string>(), "ch-mult");
    cfg.model.num_res_blocks = a["num-res-blocks"].as<std::int64_t>();
    cfg.model.z_channels = cfg.model.embed_dim = a["z-channels"].as<std::int64_t>();
    cfg.model.attn_resolutions = parse_list(a["attn-resolutions"].as<std::string>(), "attn-resolutions");
    cfg.model.norm_groups = a["norm-groups"].as<std::int64_t>();
    cfg.architecture = a["architecture"].as<std::string>();
    if (!cfg.architecture.empty()) (void)models::published_autoencoder(cfg.architecture);  // a bad name fails before any data is read
    cfg.init_from = a["init-from"].as<std::string>();
    cfg.loss = a["loss"].as<std::string>();
    cfg.reconstruction = a["reconstruction"].as<std::string>();
    cfg.precision = a["precision"].as<std::string>();
    if (!is_precision_name(cfg.precision)) throw usage_error(fmt::format("--precision {}: expected fp32 or bf16", cfg.precision));
    cfg.ve_weight = a["ve-weight"].as<double>();
    cfg.delta = a["delta"].as<double>();
    cfg.magnitude_weight = a["magnitude-weight"].as<double>();
    cfg.tau = a["tau"].as<double>();
    cfg.kl_weight = a["kl-weight"].as<double>();
    cfg.sigma_vae.scale = a["sigma-vae-scale"].as<double>();
    cfg.sigma_vae.distribution = models::sigma_vae_noise::parse_law(a["sigma-vae-law"].as<std::string>());
    cfg.sigma_vae.validate();
    cfg.reduction = a["reduction"].as<std::string>();
    cfg.critics.perceptual_weight = a["perceptual-weight"].as<double>();
    cfg.critics.lpips_weights = a["lpips"].as<std::string>();
    cfg.critics.lpips_width_divisor = a["lpips-width-divisor"].as<std::int64_t>();
    cfg.critics.disc_weight = a["disc-weight"].as<double>();
    cfg.critics.disc_start = a["disc-start"].as<std::int64_t>();
    cfg.critics.disc_loss = a["disc-loss"].as<std::string>();
    cfg.critics.disc_ndf = a["disc-ndf"].as<std::int64_t>();
    cfg.critics.disc_lr = a["disc-lr"].as<double>();
    cfg.critics.validate();
    cfg.steps = a["steps"].as<std::int64_t>();
    cfg.time_budget_s = a["time-budget"].as<double>();
    cfg.batch = a["batch"].as<std::int64_t>();
    cfg.lr = a["lr"].as<double>();
    cfg.beta1 = a["beta1"].as<double>();
    cfg.beta2 = a["beta2"].as<double>();
    cfg.weight_decay = a["weight-decay"].as<double>();
    cfg.warmup = a["warmup"].as<std::int64_t>();
    cfg.clip = a["clip"].as<double>();
    cfg.seed = a["seed"].as<std::uint64_t>();
    cfg.out = a["out"].as<std::string>();
    cfg.resume = a.count("resume") > 0;
    cfg.log_every = a["log-every"].as<std::int64_t>();
    cfg.checkpoint_every = a["checkpoint-every"].as<std::int64_t>();
    cfg.stop_after = a["stop-after"].as<std::int64_t>();
    cfg.eval_images = a["eval-images"].as<std::int64_t>();
    cfg.device = read_device<Devices>(a);
    cfg.comm_timeout_s = a["comm-timeout"].as<double>();
    cfg.zero1 = a.count("zero1") > 0;
    if (!(cfg.comm_timeout_s > 0)) throw usage_error(fmt::format("--comm-timeout {}: must be > 0 seconds", cfg.comm_timeout_s));
    return cfg;
}

/// `train-tokenizer` as a command line, for a program built for Devices.
template <class Devices = cpu_only>
int train_tokenizer_main(int argc, char** argv, const std::string& program = "vediff train-tokenizer") {
    cxxopts::Options options(program, "Train the VAE tokenizer with the Variance Expansion loss (or KL)");
    add_tokenizer_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)train_tokenizer<Devices>(read_tokenizer_options<Devices>(a));
        return 0;
    });
}

} // namespace vediff::jobs
