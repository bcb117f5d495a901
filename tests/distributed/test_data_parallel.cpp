// Data-parallel training over MPI against one process (run as `mpirun -np 2 test_data_parallel`,
// tests/CMakeLists.txt): two ranks with half of the global batch each must follow the
// one-process run with the whole batch, step by step (the loss of every step) and in the end
// (every weight, and the DiT's EMA). The ranks take disjoint shards of each global batch and of
// every batch-shaped random draw (noise, times, label dropout, posterior samples), so the only
// difference is the order of floating-point sums: each rank sums its half of the batch gradient,
// then the all-reduce adds the halves. That is a rounding difference of order float epsilon
// (1.2e-7) per gradient element and step, which Adam's normalized update carries on; over 20
// steps it stays below the bounds here (measured, 2026-12-06: DiT loss 2.6e-10 relative and
// weights 6e-8; tokenizer loss 1.2e-5 and weights 1e-6, its attention key biases apart, see
// there), while a run that differs in substance — one process with the per-rank batch, the
// control below — is orders of magnitude away (loss 0.1 and 0.6 relative, weights 8e-3 and 2e-2).
#define BOOST_TEST_MODULE test_data_parallel
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "vediff/distributed/mpi.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/jobs/train_dit.hpp"
#include "vediff/jobs/train_tokenizer.hpp"
#include "vediff/train/latent_cache.hpp"

namespace fs = std::filesystem;
using namespace vediff;

namespace {

distributed::mpi& world() {
    static distributed::mpi comm(120.0);
    return comm;
}

// One directory for both ranks: mpirun is the parent of both.
fs::path shared_dir(const std::string& name) { return fs::temp_directory_path() / ("vediff_data_parallel_" + std::to_string(::getppid())) / name; }

struct run_record {
    std::vector<nlohmann::json> log;
    std::map<std::string, std::vector<float>> weights;  // model.safetensors (the DiT's EMA included, as "ema.*")
};

run_record read_run(const fs::path& dir) {
    run_record r;
    std::ifstream in(dir / "log.jsonl");
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) r.log.push_back(nlohmann::json::parse(line));
    const io::safetensors_file f(dir / "checkpoint" / "model.safetensors");
    for (const auto& name : f.names()) r.weights[name] = f.get<float>(name).to_vector();
    return r;
}

struct difference {
    double loss_rel = 0;    // largest |Δloss| / |loss| over the logged steps
    double weight_abs = 0;  // largest |Δw| over the weights not excluded
    std::string worst_weight;
    double excluded_abs = 0;  // largest |Δw| over the excluded weights
};

/// Compares two runs; weights whose names end with `excluded_suffix` (if given) are measured apart.
difference compare(const run_record& a, const run_record& b, const std::string& excluded_suffix = {}) {
    BOOST_TEST_REQUIRE(a.log.size() == b.log.size());
    BOOST_TEST_REQUIRE(a.weights.size() == b.weights.size());
    difference d;
    for (std::size_t i = 0; i < a.log.size(); ++i) {
        BOOST_TEST_REQUIRE(a.log[i].at("step") == b.log[i].at("step"));
        const double la = a.log[i].at("loss").get<double>(), lb = b.log[i].at("loss").get<double>();
        d.loss_rel = std::max(d.loss_rel, std::abs(la - lb) / std::abs(la));
    }
    for (const auto& [name, wa] : a.weights) {
        const auto& wb = b.weights.at(name);
        BOOST_TEST_REQUIRE(wa.size() == wb.size());
        double worst = 0;
        for (std::size_t i = 0; i < wa.size(); ++i) worst = std::max(worst, std::abs(double(wa[i]) - double(wb[i])));
        if (!excluded_suffix.empty() && name.ends_with(excluded_suffix)) {
            d.excluded_abs = std::max(d.excluded_abs, worst);
        } else if (worst > d.weight_abs) {
            d.weight_abs = worst;
            d.worst_weight = name;
        }
    }
    return d;
}

/// A latent cache of 64 random latents (4 × 8 × 8) in 4 classes.
void write_latent_cache(const fs::path& path) {
    train::latent_cache cache;
    philox_generator gen{11, 0, 0};
    cache.adopt_latents(ops::normal<float>({64, 4, 8, 8}, gen));
    for (int i = 0; i < 64; ++i) cache.labels.push_back(i % 4);
    cache.channel_mean.assign(4, 0.0);
    cache.channel_std.assign(4, 1.0);
    cache.tokenizer = "synthetic";
    save_latent_cache(path, cache);
}

