// The machine's single-precision FMA peak (and, where the CPU has avx512_bf16, its bf16 dot-product
// peak: vdpbf16ps chains the same way), measured: every thread runs a loop of independent
// fused multiply-adds on registers only (no memory traffic), with 512-bit (AVX-512) and with
// 256-bit (AVX2) vectors. The hosts these sessions run on differ (Zen 5 executes a 512-bit FMA
// per pipe per cycle, Zen 4 splits it in two 256-bit halves), so the GEMM and model benchmarks
// state their GFLOP/s against this number, measured in the same invocation.
//   bench_peak [--threads N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <immintrin.h>
#include <omp.h>

namespace {

/// GFLOP/s of one thread's loop of 24 independent FMA chains (2 flops per lane per FMA).
template <class Vector, class Fma, class Set>
double fma_loop(Fma fma, Set set, int lanes, double seconds_wanted) {
    Vector acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = set(0.001f * float(i));
    Vector a = set(0.999f), b = set(1e-4f);
    const long iterations = 20'000'000;
    const auto start = std::chrono::steady_clock::now();
    long done = 0;
    double elapsed = 0;
    while (elapsed < seconds_wanted) {
        for (long it = 0; it < iterations / 24; ++it) {
#pragma GCC unroll 24
            for (int i = 0; i < 24; ++i) acc[i] = fma(a, acc[i], b);
            asm volatile("" : "+v"(a));  // keeps the loop from being folded
        }
        done += iterations / 24;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    volatile float sink = 0;
    for (int i = 0; i < 24; ++i) sink = sink + reinterpret_cast<const float*>(&acc[i])[0];
    return 2.0 * lanes * 24.0 * double(done) / elapsed * 1e-9;
}

#if defined(__AVX512F__)
/// GFLOP/s of one thread's loop of 24 independent vdpbf16ps chains (2 flops × 32 products each).
__attribute__((target("avx512f,avx512bf16"))) double bf16_dot_loop(double seconds_wanted) {
    __m512 acc[24];
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * float(i));
    __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F7F3F7F), b = (__m512bh)_mm512_set1_epi32(0x38D138D1);
    const long iterations = 20'000'000;
    const auto start = std::chrono::steady_clock::now();
    long done = 0;
    double elapsed = 0;
    while (elapsed < seconds_wanted) {
        for (long it = 0; it < iterations / 24; ++it) {
#pragma GCC unroll 24
            for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
            asm volatile("" : "+v"(a));
        }
        done += iterations / 24;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    volatile float sink = 0;
    for (int i = 0; i < 24; ++i) sink = sink + reinterpret_cast<const float*>(&acc[i])[0];
    return 2.0 * 32 * 24.0 * double(done) / elapsed * 1e-9;
}
#endif

std::string cpu_line() {
    std::ifstream in("/proc/cpuinfo");
    std::string line, model, family, number;
    while (std::getline(in, line)) {
        const auto value = [&] { return line.substr(line.find(':') + 2); };
        if (model.empty() && line.rfind("model name", 0) == 0) model = value();
        else if (family.empty() && line.rfind("cpu family", 0) == 0) family = value();
        else if (number.empty() && line.rfind("model\t", 0) == 0) number = value();
    }
    return model + " (family " + family + ", model " + number + ")";
}

} // namespace

int main(int argc, char** argv) {
    int threads = 2;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: bench_peak [--threads N]\n");
            return 2;
        }
    }
    if (threads < 1) {
        std::fprintf(stderr, "bench_peak: --threads must be at least 1\n");
        return 2;
    }
    std::printf("== fp32 FMA peak, %d threads: %s\n", threads, cpu_line().c_str());
    double total256 = 0, total512 = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total256, total512)
    {
#if defined(__FMA__)
        total256 += fma_loop<__m256>([](__m256 a, __m256 x, __m256 b) { return _mm256_fmadd_ps(a, x, b); },
                                     [](float v) { return _mm256_set1_ps(v); }, 8, 0.5);
#endif
#pragma omp barrier
#if defined(__AVX512F__)
        total512 += fma_loop<__m512>([](__m512 a, __m512 x, __m512 b) { return _mm512_fmadd_ps(a, x, b); },
                                     [](float v) { return _mm512_set1_ps(v); }, 16, 0.5);
#endif
    }
#if defined(__FMA__)
    std::printf("AVX2 (256-bit) FMA    %8.1f GFLOP/s\n", total256);
#else
    std::printf("AVX2 (256-bit) FMA         n/a (not built with FMA)\n");
#endif
#if defined(__AVX512F__)
    std::printf("AVX-512 (512-bit) FMA %8.1f GFLOP/s\n", total512);
    // The bf16 peak: vdpbf16ps adds 32 products (16 lanes × a pair) per instruction.
    if (__builtin_cpu_supports("avx512bf16")) {
        double total_bf16 = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total_bf16)
        total_bf16 += bf16_dot_loop(0.5);
        std::printf("AVX512-BF16 vdpbf16ps %8.1f GFLOP/s (bf16 products, fp32 sums)\n", total_bf16);
    } else {
        std::printf("AVX512-BF16 vdpbf16ps      n/a (this CPU has no avx512_bf16)\n");
    }
#else
    std::printf("AVX-512 (512-bit) FMA      n/a (not built with AVX-512)\n");
#endif
    return 0;
}
