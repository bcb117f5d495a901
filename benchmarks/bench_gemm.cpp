// Square GEMM throughput (GFLOP/s = 2n³ / median time) on the same thread count in the same
// process: fp32 through vediff's gemm and OpenBLAS's cblas_sgemm; then bf16 operands with fp32
// accumulation through vediff's bf16_mixed gemm (fp32 operands in memory, rounded to bf16 as they
// are packed: the conversion is inside the timing) and OpenBLAS's cblas_sbgemm (operands given
// already in bf16: its conversion is outside), each against vediff's own fp32 rate.
// OpenBLAS picks its kernels by OPENBLAS_CORETYPE: its vdpbf16ps sbgemm is the CooperLake one
// (benchmarks/run.sh sets it where the CPU has avx512_bf16; the line "peer:" says which ran).
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
#include <dlfcn.h>
extern "C" char* openblas_get_corename(void);
// cblas_sbgemm is declared by every OpenBLAS cblas.h but exists only in builds made with
// BUILD_BFLOAT16=1 (Debian 12's 0.3.21 is not): looked up at run time, reported absent otherwise.
using sbgemm_function = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint, float, const std::uint16_t*,
                                 blasint, const std::uint16_t*, blasint, float, float*, blasint);
sbgemm_function find_sbgemm() { return reinterpret_cast<sbgemm_function>(dlsym(RTLD_DEFAULT, "cblas_sbgemm")); }
#endif

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/core/precision.hpp"
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
    std::vector<double> fp32_rates;
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
        fp32_rates.push_back(ours);
    }
    fmt::print("\nbf16 operands, fp32 accumulation, C = A·B, square, row-major, {} threads; vediff kernel: {}\n", threads,
               cpu_bf16_kernel_name());
    fmt::print("{:>6} {:>16} {:>16} {:>10} {:>14} {:>12}\n", "n", "vediff GFLOP/s", "sbgemm GFLOP/s", "vs sbgemm",
               "vs own fp32", "max rel diff");
    for (std::size_t si = 0; si < sizes.size(); ++si) {
        const std::int64_t n = sizes[si];
        auto a = tensor<float>::empty({n, n}), b = tensor<float>::empty({n, n});
        auto c = tensor<float>::zeros({n, n}), ref = tensor<float>::zeros({n, n});
        for (std::int64_t i = 0; i < n * n; ++i) {
            a.data()[i] = philox_uniform<float>(1, 0, 0, std::uint64_t(i)) - 0.5f;
            b.data()[i] = philox_uniform<float>(1, 1, 0, std::uint64_t(i)) - 0.5f;
        }
        const double flops = 2.0 * double(n) * double(n) * double(n);
        const int reps = int(std::clamp(4e11 / flops, 5.0, 400.0));
        let_idle_threads_sleep();
        const double ours = flops / median_seconds([&] { ops::gemm<bf16_mixed>(c.view(), a.view(), b.view()); }, reps) / 1e9;
#ifdef VEDIFF_BENCH_OPENBLAS
        const sbgemm_function sbgemm = find_sbgemm();
        if (!sbgemm) {
            fmt::print("{:>6} {:>16.1f} {:>16} {:>10} {:>13.2f}x {:>12}\n", n, ours, "absent", "n/a", ours / fp32_rates[si], "n/a");
            continue;
        }
        std::vector<vediff::bfloat16> a16(static_cast<std::size_t>(n * n)), b16(static_cast<std::size_t>(n * n));
        round_to_bfloat16(a16.data(), a.data(), n * n);
        round_to_bfloat16(b16.data(), b.data(), n * n);
        let_idle_threads_sleep();
        const double theirs = flops / median_seconds([&] {
            sbgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(n), blasint(n), blasint(n), 1.0f,
                   reinterpret_cast<const std::uint16_t*>(a16.data()), blasint(n), reinterpret_cast<const std::uint16_t*>(b16.data()),
                   blasint(n), 0.0f, ref.data(), blasint(n));
        }, reps) / 1e9;
        double diff = 0, scale = 0;
        for (std::int64_t i = 0; i < n * n; ++i) {
            diff = std::max(diff, double(std::abs(c.data()[i] - ref.data()[i])));
            scale = std::max(scale, double(std::abs(ref.data()[i])));
        }
        fmt::print("{:>6} {:>16.1f} {:>16.1f} {:>9.2f}x {:>13.2f}x {:>12.2e}\n", n, ours, theirs, ours / theirs, ours / fp32_rates[si],
                   diff / scale);
#else
        fmt::print("{:>6} {:>16.1f} {:>16} {:>10} {:>13.2f}x {:>12}\n", n, ours, "n/a", "n/a", ours / fp32_rates[si], "n/a");
#endif
    }
#ifdef VEDIFF_BENCH_OPENBLAS
    fmt::print("peer: {}; cblas_sbgemm {}\n", peer, find_sbgemm() ? "present" : "absent (this OpenBLAS was built without BUILD_BFLOAT16)");
#else
    fmt::print("peer: {}\n", peer);
#endif
    return 0;
}
