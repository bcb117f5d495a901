// Square single-precision GEMM throughput (GFLOP/s = 2n³ / median time) through vediff's gemm
// and OpenBLAS's cblas_sgemm, on the same thread count in the same process.
//   bench_gemm [--threads N] [--sizes 256,512,...]
// Each library's worker threads spin for a while after a call (OpenMP's and OpenBLAS's own
// pools); on a 2-core machine a spinning pool steals a core from the other library. The
// benchmark therefore sleeps between switching libraries, so each one is measured alone.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef VEDIFF_BENCH_OPENBLAS
#include <cblas.h>
extern "C" char* openblas_get_corename(void);
#endif

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/ops/gemm.hpp"

using namespace vediff;

namespace {

template <class F>
double median_seconds(F&& f, int reps, int warmup = 2) {
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

void let_idle_threads_sleep() { std::this_thread::sleep_for(std::chrono::milliseconds(400)); }

std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string a, b, c;
    f >> a >> b >> c;
    return a + " " + b + " " + c;
}

} // namespace

int main(int argc, char** argv) {
    int threads = 2;
    std::vector<std::int64_t> sizes{256, 512, 1024, 2048};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) {
            threads = std::atoi(argv[++i]);
        } else if (a == "--sizes" && i + 1 < argc) {
            sizes.clear();
            std::stringstream ss(argv[++i]);
            for (std::string s; std::getline(ss, s, ',');) sizes.push_back(std::atoll(s.c_str()));
        } else {
            std::fprintf(stderr, "usage: bench_gemm [--threads N] [--sizes 256,512,...]\n");
            return 2;
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
#ifdef VEDIFF_BENCH_OPENBLAS
    openblas_set_num_threads(threads);
    const std::string peer = fmt::format("OpenBLAS ({} kernels)", openblas_get_corename());
#else
    const std::string peer = "OpenBLAS (not linked)";
#endif
    fmt::print("sgemm C = A·B, square, row-major, {} threads; load average {}\n", threads, load_average());
    fmt::print("{:>6} {:>16} {:>16} {:>8} {:>12}\n", "n", "vediff GFLOP/s", "OpenBLAS GFLOP/s", "ratio", "max |diff|");
    for (const std::int64_t n : sizes) {
        auto a = tensor<float>::empty({n, n}), b = tensor<float>::empty({n, n});
        auto c = tensor<float>::zeros({n, n}), ref = tensor<float>::zeros({n, n});
        for (std::int64_t i = 0; i < n * n; ++i) {
            a.data()[i] = philox_uniform<float>(1, 0, 0, std::uint64_t(i)) - 0.5f;
            b.data()[i] = philox_uniform<float>(1, 1, 0, std::uint64_t(i)) - 0.5f;
        }
        const double flops = 2.0 * double(n) * double(n) * double(n);
        // About 2·10¹¹ flops per measurement, 5 to 200 repetitions.
        const int reps = int(std::clamp(2e11 / flops, 5.0, 200.0));

        let_idle_threads_sleep();
        const double ours = flops / median_seconds([&] { ops::gemm(c.view(), a.view(), b.view()); }, reps) / 1e9;
#ifdef VEDIFF_BENCH_OPENBLAS
        let_idle_threads_sleep();
        const double theirs = flops / median_seconds([&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(n), int(n), 1.0f, a.data(), int(n), b.data(),
                        int(n), 0.0f, ref.data(), int(n));
        }, reps) / 1e9;
        double diff = 0;
        for (std::int64_t i = 0; i < n * n; ++i) diff = std::max(diff, double(std::abs(c.data()[i] - ref.data()[i])));
        fmt::print("{:>6} {:>16.1f} {:>16.1f} {:>7.2f}x {:>12.2e}\n", n, ours, theirs, ours / theirs, diff);
#else
        fmt::print("{:>6} {:>16.1f} {:>16} {:>8} {:>12}\n", n, ours, "n/a", "n/a", "n/a");
#endif
    }
    fmt::print("peer: {}\n", peer);
    return 0;
}
