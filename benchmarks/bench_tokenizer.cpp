// One full tokenizer training step — encoder, posterior sample, decoder, loss (l1 reconstruction +
// variance expansion + magnitude, per-image-sum reduction), backward and AdamW — in images per
// second and peak memory, for vediff and, in the same invocation, the same LDM architecture in
// PyTorch (benchmarks/torch_tokenizer.py) on the same thread count. Default: the target,
// batch 64 of 1×32×32, ch 64, ch_mult (1, 2, 2), 1 res block, z_channels 4.
//   bench_tokenizer [--threads N] [--warmup W] [--steps S] [--batch B] [--no-torch] [--precision fp32|bf16]
//   --precision bf16: the tokenizer's convolutions under bf16_mixed (core/precision.hpp), against PyTorch
//       with encode and decode under torch.autocast("cpu", dtype=torch.bfloat16) (oneDNN); the critics fp32
//   bench_tokenizer --recipe [--resolution R] ...   LDM's real-resolution step: the f8c4 tokenizer (SD's
//       VAE) on batch 4 of 3×256×256 by default, + LPIPS (full VGG16, random weights) + the PatchGAN
//       (ndf 64) with the adaptive weight, and the discriminator's own step (train/tokenizer_critics.hpp)
//   --cache-mib M: the cpu block cache's budget (default 2048; its idle blocks count in the peak RSS)
//   --memory: after each phase of vediff's steps, the cpu allocator's live bytes, their high-water mark
//       within the phase, its idle cached blocks, and the process's VmRSS / VmHWM (where the peak is)
//   --sequential: all of vediff's steps first, then (its memory returned) all of PyTorch's, for sizes
//       whose two working sets do not fit the machine together (the recipe at 256: 23 GiB here)
// The two libraries take turns, one step each, with a pause between (an idle OpenMP pool spins for
// a while and would steal a core from the other): on a shared machine both then see the same load,
// and the ratio of the medians is fair even when the absolute numbers are not. The share of the
// CPUs that other processes used meanwhile is printed: numbers taken while it is high are noise.
// Memory is the peak resident set size of each process (getrusage(RUSAGE_SELF).ru_maxrss), with
// the RSS each had before its model was built. PyTorch is started first: at exec the kernel folds
// the parent's high-water RSS into the child's ru_maxrss, so starting it while this process is
// still small keeps its number its own.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <fmt/format.h>

#include "peer.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/random.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/train/tokenizer_critics.hpp"

using namespace vediff;
using namespace vediff::bench;

namespace {

/// The phases of one vediff step, timed separately (the medians show where a step's time goes).
enum phase { encode, sample, decode, loss_eval, critics, decode_backward, posterior_backward, encode_backward, optimizer, phase_count };
constexpr const char* phase_names[phase_count] = {"encode",          "posterior sample", "decode",          "loss",
                                                  "LPIPS + discriminator", "decode backward", "posterior backward", "encode backward",
                                                  "AdamW + zero grad"};
using critics_type = train::tokenizer_critics<float, cpu, distributed::single_process>;

/// vediff's side: the agreed training step of the tokenizer, its convolutions under precision P.
template <class P>
struct vediff_trainer {
    models::autoencoder_kl<float, cpu, P> ae;
    optim::adamw<float> opt;
    loss::tokenizer_loss<loss::reconstruction<loss::l1>, loss::variance_expansion, loss::magnitude_regularizer> objective;
    philox_generator noise_gen{.seed = 2};
    tensor<float> x;  // (B, C, H, W) in [−1, 1]
    std::vector<std::vector<double>> phase_ms = std::vector<std::vector<double>>(phase_count);
    distributed::single_process comm;
    std::optional<critics_type> critics;  // --recipe
    bool trace_memory = false;            // --memory

    vediff_trainer(const models::autoencoder_config& cfg, std::int64_t batch, bool recipe)
        : ae(cfg, 0), opt(ae, {.lr = 1e-4, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-8, .weight_decay = 1e-2}) {
        philox_generator data_gen{.seed = 1};
        x = ops::uniform<float>({batch, cfg.in_channels, cfg.resolution, cfg.resolution}, data_gen, -1.0f, 1.0f);
        if (recipe)
            critics.emplace(train::critic_config{.perceptual_weight = 1, .lpips_weights = "random", .disc_weight = 0.5, .disc_start = 0,
                                                 .disc_ndf = 64, .disc_lr = 1e-4},
                            cfg.in_channels, 0, comm);
    }

