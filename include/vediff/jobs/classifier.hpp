#pragma once
// The classifier job (`vediff classifier`): trains the small CNN of
// models/fashion_classifier.hpp on Fashion-MNIST and reports test accuracy. Its weights
// (OUT/classifier.safetensors) are the feature network of the Fréchet distance and of precision /
// recall, and score class-conditional samples (metrics/classifier_score.hpp).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "vediff/data/fashion_mnist.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/models/fashion_classifier.hpp"
#include "vediff/ops/cross_entropy.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/optim/schedule.hpp"
#include "vediff/train/loop.hpp"
#include "vediff/util/progress.hpp"

namespace vediff::jobs {

struct classifier_job {
    std::filesystem::path data_dir = data::fashion_mnist_default_dir;
    std::filesystem::path out_dir = "runs/classifier";
    std::int64_t epochs = 4;
    std::int64_t max_steps = 0;  // > 0: stop after this many steps (smoke tests)
    std::int64_t batch = 128;
    double lr = 2e-3;
    double weight_decay = 1e-4;
    std::int64_t warmup = 100;
    std::uint64_t seed = 0;
    std::int64_t width = 32;
    std::string device = "cpu";  // where to train; the weights are saved from the host either way
};

namespace classifier_detail {

/// Accuracy of the model on a labeled set, evaluated in batches.
template <device D>
double evaluate(models::fashion_classifier<float, D>& model, const data::labeled_images<float>& set, std::int64_t batch) {
    std::int64_t correct = 0;
    for (std::int64_t begin = 0; begin < set.size(); begin += batch) {
        const std::int64_t end = std::min(set.size(), begin + batch);
        const view_on<float, D> images(set.images.slice(begin, end));
        auto logits = model.forward(images.view());
        auto labels = tensor<std::int32_t, D>::from_host(
            {end - begin}, std::span<const std::int32_t>(set.labels.data() + begin, static_cast<std::size_t>(end - begin)));
        correct += static_cast<std::int64_t>(std::llround(ops::accuracy(logits.view(), labels.view()) * double(end - begin)));
    }
    return double(correct) / double(set.size());
}

/// Trains the classifier on device D into cfg.out_dir (classifier.safetensors, metrics.json).
template <device D>
nlohmann::json train(const classifier_job& cfg) {
    std::filesystem::create_directories(cfg.out_dir);
    data::fashion_mnist_options data_opt;
    data_opt.directory = cfg.data_dir;
    const auto train = data::load_fashion_mnist<float>(data::split::train, data_opt);
    const auto test = data::load_fashion_mnist<float>(data::split::test, data_opt);
    fmt::print("Fashion-MNIST: {} training and {} test images from {}; on {} ({} threads)\n", train.size(), test.size(),
               cfg.data_dir.string(), D::name, omp_get_max_threads());

    models::fashion_classifier_config model_cfg;
    model_cfg.width = cfg.width;
    models::fashion_classifier<float, D> model(model_cfg, cfg.seed);
    fmt::print("model: {} parameters\n", nn::parameter_count(model));

    data::batch_loader<float> loader(train, cfg.batch, cfg.seed);
    std::int64_t total_steps = cfg.epochs * loader.batches_per_epoch();
    if (cfg.max_steps > 0) total_steps = std::min(total_steps, cfg.max_steps);
    optim::adamw<float, D> opt(model, {.lr = cfg.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = cfg.weight_decay});
    // Short (smoke) runs keep a fifth of their steps for the cosine part.
    const auto schedule = optim::cosine_with_warmup(cfg.lr, std::min(cfg.warmup, total_steps / 5), total_steps, cfg.lr * 0.01);

    nlohmann::json history = nlohmann::json::array();
    double eval_seconds = 0;  // spent on per-epoch test evaluations, not counted as training
    double test_accuracy = 0;
    double smoothed_loss = 0;  // the 0.98 average the loop keeps too, for the per-epoch history
    const auto train_step = [&](std::int64_t step) {
        auto b = loader.next();
        const view_on<float, D> images(b.images);
        auto labels = tensor<std::int32_t, D>::from_host({b.images.dim(0)}, b.labels);
        opt.set_lr(schedule(step));
        opt.zero_grad();
        auto logits = model.forward(images.view());
        const float loss = ops::cross_entropy(logits.view(), labels.view()).to_vector()[0];
        if (!std::isfinite(loss)) throw numeric_error(fmt::format("classifier: cross-entropy loss is {} at step {}", loss, step));
        (void)model.backward(ops::cross_entropy_backward(logits.view(), labels.view()));
        opt.step();
        smoothed_loss = step == 0 ? loss : 0.98 * smoothed_loss + 0.02 * loss;
        train::step_report report;
        report.loss = loss;
        report.progress = {{"epoch", b.epoch + 1}};
        if ((step + 1) % loader.batches_per_epoch() == 0 || step + 1 == total_steps) {
            const auto eval_start = std::chrono::steady_clock::now();
            test_accuracy = evaluate(model, test, 500);
            eval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start).count();
            history.push_back({{"epoch", b.epoch + 1}, {"step", step + 1}, {"train_loss", smoothed_loss}, {"test_accuracy", test_accuracy}});
            report.note = fmt::format("epoch {}: train loss {:.4f}, test accuracy {:.4f}", b.epoch + 1, smoothed_loss, test_accuracy);
        }
        return report;
    };
    // The shared loop (train/loop.hpp), one process: no log file; the weights are written below.
    distributed::single_process one;
    std::int64_t step = 0;
    const train::loop_options loop{.steps = total_steps, .progress = {.label = "classifier", .items_per_step = double(cfg.batch), .unit = "img"}};
    const auto result = train::run_training_loop(step, loop, one, {}, false, train_step, [] {});
    const double train_seconds = result.seconds - eval_seconds;

