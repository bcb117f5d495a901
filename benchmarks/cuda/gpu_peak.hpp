#pragma once
// A GPU's dense (no structured sparsity) peak arithmetic rate, for bench_cuda's "fraction of
// peak": SMs × clock × dense FLOPs per clock per SM, the last by compute capability. Plain C++
// (no CUDA headers) so the arithmetic is checked at compile time by the static_asserts below.
//
// FLOPs per clock per SM (an FMA counts 2), from NVIDIA's published dense figures:
//   sm_70  FP32 128                          V100 SXM2: 80 SMs, 1530 MHz → FP32 15.7 TFLOP/s
//   sm_80  FP32 128, TF32 1024, bf16 2048    A100 SXM4: 108 SMs, 1410 MHz → FP32 19.5, TF32 156, bf16 312
//   sm_86  FP32 256                          RTX 3090: 82 SMs, 1695 MHz → FP32 35.6
//   sm_89  FP32 256                          RTX 4090: 128 SMs, 2520 MHz → FP32 82.6
//   sm_90  FP32 256, TF32 2048, bf16 4096    H100 SXM5: 132 SMs → FP32 66.9 at 1980 MHz; TF32 494.7,
//                                            bf16 989.4 at 1830 MHz (the tensor-core boost clock of
//                                            the H100 whitepaper; H100 PCIe: 114 SMs, FP32 51.2 at
//                                            1755 MHz, TF32 378, bf16 756 at 1620 MHz)
// bf16 means bf16 operands with fp32 accumulation. Left unknown on purpose:
//   - tensor rates of sm_86 / sm_89: GeForce parts run bf16 (and TF32) with fp32 accumulation at
//     half the rate of the professional parts of the same chip (RTX 3090 bf16 71 TFLOP/s, A40 150),
//     and the compute capability does not tell them apart;
//   - sm_70 has no TF32 or bf16 tensor formats;
//   - sm_100 and later: no dense per-SM figure verified here.
// For these bench_cuda says the peak is unknown and takes --peak-tflops.
//
// The clock the device reports (cudaDevAttrClockRate) is its maximum SM clock. For H100 that is
// above the clock NVIDIA's tensor figures assume (1980 against 1830 MHz on SXM5), so a peak at the
// reported clock is about 8% above the datasheet's and a fraction of it is the conservative one.
#include <string_view>

namespace vediff::bench {

enum class peak_kind { fp32_cuda_cores, tf32_tensor, bf16_tensor };

constexpr std::string_view peak_kind_name(peak_kind kind) {
    switch (kind) {
    case peak_kind::fp32_cuda_cores: return "FP32";
    case peak_kind::tf32_tensor: return "TF32";
    case peak_kind::bf16_tensor: return "bf16";
    }
    return "?";
}

/// Dense FLOPs per clock per SM of compute capability major.minor, or 0 where not known.
constexpr double dense_flops_per_clock_per_sm(int major, int minor, peak_kind kind) {
    const int sm = 10 * major + minor;
    switch (kind) {
    case peak_kind::fp32_cuda_cores:
        if (sm == 70 || sm == 80) return 128;
        if (sm == 86 || sm == 89 || sm == 90) return 256;
        return 0;
    case peak_kind::tf32_tensor:
        if (sm == 80) return 1024;
        if (sm == 90) return 2048;
        return 0;
    case peak_kind::bf16_tensor:
        if (sm == 80) return 2048;
        if (sm == 90) return 4096;
        return 0;
    }
    return 0;
}

/// Dense peak in TFLOP/s of a GPU with `sms` SMs at `clock_mhz`, or 0 where not known.
constexpr double dense_peak_tflops(int major, int minor, int sms, double clock_mhz, peak_kind kind) {
    return dense_flops_per_clock_per_sm(major, minor, kind) * sms * clock_mhz * 1e-6;
}

/// A dense peak NVIDIA publishes, with the SM count and clock it implies.
struct datasheet_figure {
    std::string_view gpu;
    int major, minor, sms;
    double clock_mhz;
    peak_kind kind;
    double tflops;
};

/// The figures the table above was derived from.
inline constexpr datasheet_figure datasheet_figures[] = {
    {"V100 SXM2", 7, 0, 80, 1530, peak_kind::fp32_cuda_cores, 15.7},
    {"A100 SXM4", 8, 0, 108, 1410, peak_kind::fp32_cuda_cores, 19.5},
    {"A100 SXM4", 8, 0, 108, 1410, peak_kind::tf32_tensor, 156},
    {"A100 SXM4", 8, 0, 108, 1410, peak_kind::bf16_tensor, 312},
    {"RTX 3090", 8, 6, 82, 1695, peak_kind::fp32_cuda_cores, 35.6},
    {"RTX 4090", 8, 9, 128, 2520, peak_kind::fp32_cuda_cores, 82.6},
    {"H100 SXM5", 9, 0, 132, 1980, peak_kind::fp32_cuda_cores, 66.9},
    {"H100 SXM5", 9, 0, 132, 1830, peak_kind::tf32_tensor, 494.7},
    {"H100 SXM5", 9, 0, 132, 1830, peak_kind::bf16_tensor, 989.4},
    {"H100 PCIe", 9, 0, 114, 1755, peak_kind::fp32_cuda_cores, 51.2},
    {"H100 PCIe", 9, 0, 114, 1620, peak_kind::tf32_tensor, 378},
    {"H100 PCIe", 9, 0, 114, 1620, peak_kind::bf16_tensor, 756},
};

/// Whether the table reproduces a datasheet figure, published to 3 or 4 significant digits
/// (0.5%: far tighter than the factor of 2 between neighbouring table entries).
constexpr bool reproduces(const datasheet_figure& f) {
    const double computed = dense_peak_tflops(f.major, f.minor, f.sms, f.clock_mhz, f.kind);
    const double difference = computed > f.tflops ? computed - f.tflops : f.tflops - computed;
    return difference <= 5e-3 * f.tflops;
}

constexpr bool reproduces_every_datasheet_figure() {
    for (const auto& f : datasheet_figures)
        if (!reproduces(f)) return false;
    return true;
}

static_assert(reproduces_every_datasheet_figure(), "gpu_peak.hpp: the table no longer reproduces NVIDIA's figures");
// H100's tensor figures need the 1830 MHz tensor clock: at its 1980 MHz maximum they are 8% higher.
static_assert(!reproduces({"H100 SXM5", 9, 0, 132, 1980, peak_kind::tf32_tensor, 494.7}));
static_assert(dense_peak_tflops(8, 6, 82, 1695, peak_kind::bf16_tensor) == 0, "sm_86 tensor rates stay unknown");
static_assert(dense_peak_tflops(10, 0, 148, 1965, peak_kind::tf32_tensor) == 0, "sm_100 stays unknown");

} // namespace vediff::bench