    /// One step; returns (milliseconds, loss) and records the phases when `timed`.
    std::pair<double, double> step(bool timed) {
        double t[phase_count];
        auto mark = clock_type::now();
        const auto start = mark;
        auto lap = [&](phase p) {
            const auto now = clock_type::now();
            t[p] = std::chrono::duration<double, std::milli>(now - mark).count();
            if (trace_memory) print_memory(phase_names[p]);
            mark = clock_type::now();
        };
        if (trace_memory) print_memory("start");
        auto moments = ae.encode(x);
        lap(encode);
        auto post = models::gaussian_posterior<float>::from_moments(moments);
        auto z = post.sample(noise_gen);
        lap(sample);
        auto x_hat = ae.decode(z);
        lap(decode);
        auto r = objective.evaluate(loss::tokenizer_outputs<float, cpu>{x, x_hat, post.mean, post.logvar, z});
        lap(loss_eval);
        double critic_loss = 0;
        if (critics) {
            critic_loss = critics->generator(x, x_hat, r.gradients.dx_hat, std::get<2>(ae.decoder.head.layers), 0, objective.mode).total();
            (void)critics->train_discriminator(x, x_hat, 0);
        }
        lap(phase::critics);
        auto dz = ae.decode_backward(r.gradients.dx_hat);
        lap(decode_backward);
        ops::axpy(dz.view(), r.gradients.dz.view());
        post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
        auto dmoments = post.moments_backward(r.gradients.dmean, r.gradients.dlogvar);
        lap(posterior_backward);
        (void)ae.encode_backward(dmoments);
        lap(encode_backward);
        opt.step();
        opt.zero_grad();
        lap(optimizer);
        if (timed)
            for (int p = 0; p < phase_count; ++p) phase_ms[p].push_back(t[p]);
        return {std::chrono::duration<double, std::milli>(clock_type::now() - start).count(), r.total + critic_loss};
    }

    static void print_memory(const char* label) {
        const auto s = memory<cpu>::stats();
        fmt::print("  memory after {:<22} live {:>6.0f} MiB, phase peak {:>6.0f}, cached {:>5.0f}; VmRSS {:>6.0f}, VmHWM {:>6.0f}\n",
                   label, double(s.live) / (1 << 20), double(s.peak_live) / (1 << 20), double(s.cached) / (1 << 20),
                   mib(proc_status_kib("VmRSS:")), mib(proc_status_kib("VmHWM:")));
        std::fflush(stdout);
        memory<cpu>::reset_peak();
    }
};


} // namespace