/// A LightningDiT of hidden 32, depth 2, 2 heads on the cache, 20 steps of global batch 8.
train::dit_run_config small_dit(const fs::path& latents, std::uint64_t seed) {
    train::dit_run_config cfg;
    cfg.latents = latents.string();
    cfg.model.hidden_size = 32;
    cfg.model.depth = 2;
    cfg.model.num_heads = 2;
    cfg.model.patch_size = 2;
    cfg.steps = 20;
    cfg.batch = 8;
    cfg.warmup = 2;
    cfg.seed = seed;
    return cfg;
}

} // namespace

namespace {
/// A DiT of hidden 32 and 2 heads on 4×8×8 latents in 4 classes.
models::dit_config tiny_dit_config(std::int64_t depth) {
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 4;
    c.hidden_size = 32;
    c.depth = depth;
    c.num_heads = 2;
    return c;
}
} // namespace

BOOST_AUTO_TEST_CASE(two_ranks_run) {
    BOOST_TEST_REQUIRE(world().size() == 2, "run this test as mpirun -np 2");
}

BOOST_AUTO_TEST_CASE(zero1_keeps_half_of_the_moments_on_each_rank) {
    auto& comm = world();
    models::dit<float> model(tiny_dit_config(2), 1);
    distributed::sharded_adamw<distributed::mpi, float, cpu> sharded(model, {}, comm, true), whole(model, {}, comm, false);
    std::int64_t owned = sharded.owned_values();
    comm.all_reduce_sum(&owned, 1, "owned values");
    BOOST_TEST(owned == sharded.total_values());
    BOOST_TEST(sharded.owned_values() <= sharded.total_values() / 2 + 1);
    BOOST_TEST(whole.owned_values() == whole.total_values());
}

// Buckets sent while backward runs (overlap) give the gradients of buckets sent after it, bit
// for bit: only when each all-reduce starts differs. With 8 KiB buckets the tiny DiT has many;
// backward sends them one at a time as their layers finish (the first when the final layer does).
BOOST_AUTO_TEST_CASE(buckets_sent_during_backward_give_the_same_gradients) {
    auto& comm = world();
    const auto c = tiny_dit_config(3);
    std::map<bool, std::vector<std::vector<float>>> gradients;
    std::size_t buckets = 0, started = 0;
    for (const bool overlap : {false, true}) {
        models::dit<float> model(c, 1);
        // Random weights everywhere: adaLN-Zero's zero gates would leave most gradients zero.
        philox_generator weights{.seed = 9};
        model.for_each_parameter([&](const std::string&, nn::parameter<float, cpu>& p) {
            const auto w = ops::normal<float>(p.value.shape(), weights);
            elementwise_kernels<cpu>::scale(p.value.data(), w.data(), 0.2f, w.numel());
        }, std::string{});
        distributed::data_parallel<distributed::mpi, models::dit<float>> parallel(comm, model, 8 << 10, overlap);
        philox_generator data{.seed = 5}, noise{.seed = 6};
        data.shard = noise.shard = parallel.shard();
        const auto x1 = ops::normal<float>({4, 4, 8, 8}, data);
        const auto y = tensor<std::int32_t>::from_host({4}, {0, 1, 2, 3});
        for (std::int64_t step = 0; step < 2; ++step) {  // twice: the per-step state must reset
            nn::zero_grad(model);
            const auto pair = diffusion::make_training_pair(x1.view(), noise);
            const auto v = model.forward(pair.x_t, pair.t, y);
            const auto loss = diffusion::flow_matching_loss(v.view(), pair.target.view());
            parallel.begin_backward(model, step);
            (void)model.backward(loss.dv);
            parallel.reduce_gradients(model, step);
        }
        auto& g = gradients[overlap];
        model.for_each_parameter([&](const std::string&, nn::parameter<float, cpu>& p) {
            if (p.trainable) g.push_back(p.grad.to_vector());
        }, std::string{});
        if (overlap) {
            buckets = parallel.bucket_count();
            started = parallel.last_reduction().started_during_backward;
        } else {
            BOOST_TEST(parallel.last_reduction().started_during_backward == 0u);
        }
    }
    BOOST_TEST(buckets > 4u);
    BOOST_TEST(started >= 1u);
    BOOST_TEST(started <= buckets);
    BOOST_TEST_REQUIRE(gradients[false].size() == gradients[true].size());
    std::size_t nonzero = 0;
    for (std::size_t k = 0; k < gradients[false].size(); ++k) {
        BOOST_TEST(gradients[false][k] == gradients[true][k]);
        nonzero += std::any_of(gradients[true][k].begin(), gradients[true][k].end(), [](float g) { return g != 0.0f; });
    }
    BOOST_TEST(nonzero > gradients[true].size() * 3 / 4, nonzero << " of " << gradients[true].size() << " gradients are not all zero");
}

