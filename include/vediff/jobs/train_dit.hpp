#pragma once
// The DiT job (`vediff train-dit`): class-conditional flow matching of a diffusion transformer on
// a latent cache (encode), with an EMA of the weights, exact-resume checkpoints (model + EMA +
// AdamW + random streams + loader position) and a JSON-lines log; data-parallel under mpirun.
//   train-dit --latents runs/ve/latents.safetensors --out runs/dit_ve --time-budget 1200
//   train-dit --out runs/dit_ve --resume
//   mpirun -np 4 vediff train-dit --latents ... --batch 256   (64 per rank)
// The latents are normalized per channel with the cache's mean and std (the run keeps them, and
// `sample` inverts them before decoding). t = 0 is noise, t = 1 data (diffusion/flow_matching.hpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <utility>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "vediff/data/loader.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/distributed/launch.hpp"
#include "vediff/distributed/zero.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/optim/clip.hpp"
#include "vediff/optim/ema.hpp"
#include "vediff/optim/muon.hpp"
#include "vediff/optim/schedule.hpp"
#include "vediff/train/checkpoint.hpp"
#include "vediff/train/dit_run.hpp"
#include "vediff/train/jsonl_log.hpp"
#include "vediff/train/latent_cache.hpp"
#include "vediff/train/loop.hpp"
#include "vediff/util/progress.hpp"

