// FID Inception feature extraction (models/inception.hpp: resize to 299, pool3, logits, spatial)
// in images per second at batch 50 of 299×299×3 images, for vediff and, in the same invocation,
// PyTorch (benchmarks/torch_inception.py: torchvision's Inception3 with pytorch-fid's FID
// patches, random weights, no_grad, oneDNN) on the same thread count. The weights are vediff's
// default draws: the speed does not depend on their values.
//   bench_inception [--threads N] [--reps R] [--batch B] [--no-torch]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/models/inception.hpp"

#include "peer.hpp"

using namespace vediff;

namespace {

/// Median images per second over `reps` timed runs after one warm-up run.
double vediff_images_per_second(std::int64_t batch, int reps) {
    auto net = std::make_unique<models::fid_inception_v3<float>>();
    auto x = tensor<float>::empty({batch, 3, 299, 299});
    for (std::int64_t i = 0; i < x.numel(); ++i) x.data()[i] = philox_uniform<float>(2, 0, 0, std::uint64_t(i));
    (void)net->forward(x.view());
    std::vector<double> seconds;
    for (int r = 0; r < reps; ++r) {
        const auto start = std::chrono::steady_clock::now();
        (void)net->forward(x.view());
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return double(batch) / bench::median(seconds);
}

/// Runs torch_inception.py; images per second, or a negative value when PyTorch is unavailable.
double torch_images_per_second(std::int64_t batch, int threads, int reps) {
    const auto cmd = fmt::format("/usr/bin/python3 {}/torch_inception.py {} {} {}", VEDIFF_BENCH_DIR, threads, reps, batch);
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return -1;
    double rate = -1;
    if (std::fscanf(pipe, "inception %lf", &rate) != 1) rate = -1;
    pclose(pipe);
    return rate;
}

} // namespace

int main(int argc, char** argv) {
    int threads = 2, reps = 3;
    std::int64_t batch = 50;
    bool torch = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else if (a == "--batch" && i + 1 < argc) batch = std::atoll(argv[++i]);
        else if (a == "--no-torch") torch = false;
        else {
            std::fprintf(stderr, "usage: bench_inception [--threads N] [--reps R] [--batch B] [--no-torch]\n");
            return 2;
        }
    }
    if (threads < 1 || reps < 1 || batch < 1) {
        std::fprintf(stderr, "bench_inception: --threads, --reps and --batch must be ≥ 1\n");
        return 2;
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    fmt::print("FID Inception features (pool3, logits, spatial), batch {} of 299×299×3, {} threads, median of {} runs "
               "after 1 warm-up; load average before: {}\n",
               batch, threads, reps, bench::load_average());
    const double ours = vediff_images_per_second(batch, reps);
    bench::pause_between_libraries();
    const double theirs = torch ? torch_images_per_second(batch, threads, reps) : -1;
    fmt::print("{:<12} {:>10.2f} images/s\n", "vediff", ours);
    if (theirs > 0) fmt::print("{:<12} {:>10.2f} images/s\n{:<12} {:>10.2f}x\n", "torch", theirs, "ratio", ours / theirs);
    else fmt::print("{:<12} {:>10}\n", "torch", "n/a");
    fmt::print("load average after: {}\n", bench::load_average());
    return 0;
}