BOOST_AUTO_TEST_CASE(dit_on_two_ranks_follows_one_process) {
    auto& comm = world();
    const auto dir = shared_dir("dit");
    if (comm.rank() == 0) {
        fs::remove_all(dir);
        fs::create_directories(dir);
        write_latent_cache(dir / "latents.safetensors");
    }
    comm.barrier("the latent cache");
    auto cfg = small_dit(dir / "latents.safetensors", 3);
    cfg.model.class_dropout_prob = 0.25;  // label dropout draws are sharded too
    const auto options = [&](const std::string& name) {
        return jobs::dit_run_options{.out = dir / name, .log_every = 1, .checkpoint_every = 1000};
    };
    const auto summary = jobs::train_dit<jobs::cpu_only>(cfg, options("two_ranks"), comm);
    // ZeRO-1: each rank updates half of the weights and keeps half of the moments; AdamW's update
    // is elementwise, so the run is the plain data-parallel one bit for bit.
    auto zero1 = options("two_ranks_zero1");
    zero1.zero1 = true;
    const auto sharded = jobs::train_dit<jobs::cpu_only>(cfg, zero1, comm);
    BOOST_TEST(sharded.at("zero1").get<bool>());
    BOOST_TEST(summary.at("ranks").get<int>() == 2);
    BOOST_TEST(summary.at("steps").get<std::int64_t>() == 20);
    if (comm.rank() == 0) {
        distributed::single_process one;
        jobs::train_dit<jobs::cpu_only>(cfg, options("one_process"), one);
        auto half = cfg;
        half.batch = cfg.batch / 2;
        jobs::train_dit<jobs::cpu_only>(half, options("one_process_half_batch"), one);

        const auto two = read_run(dir / "two_ranks");
        BOOST_TEST(two.log.size() == 20u);
        BOOST_TEST(two.weights.count("ema.x_embedder.proj.weight") == 1u);
        const auto with_zero1 = compare(two, read_run(dir / "two_ranks_zero1"));
        BOOST_TEST(with_zero1.loss_rel == 0.0);
        BOOST_TEST(with_zero1.weight_abs == 0.0);
        const auto same = compare(two, read_run(dir / "one_process"));
        BOOST_TEST_MESSAGE("DiT, 2 ranks vs 1 process: loss rel " << same.loss_rel << ", weights abs " << same.weight_abs << " ("
                                                                  << same.worst_weight << ")");
        BOOST_TEST(same.loss_rel < 1e-5);
        BOOST_TEST(same.weight_abs < 1e-5);
        const auto control = compare(two, read_run(dir / "one_process_half_batch"));
        BOOST_TEST_MESSAGE("DiT, control (1 process, batch 4): loss rel " << control.loss_rel << ", weights abs " << control.weight_abs);
        BOOST_TEST(control.loss_rel > 1e-3);
        BOOST_TEST(control.weight_abs > 1e-3);
    }
    comm.barrier("the comparison");
}

