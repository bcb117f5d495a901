// The diffusion transformer against the same model in PyTorch (benchmarks/torch_dit.py), in one
// invocation, the libraries taking turns (see benchmarks/peer.hpp):
//   train   one flow-matching training step of DiT-S/1 (hidden 384, depth 12, 6 heads) on 4×8×8
//           latents, 10 classes: forward, MSE, backward, AdamW; samples/s, peak memory, and the
//           achieved GFLOP/s of the step's matrix products;
//   sample  64 images, 50 Euler steps with classifier-free guidance (scale 4, the batch doubled).
// --precision bf16 runs vediff's bf16_mixed DiT against PyTorch under torch.autocast("cpu",
// bfloat16); --precision both runs the fp32 pair, then the bf16 pair, in one invocation.
//   bench_dit [--mode train|sample|both] [--precision fp32|bf16|both] [--threads N] [--warmup W] [--steps S] [--batch B] [--no-torch]
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <fmt/format.h>

#include "peer.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"

using namespace vediff;
using namespace vediff::bench;

namespace {

models::dit_config dit_s1() {
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 10;
    return c.with_size("S", 1);
}

/// Multiply-adds ×2 of one forward pass of a sample: the linear layers per token, attention's two
/// products, and the per-sample conditioning MLPs (norms and pointwise work not counted).
double forward_flops_per_sample(const models::dit_config& c) {
    const double d = double(c.hidden_size), n = double(c.tokens()), p2c = double(c.patch_size * c.patch_size);
    const double per_token = c.depth * 12 * d * d + p2c * c.in_channels * d + d * p2c * c.out_channels();
    const double attention = c.depth * 2 * n * d;  // q·kᵀ and p·v, per token
    const double per_sample = c.depth * 6 * d * d + 2 * d * d + 256 * d + d * d;
    return 2 * (n * (per_token + attention) + per_sample);
}

template <class Precision>
struct dit_trainer {
    models::dit<float, cpu, Precision> model;
    optim::adamw<float> opt;
    tensor<float> x1;
    std::vector<std::int32_t> labels;
    philox_generator gen{.seed = 3};
    diffusion::flow_matching_config flow{};

    explicit dit_trainer(std::int64_t batch)
        : model(dit_s1(), 0), opt(model, {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0}) {
        philox_generator data{.seed = 1};
        x1 = ops::normal<float>({batch, 4, 8, 8}, data);
        for (std::int64_t i = 0; i < batch; ++i) labels.push_back(static_cast<std::int32_t>(i % 10));
    }

    std::pair<double, double> step() {
        const auto start = clock_type::now();
        opt.zero_grad();
        const auto pair = diffusion::make_training_pair(x1.view(), gen, flow);
        const auto y = tensor<std::int32_t>::from_host({static_cast<std::int64_t>(labels.size())}, std::span<const std::int32_t>(labels));
        const auto v = model.forward(pair.x_t, pair.t, y);
        const auto loss = diffusion::flow_matching_loss(v.view(), pair.target.view(), flow);
        (void)model.backward(loss.dv);
        opt.step();
        return {std::chrono::duration<double, std::milli>(clock_type::now() - start).count(), loss.value};
    }
};

template <class Precision>
struct dit_sampler {
    models::dit<float, cpu, Precision> model;
    std::int64_t images;
    int steps;
    double scale;
    philox_generator gen{.seed = 4};

    dit_sampler(std::int64_t n, int s, double cfg) : model(dit_s1(), 0), images(n), steps(s), scale(cfg) {
        model.train(false);
        // Not the zero init: a model whose modulation and output are not 0 (the cost is the same).
        model.for_each_parameter([](const std::string&, nn::parameter<float, cpu>& p) {
            if (p.init.kind == nn::init_rule::distribution::constant && p.trainable && p.init.scale == 0) p.init = nn::init_rule::uniform(0.02);
        }, std::string{});
        nn::initialize(model, 5);
    }