namespace vediff::jobs {

struct dit_run_options {
    std::filesystem::path out;
    bool resume = false;
    std::int64_t log_every = 25, checkpoint_every = 250, stop_after = 0;
    std::string device = "cpu";  // where to compute (a checkpoint resumes on any device)
    double comm_timeout_s = 600;  // under mpirun: the longest wait for another rank before the job is ended
    bool zero1 = false;           // under mpirun: shard AdamW's moments over the ranks (ZeRO stage 1)
};

namespace dit_detail {
namespace fs = std::filesystem;

/// The optimizer a run configuration names: AdamW over every parameter (under MPI the sharded
/// AdamW of distributed/zero.hpp, sharding its state with --zero1), or Muon + AdamW.
template <class Optimizer, class Model, class Comm>
Optimizer make_optimizer(Model& model, const train::dit_run_config& cfg, Comm& comm, bool zero1) {
    const optim::adamw_config adam{.lr = cfg.lr, .beta1 = cfg.beta1, .beta2 = cfg.beta2, .eps = 1e-8, .weight_decay = cfg.weight_decay};
    if constexpr (std::same_as<Optimizer, optim::muon<typename Model::value_type, typename Model::device_type>>)
        return Optimizer(model, optim::muon_config{.muon_lr = cfg.muon_lr, .muon_weight_decay = cfg.weight_decay, .adam = adam});
    else if constexpr (std::same_as<Optimizer, distributed::sharded_adamw<Comm, typename Model::value_type, typename Model::device_type>>)
        return Optimizer(model, adam, comm, zero1);
    else
        return Optimizer(model, adam);
}


template <class Design, device D, class Precision, class Optimizer, class Comm>
nlohmann::json train_with(train::dit_run_config cfg, const dit_run_options& run, Comm& comm) {
    using model_type = models::diffusion_transformer<Design, float, D, Precision>;
    const fs::path checkpoint_dir = run.out / "checkpoint";
    const bool root = comm.rank() == 0;
    if (comm.size() > 1) device_selection<D>::use(comm.local_rank());  // one GPU per rank, before the first tensor on D
    if (root) fs::create_directories(run.out);

    auto cache = train::load_latent_cache(cfg.latents);
    cfg.tokenizer = cache.tokenizer;
    cfg.tokenizer_config = cache.tokenizer_config;
    std::tie(cfg.latent_mean, cfg.latent_std) =
        diffusion::scaling_statistics(diffusion::parse_latent_scaling(cfg.latent_scaling), cache.channel_mean, cache.channel_std,
                                      cache.latents.numel() / std::max<std::int64_t>(1, cache.latents.dim(1)));
    cfg.model.input_size = cache.latents.dim(2);
    cfg.model.in_channels = cache.latents.dim(1);
    cfg.model.num_classes = *std::max_element(cache.labels.begin(), cache.labels.end()) + 1;
    // The cache stays mapped (train/latent_cache.hpp); each batch is normalized as it is drawn.
    const diffusion::latent_normalization<float> normalization(cfg.latent_mean, cfg.latent_std);

    model_type model(cfg.model, cfg.seed);
    distributed::data_parallel<Comm, model_type> parallel(comm, model);
    if (cfg.batch % comm.size() != 0)
        throw usage_error(fmt::format("--batch {}: the global batch does not split evenly over {} ranks", cfg.batch, comm.size()));
    auto opt = make_optimizer<Optimizer>(model, cfg, comm, run.zero1);
    optim::ema<float, D> average(model, {.decay = cfg.ema_decay, .warmup = true});
    train::model_with_ema<model_type> model_and_average{model, average};
    data::batch_loader<float> loader(cache.latents, cache.labels, cfg.batch, cfg.seed, true, parallel.shard());
    const auto schedule = optim::constant_with_warmup(cfg.lr, std::min(cfg.warmup, cfg.steps));
    const diffusion::flow_matching_config flow{
        .times = cfg.time_sampling == "uniform" ? diffusion::time_sampling::uniform() : diffusion::time_sampling::logit_normal(),
        .time_shift = 1.0,
        .cosine_term = cfg.cosine_term};

    train::train_state state;
    state.generators["noise"] = philox_generator{cfg.seed, 1, 0};
    state.generators["labels"] = model.y_embedder.generator;
    state.config_json = cfg.to_json().dump();
    if (run.resume) {
        train::load_checkpoint(checkpoint_dir, model_and_average, opt, state);
        distributed::adopt_optimizer_state(opt);
        model.y_embedder.generator = state.generators.at("labels");
        loader.seek(state.loader_epoch, state.loader_position);
        if (root) fmt::print("resumed from {} at step {}\n", checkpoint_dir.string(), state.step);
    }
    // Every rank starts from rank 0's weights, and draws its shard of each batch-shaped draw.
    parallel.broadcast_parameters(model);
    auto& noise = state.generators.at("noise");
    noise.shard = model.y_embedder.generator.shard = parallel.shard();
    if (root)
        fmt::print("{}: {} parameters, {} tokens of {}, latents {} ({} images, {} classes), on {} ({} threads, {}){}\n", cfg.design,
                   nn::parameter_count(model), cfg.model.tokens(), cfg.model.hidden_size, cache.latents.shape().to_string(), cache.size(),
                   cfg.model.num_classes, D::name, omp_get_max_threads(), Precision::name,
                   comm.size() > 1 ? fmt::format(", {} ranks of batch {}", comm.size(), loader.local_batch_size()) : std::string());

    const auto save = [&] {
        state.loader_epoch = loader.epoch();
        state.loader_position = loader.position();
        state.generators["labels"] = model.y_embedder.generator;
        train::save_checkpoint(checkpoint_dir, model_and_average, opt, state);
    };
    const auto step = [&](std::int64_t index) {
        distributed::release_optimizer_state(opt);  // the full moments a checkpoint gathered
        auto b = loader.next();
        const auto normalized = normalization.normalize(b.images);
        const view_on<float, D> images(normalized.view());
        const auto pair = diffusion::make_training_pair(images.view(), noise, flow);
        const auto labels = tensor<std::int32_t, D>::from_host({static_cast<std::int64_t>(b.labels.size())}, b.labels);
        opt.set_lr(schedule(index));
        opt.zero_grad();
        const auto v = model.forward(pair.x_t, pair.t, labels);
        // The loss and the gradient norm stay on the device until the loop reads the report (every
        // step on the cpu, at log lines on a GPU: the host then never waits for the step).
        const auto loss = diffusion::flow_matching_loss_deferred(v.view(), pair.target.view(), flow);
        parallel.begin_backward(model, index);  // buckets leave as backward finishes them
        (void)model.backward(loss.dv);
        parallel.reduce_gradients(model, index);
        const deferred_value grad_norm = cfg.clip > 0 ? optim::clip_grad_norm_deferred(model, cfg.clip) : deferred_value(0.0);
        opt.step();
        average.update(model, index);
        train::step_report report;
        report.log = {{"lr", opt.lr()}, {"epoch", b.epoch}};
        report.read = [&parallel, &checkpoint_dir, &cfg, index, value = loss.value, mse = loss.mse, cosine = loss.cosine,
                       grad_norm](train::step_report& r) {
            // The step's loss over the global batch: each rank's is the mean over its equal shard.
            const auto global = parallel.mean({value.get(), mse.get(), cosine.get()}, fmt::format("the loss of step {}", index));
            if (!std::isfinite(global[0]))
                throw numeric_error(fmt::format("train_dit: the loss is {} at step {}; the last good checkpoint in {} is untouched",
                                                global[0], index, checkpoint_dir.string()));
            r.loss = global[0];
            r.log["loss"] = global[0];
            r.log["mse"] = global[1];
            if (cfg.cosine_term) r.log["cosine"] = global[2];
            if (cfg.clip > 0) r.log["grad_norm"] = grad_norm.get();
        };
        return report;
    };
    const train::loop_options loop{.steps = cfg.steps, .time_budget_s = cfg.time_budget_s, .stop_after = run.stop_after,
                                   .log_every = run.log_every, .checkpoint_every = run.checkpoint_every,
                                   .read_every = D::host_accessible ? 1 : run.log_every,
                                   .progress = {.label = "dit", .items_per_step = double(cfg.batch), .unit = "samples"}};
    const auto result = train::run_training_loop(state.step, loop, comm, run.out / "log.jsonl", run.resume, step, save,
                                                 [&] { distributed::gather_optimizer_state(opt); });
    distributed::release_optimizer_state(opt);

    nlohmann::json summary = result.to_json();
    summary["samples_per_second"] = double(result.steps_this_run() * cfg.batch) / result.seconds;
    summary["threads"] = omp_get_max_threads();
    summary["device"] = D::name;
    summary["ranks"] = comm.size();
    summary["zero1"] = run.zero1 && comm.size() > 1;
    summary["config"] = cfg.to_json();
    if (root) {
        io::write_file_atomically(run.out / "train.json", [&](io::atomic_file& f) { f.write(summary.dump(2) + "\n"); });
        fmt::print("{} steps ({} this run, {:.0f} s, {:.1f} samples/s), smoothed loss {:.4f}; checkpoint in {}\n", result.steps,
                   result.steps_this_run(), result.seconds, summary["samples_per_second"].get<double>(), result.smoothed_loss,
                   checkpoint_dir.string());
    }
    return summary;
}

template <class Design, device D, class Precision, class Comm>
nlohmann::json train(train::dit_run_config cfg, const dit_run_options& run, Comm& comm) {
    if (cfg.optimizer == "adamw") {
        if constexpr (Comm::is_distributed)
            return train_with<Design, D, Precision, distributed::sharded_adamw<Comm, float, D>>(std::move(cfg), run, comm);
        else return train_with<Design, D, Precision, optim::adamw<float, D>>(std::move(cfg), run, comm);
    }
    if (cfg.optimizer == "muon") {
        if (run.zero1 && comm.size() > 1) throw std::invalid_argument("--zero1 shards AdamW's state; use it with --optimizer adamw");
        return train_with<Design, D, Precision, optim::muon<float, D>>(std::move(cfg), run, comm);
    }
    throw usage_error(fmt::format("--optimizer {}: expected adamw or muon", cfg.optimizer));
}
} // namespace dit_detail


/// Trains (or continues, with run.resume: then the saved configuration is the run) a DiT into
/// run.out on run.device (one of Devices), data-parallel over comm's ranks (--batch is the global
/// batch). Returns the summary written to OUT/train.json (by rank 0).
template <class Devices = cpu_only, class Comm>
nlohmann::json train_dit(const train::dit_run_config& cfg, const dit_run_options& run, Comm& comm) {
    return with_device<Devices>(run.device, [&]<device D>() {
        return train::with_dit_design(cfg.design, [&]<class Design>() {
            return with_precision(cfg.precision, [&]<class Precision>() { return dit_detail::train<Design, D, Precision>(cfg, run, comm); });
        });
    });
}

/// The same in the communicator this process was launched for (distributed/launch.hpp): one
/// process, or one rank of `mpirun -np N`.
template <class Devices = cpu_only>
nlohmann::json train_dit(const train::dit_run_config& cfg, const dit_run_options& run) {
    return distributed::with_launch_communicator(run.comm_timeout_s, [&](auto& comm) { return train_dit<Devices>(cfg, run, comm); });
}

template <class Devices = cpu_only>
void add_dit_options(cxxopts::Options& options) {
    const train::dit_run_config d;
    const auto dflt = [](auto v) { return fmt::format("{}", v); };
    // clang-format off
    options.add_options("data")
        ("latents", "latent cache from encode_latents", cxxopts::value<std::string>()->default_value(""))
        ("latent-scaling", "channel (LightningDiT: per-channel mean and std) | scalar (SD: one scaling_factor, no shift)",
         cxxopts::value<std::string>()->default_value(d.latent_scaling));
    options.add_options("model")
        ("design", "dit | lightningdit", cxxopts::value<std::string>()->default_value(d.design))
        ("size", "reference size S | B | L | XL (overrides hidden, depth, heads)", cxxopts::value<std::string>()->default_value(""))
        ("hidden", "hidden size", cxxopts::value<std::int64_t>()->default_value("256"))
        ("depth", "blocks", cxxopts::value<std::int64_t>()->default_value("6"))
        ("heads", "attention heads", cxxopts::value<std::int64_t>()->default_value("4"))
        ("patch", "patch size", cxxopts::value<std::int64_t>()->default_value("2"))
        ("class-dropout", "label dropout for classifier-free guidance", cxxopts::value<double>()->default_value("0.1"));
    options.add_options("training")
        ("steps", "training steps", cxxopts::value<std::int64_t>()->default_value(dflt(d.steps)))
        ("time-budget", "stop after this many seconds of training (0: no limit)", cxxopts::value<double>()->default_value("0"))
        ("batch", "batch size", cxxopts::value<std::int64_t>()->default_value(dflt(d.batch)))
        ("lr", "learning rate (AdamW)", cxxopts::value<double>()->default_value(dflt(d.lr)))
        ("optimizer", "adamw | muon (Muon for the blocks' weight matrices, AdamW for the rest)", cxxopts::value<std::string>()->default_value(d.optimizer))
        ("muon-lr", "Muon's learning rate (scheduled with --lr's warmup)", cxxopts::value<double>()->default_value(dflt(d.muon_lr)))
        ("warmup", "linear warmup steps", cxxopts::value<std::int64_t>()->default_value(dflt(d.warmup)))
        ("clip", "clip the global gradient norm (0: off)", cxxopts::value<double>()->default_value(dflt(d.clip)))
        ("ema", "EMA decay", cxxopts::value<double>()->default_value(dflt(d.ema_decay)))
        ("times", "uniform | logit_normal", cxxopts::value<std::string>()->default_value(d.time_sampling))
        ("cosine-term", "add LightningDiT's 1 - cos(v, u) term")
        ("seed", "random seed", cxxopts::value<std::uint64_t>()->default_value("0"))
        ("precision", "fp32 | bf16 (matrix products on bf16 operands, fp32 accumulation and master weights)",
         cxxopts::value<std::string>()->default_value(d.precision));
    options.add_options("output")
        ("out", "output directory", cxxopts::value<std::string>()->default_value("runs/dit"))
        ("resume", "continue from OUT/checkpoint with its saved configuration")
        ("log-every", "steps between log lines", cxxopts::value<std::int64_t>()->default_value("25"))
        ("checkpoint-every", "steps between checkpoints", cxxopts::value<std::int64_t>()->default_value("250"))
        ("stop-after", "stop after this many steps of this run (then --resume)", cxxopts::value<std::int64_t>()->default_value("0"))
        ("comm-timeout", "under mpirun: seconds to wait for another rank before ending the job", cxxopts::value<double>()->default_value("600"))
        ("zero1", "under mpirun: shard AdamW's moments over the ranks (ZeRO stage 1)");
    // clang-format on
    add_device_option<Devices>(options, "training");
}

/// The run configuration and options of the flags; with --resume, the checkpoint's saved
/// configuration with only the run-length flags (--steps, --time-budget) applied.
template <class Devices = cpu_only>
std::pair<train::dit_run_config, dit_run_options> read_dit_options(const cxxopts::ParseResult& a) {
    dit_run_options run{.out = a["out"].as<std::string>(), .resume = a.count("resume") > 0, .log_every = a["log-every"].as<std::int64_t>(),
                        .checkpoint_every = a["checkpoint-every"].as<std::int64_t>(), .stop_after = a["stop-after"].as<std::int64_t>(),
                        .device = read_device<Devices>(a), .comm_timeout_s = a["comm-timeout"].as<double>(),
                        .zero1 = a.count("zero1") > 0};
    if (!(run.comm_timeout_s > 0)) throw usage_error(fmt::format("--comm-timeout {}: must be > 0 seconds", run.comm_timeout_s));
    train::dit_run_config cfg;
    if (run.resume) {
        // The saved configuration is the run; only the run-length knobs may change.
        const auto checkpoint_dir = run.out / "checkpoint";
        if (!train::checkpoint_exists(checkpoint_dir)) throw io_error(fmt::format("--resume: no checkpoint in {}", checkpoint_dir.string()));
        cfg = train::dit_run_config::from_json(nlohmann::json::parse(train::read_train_state(checkpoint_dir).config_json));
        if (a.count("steps")) cfg.steps = a["steps"].as<std::int64_t>();
        if (a.count("time-budget")) cfg.time_budget_s = a["time-budget"].as<double>();
    } else {
        cfg.latents = a["latents"].as<std::string>();
        if (cfg.latents.empty()) throw std::invalid_argument("--latents is required (a cache from encode_latents)");
        cfg.latent_scaling = a["latent-scaling"].as<std::string>();
        (void)diffusion::parse_latent_scaling(cfg.latent_scaling);
        cfg.design = a["design"].as<std::string>();
        cfg.model.hidden_size = a["hidden"].as<std::int64_t>();
        cfg.model.depth = a["depth"].as<std::int64_t>();
        cfg.model.num_heads = a["heads"].as<std::int64_t>();
        cfg.model.patch_size = a["patch"].as<std::int64_t>();
        if (const auto size = a["size"].as<std::string>(); !size.empty()) cfg.model = cfg.model.with_size(size, cfg.model.patch_size);
        cfg.model.class_dropout_prob = a["class-dropout"].as<double>();
        cfg.steps = a["steps"].as<std::int64_t>();
        cfg.time_budget_s = a["time-budget"].as<double>();
        cfg.batch = a["batch"].as<std::int64_t>();
        cfg.lr = a["lr"].as<double>();
        cfg.optimizer = a["optimizer"].as<std::string>();
        if (cfg.optimizer != "adamw" && cfg.optimizer != "muon")
            throw usage_error(fmt::format("--optimizer {}: expected adamw or muon", cfg.optimizer));
        cfg.muon_lr = a["muon-lr"].as<double>();
        cfg.warmup = a["warmup"].as<std::int64_t>();
        cfg.clip = a["clip"].as<double>();
        cfg.ema_decay = a["ema"].as<double>();
        cfg.time_sampling = a["times"].as<std::string>();
        if (cfg.time_sampling != "uniform" && cfg.time_sampling != "logit_normal")
            throw usage_error(fmt::format("--times {}: expected uniform or logit_normal", cfg.time_sampling));
        cfg.cosine_term = a.count("cosine-term") > 0;
        cfg.seed = a["seed"].as<std::uint64_t>();
        cfg.precision = a["precision"].as<std::string>();
        if (!is_precision_name(cfg.precision)) throw usage_error(fmt::format("--precision {}: expected fp32 or bf16", cfg.precision));
    }
    return {cfg, run};
}

template <class Devices = cpu_only>
int train_dit_main(int argc, char** argv, const std::string& program = "vediff train-dit") {
    cxxopts::Options options(program, "Train a class-conditional diffusion transformer on a latent cache (flow matching)");
    add_dit_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        const auto [cfg, run] = read_dit_options<Devices>(a);
        (void)train_dit<Devices>(cfg, run);
        return 0;
    });
}

} // namespace vediff::jobs
