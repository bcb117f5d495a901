// Data-parallel training steps over MPI, run by benchmarks/run_mpi.sh as
//   mpirun -np 1 bench_data_parallel   and   mpirun -np 2 bench_data_parallel
// (one OpenMP thread per rank), at the same global batch:
//   dit        a flow-matching step of DiT-S/2 on 4×8×8 latents (hidden 384, depth 12, 6 heads,
//              16 tokens), global batch 64;
//   tokenizer  a VE tokenizer step of the default f4 autoencoder on 1×32×32 images, global batch 32;
// each split into compute (forward, loss, backward), the gradient all-reduce that backward did not
// hide (the time reduce_gradients takes) and the optimizer (AdamW; with --zero1 sharded over the
// ranks, ZeRO stage 1, its time including the all-gather of the updated parameters). Each model
// runs twice: buckets all-reduced after backward ("overlap off"), and each bucket started as
// soon as backward announces it final ("overlap on"). Then the all-reduce alone over message
// sizes from 4 KiB to 64 MiB: latency and bandwidth, the inputs of docs/benchmarks.md's scaling
// model. Times are medians over the steps; every phase starts after a barrier.
//   bench_data_parallel [--steps S] [--warmup W] [--zero1]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <mpi.h>
#include <omp.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/distributed/mpi.hpp"
#include "vediff/distributed/zero.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"

using namespace vediff;
using clock_type = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

double ms_since(clock_type::time_point t) { return std::chrono::duration<double, std::milli>(clock_type::now() - t).count(); }

struct phases {
    std::vector<double> compute, reduce, optimizer, total, started_during_backward;
};

/// Runs `steps` timed steps (after `warmup`): compute() then the gradient reduction then the
/// optimizer, a barrier before each phase so that a phase's time is the slowest rank's.
template <class Compute, class Reduce, class Optimize, class Started>
phases time_steps(distributed::mpi& comm, int warmup, int steps, Compute&& compute, Reduce&& reduce, Optimize&& optimize,
                  Started&& started_during_backward) {
    phases p;
    for (int s = 0; s < warmup + steps; ++s) {
        comm.barrier("a benchmark step");
        const auto start = clock_type::now();
        compute(s);
        comm.barrier("compute");
        const double c = ms_since(start);
        const auto r0 = clock_type::now();
        reduce(s);
        const double r = ms_since(r0);
        if (s >= warmup) p.started_during_backward.push_back(double(started_during_backward()));
        const auto o0 = clock_type::now();
        optimize();
        comm.barrier("optimizer");
        const double o = ms_since(o0);
        if (s >= warmup) {
            p.compute.push_back(c);
            p.reduce.push_back(r);
            p.optimizer.push_back(o);
            p.total.push_back(ms_since(start));
        }
    }
    return p;
}

bool zero1 = false;

void report(distributed::mpi& comm, const char* name, bool overlap, const phases& p, std::int64_t global_batch,
            std::size_t gradient_bytes, std::size_t buckets) {
    if (comm.rank() != 0) return;
    const double total = median(p.total), reduce = median(p.reduce);
    fmt::print("{:<10} ranks {}  overlap {:<3}  global batch {:>3}  step {:8.1f} ms  compute {:8.1f}  all-reduce exposed {:6.2f} ({:4.1f}%)  "
               "optimizer{} {:6.2f}  {:7.1f} samples/s  gradients {:.1f} MiB in {} buckets, {:.0f} started during backward\n",
               name, comm.size(), overlap ? "on" : "off", global_batch, total, median(p.compute), reduce, 100.0 * reduce / total,
               zero1 ? " (ZeRO-1)" : "", median(p.optimizer), double(global_batch) / (total / 1000.0), double(gradient_bytes) / (1 << 20),
               buckets, median(p.started_during_backward));
    std::fflush(stdout);
}

template <class Model>
std::size_t gradient_bytes(Model& model) {
    std::size_t bytes = 0;
    model.for_each_parameter([&](const std::string&, nn::parameter<float, cpu>& p) {
        if (p.trainable) bytes += static_cast<std::size_t>(p.grad.numel()) * sizeof(float);
    }, std::string{});
    return bytes;
}

void bench_dit(distributed::mpi& comm, int warmup, int steps, bool overlap) {
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 10;
    c = c.with_size("S", 2);
    const std::int64_t global_batch = 64, local = global_batch / comm.size();
    models::dit<float> model(c, 0);
    distributed::data_parallel<distributed::mpi, models::dit<float>> parallel(comm, model, distributed::default_bucket_bytes, overlap);
    distributed::sharded_adamw<distributed::mpi, float, cpu> opt(model, {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0},
                                                                 comm, zero1);
    philox_generator data{.seed = 1}, noise{.seed = 3};
    data.shard = noise.shard = parallel.shard();
    const auto x1 = ops::normal<float>({local, 4, 8, 8}, data);
    std::vector<std::int32_t> labels;
    for (std::int64_t i = 0; i < local; ++i) labels.push_back(static_cast<std::int32_t>(i % 10));
    const auto y = tensor<std::int32_t>::from_host({local}, std::span<const std::int32_t>(labels));
    const auto p = time_steps(comm, warmup, steps, [&](int s) {
        opt.zero_grad();
        const auto pair = diffusion::make_training_pair(x1.view(), noise);
        const auto v = model.forward(pair.x_t, pair.t, y);
        const auto loss = diffusion::flow_matching_loss(v.view(), pair.target.view());
        parallel.begin_backward(model, s);
        (void)model.backward(loss.dv);
    }, [&](int s) { parallel.reduce_gradients(model, s); }, [&] { opt.step(); },
        [&] { return parallel.last_reduction().started_during_backward; });
    report(comm, "DiT-S/2", overlap, p, global_batch, gradient_bytes(model), parallel.bucket_count());
}