    std::pair<double, double> step() {
        const auto start = clock_type::now();
        auto x0 = ops::normal<float>({images, 4, 8, 8}, gen);
        std::vector<std::int32_t> labels;
        for (std::int64_t i = 0; i < images; ++i) labels.push_back(static_cast<std::int32_t>(i % 10));
        const auto forward = [&](const tensor_view<float>& x, const tensor_view<float>& t, const tensor_view<std::int32_t>& y) {
            return model.forward(x, t, y);
        };
        auto v = diffusion::make_guided_velocity<float, cpu>(std::cref(forward), labels, 10, {.scale = scale});
        const auto x = diffusion::sample(v, x0.view(), {.kind = diffusion::sampler_kind::euler, .steps = steps});
        const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
        return {ms, double(images) / (ms / 1000.0)};
    }
};

/// Items per second (median) of vediff and of torch (0 when it did not run).
struct rates {
    double ours = 0, theirs = 0;
};

template <class Ours>
rates compare(const char* title, Ours& ours_side, std::vector<std::string> peer_args, bool with_torch, int warmup, int steps,
             double items_per_step, double flops_per_step) {
    fmt::print("== {}; median of {} after {} warm-up, the libraries taking turns; load average {}\n", title, steps, warmup, load_average());
    std::fflush(stdout);
    measurement ours, theirs;
    torch_peer peer;
    theirs.ok = with_torch && peer.start(peer_args);
    if (with_torch && !theirs.ok) fmt::print("torch: not available (torch_dit.py did not start)\n");
    if (theirs.ok) theirs.rss_baseline_kib = long(peer.header().count("rss_baseline_kib") ? peer.header().at("rss_baseline_kib") : 0);
    auto turn = [&](bool timed) { take_turn([&] { return ours_side.step(); }, ours, peer, theirs, timed); };
    for (int i = 0; i < warmup; ++i) turn(false);
    const cpu_ticks before = read_ticks(theirs.ok ? peer.pid() : 0);
    for (int i = 0; i < steps; ++i) turn(true);
    const cpu_ticks after = read_ticks(theirs.ok ? peer.pid() : 0);
    ours.peak_rss_kib = self_usage().ru_maxrss;
    if (theirs.ok) {
        const auto report = peer.finish();
        theirs.ok = report.count("peak_rss_kib") > 0;
        if (theirs.ok) theirs.peak_rss_kib = long(report.at("peak_rss_kib"));
    }
    const double machine = double(after.total - before.total);
    const double others = machine > 0 ? std::max(0.0, 100.0 * double((after.busy - before.busy) - (after.ours - before.ours)) / machine) : 0.0;
    const double ours_rate = items_per_step / (ours.median_ms() / 1000.0);
    const double theirs_rate = theirs.ok ? items_per_step / (theirs.median_ms() / 1000.0) : 0.0;
    fmt::print("{:<32} {:>12} {:>12}\n", "", "vediff", "torch");
    auto row = [&](const char* label, double a, double b, const char* f) {
        fmt::print("{:<32} {:>12} {:>12}\n", label, fmt::format(fmt::runtime(f), a), theirs.ok ? fmt::format(fmt::runtime(f), b) : std::string("n/a"));
    };
    row("per second (median)", ours_rate, theirs_rate, "{:.2f}");
    row("step ms (median)", ours.median_ms(), theirs.median_ms(), "{:.1f}");
    row("step ms (min)", ours.min_ms(), theirs.min_ms(), "{:.1f}");
    row("peak RSS, MiB", mib(ours.peak_rss_kib), mib(theirs.peak_rss_kib), "{:.1f}");
    if (flops_per_step > 0)
        row("GFLOP/s (matrix products)", flops_per_step / ours.median_ms() / 1e6, theirs.ok ? flops_per_step / theirs.median_ms() / 1e6 : 0.0, "{:.1f}");
    if (theirs.ok) {
        fmt::print("ratio vediff/torch: {:.2f}x; peak memory ratio {:.2f}\n", ours_rate / theirs_rate,
                   double(ours.peak_rss_kib) / double(theirs.peak_rss_kib));
    }
    fmt::print("other processes used {:.0f}% of the CPUs during the timed steps\n", others);
    std::fflush(stdout);
    return {ours_rate, theirs_rate};
}

} // namespace