int main(int argc, char** argv) {
    int threads = 2, warmup = 2, steps = 7;
    std::int64_t batch = 0, resolution = 256;
    bool with_torch = true, recipe = false, sequential = false, trace_memory = false;
    std::string precision = "fp32";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--warmup" && i + 1 < argc) warmup = std::atoi(argv[++i]);
        else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
        else if (a == "--no-torch") with_torch = false;
        else if (a == "--recipe") recipe = true;
        else if (a == "--sequential") sequential = true;
        else if (a == "--memory") trace_memory = true;
        else if (a == "--cache-mib" && i + 1 < argc) memory<cpu>::set_cache_budget(std::size_t(std::atoll(argv[++i])) << 20);
        else if (a == "--resolution" && i + 1 < argc) resolution = std::atoll(argv[++i]);
        else if (a == "--precision" && i + 1 < argc && is_precision_name(argv[i + 1])) precision = argv[++i];
        else {
            std::fprintf(stderr, "usage: bench_tokenizer [--threads N] [--warmup W] [--steps S] [--batch B] [--no-torch] "
                                 "[--recipe [--resolution R]] [--sequential] [--cache-mib M] [--memory] [--precision fp32|bf16]\n");
            return 2;
        }
    }
    if (batch == 0) batch = recipe ? 4 : 64;
    if (threads < 1 || warmup < 0 || steps < 1 || batch < 1 || resolution < 32 || resolution % 8 != 0) {
        std::fprintf(stderr, "bench_tokenizer: --threads, --steps and --batch must be >= 1, --warmup >= 0, --resolution a multiple "
                             "of 8 from 32\n");
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);  // a peer that dies shows up as a failed write, not as our death
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    return with_precision(precision, [&]<class P>() -> int {
    // Default: ch 64, ch_mult (1, 2, 2), 1 res block, z 4 on 1×32×32; --recipe: SD's VAE on RGB.
    const models::autoencoder_config cfg = recipe ? models::published_autoencoder("f8c4", resolution) : models::autoencoder_config{};
    if (recipe)
        fmt::print("LDM's recipe: + LPIPS (VGG16, weight 1 per pixel) + PatchGAN (ndf 64, hinge, adaptive weight) + the "
                   "discriminator's AdamW step\n");
    fmt::print("tokenizer training step (encode + sample + decode + l1/VE/magnitude loss + backward + AdamW), "
               "batch {} of {}×{}×{}, ch {}, {} threads, precision {}; median of {} steps after {} warm-up steps, the libraries "
               "taking turns\n",
               batch, cfg.in_channels, cfg.resolution, cfg.resolution, cfg.ch, threads,
               P::rounds_operands ? fmt::format("bf16 (kernel: {})", cpu_bf16_kernel_name()) : std::string("fp32"), steps, warmup);
    fmt::print("load average before: {}\n", load_average());
    std::fflush(stdout);

    measurement ours, theirs;
    torch_peer peer;
    if (with_torch) {
        std::string mult;
        for (auto v : cfg.ch_mult) {
            if (!mult.empty()) mult += ',';
            mult += std::to_string(v);
        }
        theirs.ok = peer.start({"/usr/bin/python3", std::string(VEDIFF_BENCH_DIR) + "/torch_tokenizer.py", std::to_string(threads),
                                std::to_string(batch), std::to_string(cfg.ch), mult, std::to_string(cfg.num_res_blocks),
                                std::to_string(cfg.z_channels), std::to_string(cfg.resolution), recipe ? "recipe" : "plain",
                                std::string(P::name)});
        if (theirs.ok) {
            theirs.rss_baseline_kib = long(peer.header().count("rss_baseline_kib") ? peer.header().at("rss_baseline_kib") : 0);
            theirs.parameters = std::int64_t(peer.header().count("parameters") ? peer.header().at("parameters") : 0);
        } else {
            fmt::print("torch: not available (torch_tokenizer.py did not start)\n");
        }
    }

    ours.rss_baseline_kib = self_usage().ru_maxrss;
    auto trainer = std::make_unique<vediff_trainer<P>>(cfg, batch, recipe);
    trainer->trace_memory = trace_memory;
    ours.parameters = nn::parameter_count(trainer->ae);
    ours.ok = true;

    const long faults_at_start = self_usage().ru_minflt;
    long faults_before = faults_at_start;
    cpu_ticks before{}, after{};
    if (!sequential) {
        // Turns: vediff step, pause, torch step, pause.
        auto turn = [&](bool timed) { take_turn([&] { return trainer->step(timed); }, ours, peer, theirs, timed); };
        for (int i = 0; i < warmup; ++i) turn(false);
        faults_before = self_usage().ru_minflt;
        before = read_ticks(theirs.ok ? peer.pid() : 0);
        for (int i = 0; i < steps; ++i) turn(true);
        after = read_ticks(theirs.ok ? peer.pid() : 0);
    } else {
        // All of vediff's steps, then its memory back to the system, then all of the peer's: two
        // working sets of this size do not fit one machine's memory together.
        measurement none;
        torch_peer idle;
        for (int i = 0; i < warmup; ++i) take_turn([&] { return trainer->step(false); }, ours, idle, none, false);
        faults_before = self_usage().ru_minflt;
        before = read_ticks(theirs.ok ? peer.pid() : 0);
        for (int i = 0; i < steps; ++i) take_turn([&] { return trainer->step(true); }, ours, idle, none, true);
    }
    ours.faults_per_step = double(self_usage().ru_minflt - faults_before) / steps;
    ours.peak_rss_kib = self_usage().ru_maxrss;
    ours.vm_hwm_kib = vm_hwm_kib();
    std::vector<std::vector<double>> phase_ms = trainer->phase_ms;
    if (sequential) {
        trainer.reset();
        memory<cpu>::trim();
        for (int i = 0; i < warmup + steps && theirs.ok; ++i) {
            pause_between_libraries();
            peer_step(peer, theirs, i >= warmup);
        }
        after = read_ticks(theirs.ok ? peer.pid() : 0);
    }
    if (theirs.ok) {
        const auto report = peer.finish();
        theirs.ok = report.count("peak_rss_kib") > 0 && theirs.step_ms.size() == std::size_t(steps);
        if (theirs.ok) {
            theirs.peak_rss_kib = long(report.at("peak_rss_kib"));
            theirs.vm_hwm_kib = long(report.count("vm_hwm_kib") ? report.at("vm_hwm_kib") : -1);
            theirs.faults_per_step = report.count("faults_per_step") ? report.at("faults_per_step") : 0;
        }
    }
    const double machine = double(after.total - before.total);
    const double others =
        machine > 0 ? std::max(0.0, 100.0 * double((after.busy - before.busy) - (after.ours - before.ours)) / machine) : 0.0;

    fmt::print("{:<30} {:>12} {:>12}\n", "", "vediff", "torch");
    auto row = [&](const char* label, double a, double b, const char* f) {
        fmt::print("{:<30} {:>12} {:>12}\n", label, fmt::format(fmt::runtime(f), a),
                   theirs.ok ? fmt::format(fmt::runtime(f), b) : std::string("n/a"));
    };
    const double ours_ips = double(batch) / (ours.median_ms() / 1000.0);
    const double theirs_ips = theirs.ok ? double(batch) / (theirs.median_ms() / 1000.0) : 0.0;
    row("parameters", double(ours.parameters), double(theirs.parameters), "{:.0f}");
    row("images/s (median step)", ours_ips, theirs_ips, "{:.2f}");
    row("step ms (median)", ours.median_ms(), theirs.median_ms(), "{:.1f}");
    row("step ms (min)", ours.min_ms(), theirs.min_ms(), "{:.1f}");
    row("loss (last step)", ours.loss, theirs.loss, "{:.4g}");
    row("RSS before model, MiB", mib(ours.rss_baseline_kib), mib(theirs.rss_baseline_kib), "{:.1f}");
    row("peak RSS (ru_maxrss), MiB", mib(ours.peak_rss_kib), mib(theirs.peak_rss_kib), "{:.1f}");
    row("peak RSS - before, MiB", mib(ours.peak_rss_kib - ours.rss_baseline_kib),
        mib(theirs.peak_rss_kib - theirs.rss_baseline_kib), "{:.1f}");
    row("VmHWM, MiB", mib(ours.vm_hwm_kib), mib(theirs.vm_hwm_kib), "{:.1f}");
    row("page faults per step", ours.faults_per_step, theirs.faults_per_step, "{:.0f}");
    auto list = [](const std::vector<double>& v) {
        std::string s;
        for (double x : v) s += fmt::format(" {:.0f}", x);
        return s;
    };
    fmt::print("steps in order, ms: vediff{}; torch{}\n", list(ours.step_ms), theirs.ok ? list(theirs.step_ms) : " n/a");
    fmt::print("vediff step phases (median ms):");
    for (int p = 0; p < phase_count; ++p) fmt::print(" {} {:.1f};", phase_names[p], median(phase_ms[p]));
    fmt::print("\n");
    if (theirs.ok) {
        fmt::print("throughput ratio vediff/torch: {:.2f}x (target >= {})\n", ours_ips / theirs_ips,
                   P::rounds_operands ? "1.5x, against autocast bf16" : "1.3x");
        fmt::print("peak memory ratio vediff/torch: {:.2f} (target <= 1)\n", double(ours.peak_rss_kib) / double(theirs.peak_rss_kib));
    }
    fmt::print("other processes used {:.0f}% of the CPUs during the timed steps; load average after: {}\n", others,
               load_average());
    return 0;
    });
}
