// conv2d throughput: forward, and forward + backward (dx, dweight, dbias), in images per second,
// for vediff and, in the same invocation, PyTorch (benchmarks/torch_conv.py, oneDNN) on the same
// thread count. The first case is the target (64→64, 3×3, pad 1, batch 64, 32×32);
// the others are the convolutions of the Fashion-MNIST classifier (models/fashion_classifier.hpp).
//   bench_conv [--threads N] [--reps R] [--no-torch]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/nn/conv2d.hpp"

using namespace vediff;

namespace {

struct conv_case {
    std::int64_t batch, in_channels, out_channels, height, width, kernel, stride, pad;
    std::string spec() const {
        return fmt::format("{}:{}:{}:{}:{}:{}:{}:{}", batch, in_channels, out_channels, height, width, kernel, stride, pad);
    }
    std::string label() const {
        return fmt::format("{}→{} {}×{} s{} p{}, {}×{}×{}", in_channels, out_channels, kernel, kernel, stride, pad, batch,
                           height, width);
    }
};

struct throughput {
    double forward = 0, forward_backward = 0;  // images per second
};

template <class F>
double median_seconds(F&& f, int reps, int warmup = 3) {
    for (int i = 0; i < warmup; ++i) f();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
        const auto start = std::chrono::steady_clock::now();
        f();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

throughput run_vediff(const conv_case& c, int reps) {
    nn::conv2d<float> conv({.in_channels = c.in_channels, .out_channels = c.out_channels, .kernel_size = c.kernel,
                            .stride = c.stride, .padding = ops::padding2d::symmetric(c.pad)},
                           1);
    auto x = tensor<float>::empty({c.batch, c.in_channels, c.height, c.width});
    for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = philox_normal<float>(2, 0, 0, std::uint64_t(i));
    auto dy = conv.forward(x);
    for (std::int64_t i = 0; i < dy.numel(); ++i) dy.data()[i] = philox_normal<float>(3, 0, 0, std::uint64_t(i));
    throughput r;
    r.forward = double(c.batch) / median_seconds([&] { (void)conv.forward(x); }, reps);
    r.forward_backward = double(c.batch) / median_seconds([&] {
        (void)conv.forward(x);
        (void)conv.backward(dy);
    }, reps);
    return r;
}

/// Runs torch_conv.py once for all cases; returns spec → throughput (empty when torch is unavailable).
std::map<std::string, throughput> run_torch(const std::vector<conv_case>& cases, int threads, int reps) {
    std::string cmd = fmt::format("/usr/bin/python3 {}/torch_conv.py {} {}", VEDIFF_BENCH_DIR, threads, reps);
    for (const auto& c : cases) cmd.append(" ").append(c.spec());
    std::map<std::string, throughput> out;
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return out;
    char spec[128];
    double fwd, both;
    while (std::fscanf(pipe, "%127s %lf %lf", spec, &fwd, &both) == 3) out[spec] = {fwd, both};
    pclose(pipe);
    return out;
}

} // namespace

int main(int argc, char** argv) {
    int threads = 2, reps = 10;
    bool torch = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else if (a == "--no-torch") torch = false;
        else {
            std::fprintf(stderr, "usage: bench_conv [--threads N] [--reps R] [--no-torch]\n");
            return 2;
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    // The target, then the four convolutions of models/fashion_classifier.hpp at batch 128.
    const std::vector<conv_case> cases{
        {64, 64, 64, 32, 32, 3, 1, 1},
        {128, 1, 32, 28, 28, 3, 1, 1},
        {128, 32, 64, 28, 28, 3, 2, 1},
        {128, 64, 64, 14, 14, 3, 1, 1},
        {128, 64, 64, 14, 14, 3, 2, 1},
    };
    fmt::print("conv2d, {} threads, median of {} repetitions after 3 warm-up runs\n", threads, reps);
    std::vector<throughput> ours;
    for (const auto& c : cases) ours.push_back(run_vediff(c, reps));
    const auto theirs = torch ? run_torch(cases, threads, reps) : std::map<std::string, throughput>{};

    fmt::print("{:<36} {:>12} {:>12} {:>12} {:>12} {:>9}\n", "case (images/s)", "vediff fwd", "torch fwd", "vediff f+b",
               "torch f+b", "f+b ratio");
    for (std::size_t i = 0; i < cases.size(); ++i) {
        const auto it = theirs.find(cases[i].spec());
        if (it == theirs.end()) {
            fmt::print("{:<36} {:>12.1f} {:>12} {:>12.1f} {:>12} {:>9}\n", cases[i].label(), ours[i].forward, "n/a",
                       ours[i].forward_backward, "n/a", "n/a");
        } else {
            fmt::print("{:<36} {:>12.1f} {:>12.1f} {:>12.1f} {:>12.1f} {:>8.2f}x\n", cases[i].label(), ours[i].forward,
                       it->second.forward, ours[i].forward_backward, it->second.forward_backward,
                       ours[i].forward_backward / it->second.forward_backward);
        }
    }
    return 0;
}