int main(int argc, char** argv) {
    int threads = 2, warmup = 1, steps = 5;
    std::int64_t batch = 64;
    std::string mode = "both", precision = "fp32";
    bool with_torch = true;
    const char* usage =
        "usage: bench_dit [--mode train|sample|both] [--precision fp32|bf16|both] [--threads N] [--warmup W] [--steps S] [--batch B] "
        "[--no-torch]\n";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--warmup" && i + 1 < argc) warmup = std::atoi(argv[++i]);
        else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
        else if (a == "--mode" && i + 1 < argc) mode = argv[++i];
        else if (a == "--precision" && i + 1 < argc) precision = argv[++i];
        else if (a == "--no-torch") with_torch = false;
        else {
            std::fputs(usage, stderr);
            return 2;
        }
    }
    if (threads < 1 || warmup < 0 || steps < 1 || batch < 1 || (mode != "train" && mode != "sample" && mode != "both") ||
        (precision != "fp32" && precision != "bf16" && precision != "both")) {
        std::fprintf(stderr, "bench_dit: bad arguments\n%s", usage);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    const std::string script = std::string(VEDIFF_BENCH_DIR) + "/torch_dit.py";
    const auto c = dit_s1();
    const auto env = [](const char* name) { const char* v = std::getenv(name); return v ? std::string(v) : std::string("unset"); };
    fmt::print("torch's OpenBLAS: OPENBLAS_CORETYPE={}, OPENBLAS_L2_SIZE={} (benchmarks/run.sh: SkylakeX, unset)\n", env("OPENBLAS_CORETYPE"),
               env("OPENBLAS_L2_SIZE"));
    std::map<std::string, rates> measured;  // "train fp32", "sample bf16", ...
    const auto run = [&]<class Precision>() {
        const std::string p(Precision::name);
        std::vector<std::string> extra;
        if (Precision::rounds_operands) extra.push_back("bf16");
        const auto with_extra = [&](std::vector<std::string> args) {
            args.insert(args.end(), extra.begin(), extra.end());
            return args;
        };
        if (mode != "sample") {
            dit_trainer<Precision> trainer(batch);
            fmt::print("DiT-S/1 ({}): {} parameters, {} tokens{}\n", p, nn::parameter_count(trainer.model), c.tokens(),
                       Precision::rounds_operands ? fmt::format("; bf16 kernel: {}; torch under autocast bf16", cpu_bf16_kernel_name()) : "");
            measured["train " + p] = compare(fmt::format("training step ({}), batch {}, {} threads", p, batch, threads).c_str(), trainer,
                                             with_extra({"/usr/bin/python3", script, "train", std::to_string(threads), std::to_string(batch)}),
                                             with_torch, warmup, steps, double(batch), 3.0 * forward_flops_per_sample(c) * double(batch));
        }
        if (mode != "train") {
            dit_sampler<Precision> sampler(64, 50, 4.0);
            measured["sample " + p] = compare(fmt::format("sampling ({}) 64 images, 50 Euler steps, CFG 4, {} threads", p, threads).c_str(),
                                              sampler, with_extra({"/usr/bin/python3", script, "sample", std::to_string(threads), "64", "50", "4"}),
                                              with_torch, 0, 1, 64.0, 2.0 * 64 * 50 * forward_flops_per_sample(c));
        }
    };
    if (precision != "bf16") run.template operator()<fp32>();
    if (precision != "fp32") run.template operator()<bf16_mixed>();
    if (precision == "both") {
        fmt::print("== bf16 against fp32, this invocation\n");
        for (const char* what : {"train", "sample"}) {
            const auto f = measured.find(std::string(what) + " fp32"), b = measured.find(std::string(what) + " bf16");
            if (f == measured.end() || b == measured.end()) continue;
            fmt::print("{:<7} vediff bf16 / vediff fp32 {:.2f}x", what, b->second.ours / f->second.ours);
            if (b->second.theirs > 0 && f->second.theirs > 0)
                fmt::print("; torch bf16 / torch fp32 {:.2f}x; vediff bf16 / torch bf16 {:.2f}x", b->second.theirs / f->second.theirs,
                           b->second.ours / b->second.theirs);
            fmt::print("\n");
        }
    }
    return 0;
}