BOOST_AUTO_TEST_CASE(tokenizer_on_two_ranks_follows_one_process) {
    auto& comm = world();
    const auto dir = shared_dir("tokenizer");
    if (comm.rank() == 0) {
        fs::remove_all(dir);
        fs::create_directories(dir);
    }
    comm.barrier("the tokenizer directory");
    jobs::tokenizer_job cfg;
    cfg.data = VEDIFF_TEST_DATA_DIR;
    cfg.model.ch = 32;
    cfg.model.ch_mult = {1, 2};
    cfg.model.norm_groups = 8;
    cfg.model.z_channels = cfg.model.embed_dim = 4;
    cfg.model.attn_resolutions = {};
    cfg.loss = "ve+kl";  // every term: reconstruction, VE, magnitude and KL
    cfg.steps = 20;
    cfg.batch = 8;
    cfg.warmup = 2;
    cfg.seed = 4;
    cfg.log_every = 1;
    cfg.checkpoint_every = 1000;
    cfg.eval_images = 8;
    const auto run_in = [&](const std::string& name, auto& communicator, std::int64_t batch) {
        auto c = cfg;
        c.out = (dir / name).string();
        c.batch = batch;
        return jobs::train_tokenizer<jobs::cpu_only>(c, communicator);
    };
    const auto summary = run_in("two_ranks", comm, 8);
    BOOST_TEST(summary.at("finished").get<bool>());
    BOOST_TEST(summary.at("steps").get<std::int64_t>() == 20);
    cfg.zero1 = true;
    run_in("two_ranks_zero1", comm, 8);
    cfg.zero1 = false;
    if (comm.rank() == 0) {
        distributed::single_process one;
        run_in("one_process", one, 8);
        run_in("one_process_half_batch", one, 4);
        const auto two = read_run(dir / "two_ranks");
        const auto one_run = read_run(dir / "one_process");
        const auto with_zero1 = compare(two, read_run(dir / "two_ranks_zero1"));
        BOOST_TEST(with_zero1.loss_rel == 0.0);
        BOOST_TEST(with_zero1.weight_abs == 0.0);
        // The attention blocks' key biases are apart: softmax over keys ignores a shift that is the
        // same for every key, so their gradient is zero in exact arithmetic and pure rounding noise
        // in floats, which Adam normalizes into steps of up to lr each (measured: 3.7e-3 after 20
        // steps at lr 1e-3, every other weight within 1e-6). The L1 reconstruction's sign
        // gradient makes the loss the more sensitive figure (measured 1.2e-5).
        const auto same = compare(two, one_run, "attn_1.k.bias");
        BOOST_TEST_MESSAGE("tokenizer, 2 ranks vs 1 process: loss rel " << same.loss_rel << ", weights abs " << same.weight_abs << " ("
                                                                        << same.worst_weight << "), key biases " << same.excluded_abs);
        BOOST_TEST(same.loss_rel < 1e-4);
        BOOST_TEST(same.weight_abs < 1e-5);
        BOOST_TEST(same.excluded_abs <= cfg.lr * double(cfg.steps));
        // The logged latent statistics are global too.
        for (std::size_t i = 0; i < two.log.size(); ++i) {
            BOOST_TEST(two.log[i].at("sigma2_mean").get<double>() == one_run.log[i].at("sigma2_mean").get<double>(),
                       boost::test_tools::tolerance(1e-4));
            const auto sa = two.log[i].at("latent_channel_std").get<std::vector<double>>();
            const auto sb = one_run.log[i].at("latent_channel_std").get<std::vector<double>>();
            BOOST_TEST_REQUIRE(sa.size() == sb.size());
            for (std::size_t c = 0; c < sa.size(); ++c) BOOST_TEST(sa[c] == sb[c], boost::test_tools::tolerance(1e-4));
        }
        const auto control = compare(two, read_run(dir / "one_process_half_batch"), "attn_1.k.bias");
        BOOST_TEST_MESSAGE("tokenizer, control (1 process, batch 4): loss rel " << control.loss_rel << ", weights abs " << control.weight_abs);
        BOOST_TEST(control.loss_rel > 1e-3);
        BOOST_TEST(control.weight_abs > 1e-3);
    }
    comm.barrier("the comparison");
}

// A checkpoint is one file set whatever the world size, ZeRO-1's sharded moments included (they
// are gathered into it): two ranks with --zero1 stop at step 10, one process resumes to step 20
// and lands where the uninterrupted two-rank run did. Moments lost or misplaced in the gather
// would send the resumed run elsewhere at once.
BOOST_AUTO_TEST_CASE(a_two_rank_checkpoint_resumes_in_one_process) {
    auto& comm = world();
    const auto dir = shared_dir("dit_resume");
    if (comm.rank() == 0) {
        fs::remove_all(dir);
        fs::create_directories(dir);
        write_latent_cache(dir / "latents.safetensors");
    }
    comm.barrier("the latent cache");
    const auto cfg = small_dit(dir / "latents.safetensors", 5);
    jobs::train_dit<jobs::cpu_only>(cfg, {.out = dir / "straight", .log_every = 1, .checkpoint_every = 1000}, comm);
    const auto first = jobs::train_dit<jobs::cpu_only>(
        cfg, {.out = dir / "resumed", .log_every = 1, .checkpoint_every = 1000, .stop_after = 10, .zero1 = true}, comm);
    BOOST_TEST(!first.at("finished").get<bool>());
    BOOST_TEST(first.at("stopped_by").get<std::string>() == "stop_after");
    if (comm.rank() == 0) {
        distributed::single_process one;
        const auto second = jobs::train_dit<jobs::cpu_only>(cfg, {.out = dir / "resumed", .resume = true, .log_every = 1, .checkpoint_every = 1000}, one);
        BOOST_TEST(second.at("finished").get<bool>());
        BOOST_TEST(second.at("steps_this_run").get<std::int64_t>() == 10);
        const auto d = compare(read_run(dir / "straight"), read_run(dir / "resumed"));
        BOOST_TEST_MESSAGE("DiT, 2 ranks straight vs 2 ranks + 1 process resumed: loss rel " << d.loss_rel << ", weights abs " << d.weight_abs);
        BOOST_TEST(d.loss_rel < 1e-5);
        BOOST_TEST(d.weight_abs < 1e-5);
        fs::remove_all(dir.parent_path());
    }
    comm.barrier("the end");
}