void bench_tokenizer(distributed::mpi& comm, int warmup, int steps, bool overlap) {
    const models::autoencoder_config cfg{};
    const std::int64_t global_batch = 32, local = global_batch / comm.size();
    models::autoencoder_kl<float> ae(cfg, 0);
    distributed::data_parallel<distributed::mpi, models::autoencoder_kl<float>> parallel(comm, ae, distributed::default_bucket_bytes, overlap);
    distributed::sharded_adamw<distributed::mpi, float, cpu> opt(ae, {.lr = 1e-4, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-8, .weight_decay = 1e-2},
                                                                 comm, zero1);
    loss::tokenizer_loss<loss::reconstruction<loss::l1>, loss::variance_expansion, loss::magnitude_regularizer> objective;
    philox_generator data{.seed = 1}, noise{.seed = 2};
    data.shard = noise.shard = parallel.shard();
    const auto x = ops::uniform<float>({local, 1, 32, 32}, data, -1.0f, 1.0f);
    const auto p = time_steps(comm, warmup, steps, [&](int s) {
        opt.zero_grad();
        auto moments = ae.encode(x);
        auto post = models::gaussian_posterior<float>::from_moments(moments);
        auto z = post.sample(noise);
        auto x_hat = ae.decode(z);
        auto r = objective.evaluate(loss::tokenizer_outputs<float, cpu>{x, x_hat, post.mean, post.logvar, z});
        parallel.begin_backward(ae, s);
        auto dz = ae.decode_backward(r.gradients.dx_hat);
        ops::axpy(dz.view(), r.gradients.dz.view());
        post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
        (void)ae.encode_backward(post.moments_backward(r.gradients.dmean, r.gradients.dlogvar));
    }, [&](int s) { parallel.reduce_gradients(ae, s); }, [&] { opt.step(); },
        [&] { return parallel.last_reduction().started_during_backward; });
    report(comm, "tokenizer", overlap, p, global_batch, gradient_bytes(ae), parallel.bucket_count());
}

void bench_all_reduce(distributed::mpi& comm) {
    if (comm.size() < 2) return;
    if (comm.rank() == 0)
        fmt::print("all-reduce (float sum, in place) over {} ranks: size, median time, algorithm bandwidth (bytes / time), "
                   "bus bandwidth (2(N-1)/N · bytes / time)\n", comm.size());
    for (std::size_t bytes = 4096; bytes <= (std::size_t{64} << 20); bytes *= 4) {
        std::vector<float> buffer(bytes / sizeof(float), 1.0f);
        const int reps = bytes <= (1 << 20) ? 200 : 20;
        std::vector<double> times;
        for (int r = 0; r < reps + 5; ++r) {
            comm.barrier("all-reduce benchmark");
            const auto start = clock_type::now();
            comm.all_reduce_sum(buffer.data(), buffer.size(), "benchmark buffer");
            if (r >= 5) times.push_back(ms_since(start));
        }
        const double ms = median(times), n = double(comm.size());
        if (comm.rank() == 0)
            fmt::print("  {:>9} KiB  {:9.3f} ms  {:7.2f} GB/s  {:7.2f} GB/s\n", bytes / 1024, ms, double(bytes) / (ms * 1e6),
                       2 * (n - 1) / n * double(bytes) / (ms * 1e6));
    }
}

} // namespace

int main(int argc, char** argv) {
    int steps = 20, warmup = 3;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--zero1") zero1 = true;
        else if (flag == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (flag == "--warmup" && i + 1 < argc) warmup = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: bench_data_parallel [--steps S] [--warmup W] [--zero1]\n");
            return 2;
        }
    }
    if (steps < 1 || warmup < 0) {
        std::fprintf(stderr, "bench_data_parallel: --steps must be >= 1, --warmup >= 0\n");
        return 2;
    }
    distributed::mpi comm(120.0);
    if (comm.rank() == 0)
        fmt::print("bench_data_parallel: {} rank(s), {} OpenMP thread(s) each; median of {} steps after {} warm-up{}\n", comm.size(),
                   omp_get_max_threads(), steps, warmup, zero1 ? "; AdamW sharded (ZeRO-1)" : "");
    for (const bool overlap : {false, true}) bench_dit(comm, warmup, steps, overlap);
    for (const bool overlap : {false, true}) bench_tokenizer(comm, warmup, steps, overlap);
    if (!zero1) bench_all_reduce(comm);
    return 0;
}