    const auto weights = cfg.out_dir / "classifier.safetensors";
    io::save_state_dict(weights, model, {{"model", "fashion_classifier"}, {"width", std::to_string(cfg.width)},
                                         {"feature_dim", std::to_string(model_cfg.feature_dim)}});
    const nlohmann::json metrics = {
        {"test_accuracy", test_accuracy},
        {"train_seconds", train_seconds},
        {"images_per_second", double(total_steps * cfg.batch) / train_seconds},
        {"epochs", cfg.epochs},
        {"batch", cfg.batch},
        {"steps", total_steps},
        {"threads", omp_get_max_threads()},
        {"device", D::name},
        {"parameters", nn::parameter_count(model)},
        {"seed", cfg.seed},
        {"weights", weights.string()},
        {"history", history},
        {"final_loss_smoothed", result.smoothed_loss},
    };
    io::write_file_atomically(cfg.out_dir / "metrics.json", [&](io::atomic_file& file) { file.write(metrics.dump(2) + "\n"); });
    fmt::print("test accuracy {:.4f}, {:.1f} s of training, {:.0f} images/s; wrote {}\n", test_accuracy, train_seconds,
               metrics["images_per_second"].get<double>(), (cfg.out_dir / "metrics.json").string());
    return metrics;
}

}  // namespace classifier_detail

/// Trains the classifier on cfg.device (one of Devices) into cfg.out_dir (classifier.safetensors,
/// metrics.json); returns the metrics.
template <class Devices = cpu_only>
nlohmann::json train_classifier(const classifier_job& cfg) {
    return with_device<Devices>(cfg.device, [&]<device D>() { return classifier_detail::train<D>(cfg); });
}

template <class Devices = cpu_only>
void add_classifier_options(cxxopts::Options& options) {
    // clang-format off
    options.add_options()
        ("data", "directory with the Fashion-MNIST IDX .gz files", cxxopts::value<std::string>()->default_value(data::fashion_mnist_default_dir.string()))
        ("out", "output directory (metrics.json, classifier.safetensors)", cxxopts::value<std::string>()->default_value("runs/classifier"))
        ("epochs", "training epochs", cxxopts::value<std::int64_t>()->default_value("4"))
        ("batch", "minibatch size", cxxopts::value<std::int64_t>()->default_value("128"))
        ("lr", "peak learning rate (AdamW, cosine decay after warmup)", cxxopts::value<double>()->default_value("2e-3"))
        ("weight-decay", "AdamW decoupled weight decay", cxxopts::value<double>()->default_value("1e-4"))
        ("max-steps", "stop after this many steps (0: train all epochs)", cxxopts::value<std::int64_t>()->default_value("0"))
        ("warmup", "linear warmup steps", cxxopts::value<std::int64_t>()->default_value("100"))
        ("width", "channels of the first conv block", cxxopts::value<std::int64_t>()->default_value("32"))
        ("seed", "random seed (initialization and shuffling)", cxxopts::value<std::uint64_t>()->default_value("0"));
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
classifier_job read_classifier_options(const cxxopts::ParseResult& a) {
    classifier_job cfg;
    cfg.data_dir = a["data"].as<std::string>();
    cfg.out_dir = a["out"].as<std::string>();
    cfg.epochs = a["epochs"].as<std::int64_t>();
    cfg.batch = a["batch"].as<std::int64_t>();
    cfg.lr = a["lr"].as<double>();
    cfg.weight_decay = a["weight-decay"].as<double>();
    cfg.warmup = a["warmup"].as<std::int64_t>();
    cfg.max_steps = a["max-steps"].as<std::int64_t>();
    cfg.width = a["width"].as<std::int64_t>();
    cfg.seed = a["seed"].as<std::uint64_t>();
    cfg.device = read_device<Devices>(a);
    return cfg;
}

template <class Devices = cpu_only>
int classifier_main(int argc, char** argv, const std::string& program = "vediff classifier") {
    cxxopts::Options options(program, "Train a small CNN classifier on Fashion-MNIST (the feature network of the metrics)");
    add_classifier_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)train_classifier<Devices>(read_classifier_options<Devices>(a));
        return 0;
    });
}

} // namespace vediff::jobs
