// GPU benchmarks of the cuda backend (issue 9), for the machines that lend a GPU:
//   gemm     vediff's gemm_kernels<cuda>::gemm against raw cublasSgemm, square n = 1024 … 8192
//            (FP32, and TF32 with --tf32), GFLOP/s and the ratio (target ≥ 95%); with
//            --precision bf16 vediff's gemm_bf16 (float operands rounded to bf16 copies, fp32
//            sums) against cublasGemmEx on operands already in bf16
//   train    DiT-B/2 on 4×32×32 latents (ImageNet-256 f8 shape), batch 256: one flow-matching step
//            (forward, MSE, backward, AdamW): images/s and TFLOP/s of the matrix products
//   sample   the same DiT, 256 images, 50 Euler steps with classifier-free guidance (scale 4)
//   tokenizer  the LDM f8 autoencoder (ch 128, mult 1,2,4,4, 2 blocks, 4 latent channels) on
//            3×256×256, batch 16: one VE-loss step (encode, sample, decode, L1 + VE + magnitude,
//            backward, AdamW): images/s
//   bench_cuda [--mode gemm|train|sample|tokenizer|all] [--precision fp32|bf16] [--tf32] [--steps S]
//              [--peak-tflops X] [--attention auto|fused|unfused]
// --attention picks attention's path (set_cuda_attention_path): automatic by the probabilities'
// size (DiT-B/2 here: cuBLAS), the fused kernels, or cuBLAS, to compare the two.
// --precision bf16 runs the models under bf16_mixed (core/precision.hpp): products on bf16
// operands with fp32 sums, as PyTorch's autocast bf16. Each measured rate is also given as a
// fraction of the GPU's dense peak for the products' arithmetic (gpu_peak.hpp): bf16 tensor cores
// under --precision bf16, else TF32 tensor cores with --tf32, else the FP32 CUDA cores;
// --peak-tflops X replaces that peak (where gpu_peak.hpp does not know the GPU, say). Every
// measurement also prints a line `RESULT library=... bench=... precision=... key=value ...` for
// benchmarks/run_cuda.sh to tabulate.
// Without a GPU it prints that nothing was measured and exits 0, so scripts run it anywhere.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpu_peak.hpp"
#include "vediff/backend/cuda.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/optim/adamw.hpp"

using gpu = vediff::cuda_device;
using clock_type = std::chrono::steady_clock;
using vediff::bench::peak_kind;

namespace {

/// `value` with `decimals` digits after the point.
std::string fixed(double value, int decimals) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return text;
}

double seconds_since(clock_type::time_point start) {
    vediff::cuda_detail::synchronize();
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

/// The device's dense peaks (gpu_peak.hpp) and what this run's rates are compared with.
struct peak_reference {
    int major = 0, minor = 0, sms = 0;
    double clock_mhz = 0;
    double override_tflops = 0;  // --peak-tflops, 0 when not given
    bool bf16 = false;           // --precision bf16

    /// The arithmetic of this run's matrix products.
    peak_kind kind() const {
        if (bf16) return peak_kind::bf16_tensor;
        return vediff::cuda_tf32() ? peak_kind::tf32_tensor : peak_kind::fp32_cuda_cores;
    }
    /// "fp32", "tf32" or "bf16": the run's precision, as run_cuda.sh and torch_dit_cuda.py name it.
    const char* precision() const {
        if (bf16) return "bf16";
        return vediff::cuda_tf32() ? "tf32" : "fp32";
    }
    double peak_tflops(peak_kind k) const {
        return vediff::bench::dense_peak_tflops(major, minor, sms, clock_mhz, k);
    }
    /// The peak this run is measured against: --peak-tflops, else the table's; 0 when unknown.
    double tflops() const { return override_tflops > 0 ? override_tflops : peak_tflops(kind()); }

    /// "the dense TF32 peak, 535.3 TFLOP/s", or why there is none.
    std::string describe_peak() const {
        const auto name = vediff::bench::peak_kind_name(kind());
        if (tflops() <= 0)
            return "peak unknown for sm_" + std::to_string(major) + std::to_string(minor) + " (" + std::string(name) + "); pass --peak-tflops";
        return "the dense " + std::string(name) + " peak, " + fixed(tflops(), 1) + " TFLOP/s" + (override_tflops > 0 ? " (--peak-tflops)" : "");
    }
    /// "41.2% of the dense TF32 peak, 535.3 TFLOP/s", or why there is no fraction.
    std::string describe(double achieved_tflops) const {
        return tflops() > 0 ? fixed(100 * achieved_tflops / tflops(), 1) + "% of " + describe_peak() : describe_peak();
    }
    /// The percentage alone, "?" when the peak is unknown.
    std::string percent(double achieved_tflops) const { return tflops() > 0 ? fixed(100 * achieved_tflops / tflops(), 1) : "?"; }

    /// The machine-readable line; a negative rate is left out.
    void result(const char* library, const std::string& bench, double images_per_s, double achieved_tflops) const {
        std::printf("RESULT library=%s bench=%s precision=%s", library, bench.c_str(), precision());
        if (images_per_s >= 0) std::printf(" images_per_s=%.2f", images_per_s);
        if (achieved_tflops >= 0) {
            std::printf(" tflops=%.2f", achieved_tflops);
            if (tflops() > 0) std::printf(" peak_tflops=%.1f peak_fraction=%.4f", tflops(), achieved_tflops / tflops());
            else std::printf(" peak_tflops=unknown peak_fraction=unknown");
        }
        std::printf("\n");
        std::fflush(stdout);
    }
};

struct step_timing {
    double seconds_per_step = 0;
    double last_loss = 0;
    std::size_t allocations_after_first = 0;  // device allocations by the timed steps
};

/// One untimed step (it allocates the activations), then `steps` timed ones.
template <class Step>
step_timing time_steps(Step& step, int steps) {
    (void)step();
    const std::size_t allocations = vediff::memory<gpu>::allocation_count();
    const auto start = clock_type::now();
    double loss = 0;
    for (int i = 0; i < steps; ++i) loss = step();
    return {seconds_since(start) / steps, loss, vediff::memory<gpu>::allocation_count() - allocations};
}

void bench_gemm(int repetitions, const peak_reference& peak) {
    if (peak.bf16)
        std::printf("== gemm C = bf16(A)·bf16(B), fp32 sums, square, row-major: vediff's gemm_bf16 (rounds its float operands "
                    "each call) against cublasGemmEx on operands already in bf16\n");
    else
        std::printf("== sgemm C = A·B, square, row-major; %s math\n", vediff::cuda_tf32() ? "TF32" : "FP32");
    std::printf("%8s %16s %16s %8s %14s %14s\n", "n", "vediff GFLOP/s", "cuBLAS GFLOP/s", "ratio", "vediff % peak", "cuBLAS % peak");
    for (std::int64_t n : {1024, 2048, 4096, 8192}) {
        vediff::philox_generator gen{.seed = 1};
        const auto a = vediff::ops::normal<float, gpu>({n, n}, gen), b = vediff::ops::normal<float, gpu>({n, n}, gen);
        auto c = vediff::tensor<float, gpu>::zeros({n, n});
        const auto ours = [&] {
            if (peak.bf16) vediff::gemm_kernels<gpu>::gemm_bf16(n, n, n, 1.0f, a.data(), n, false, b.data(), n, false, 0.0f, c.data(), n);
            else vediff::gemm_kernels<gpu>::gemm(n, n, n, 1.0f, a.data(), n, false, b.data(), n, false, 0.0f, c.data(), n);
        };
        const float one = 1, zero = 0;
        const int ni = static_cast<int>(n);
        vediff::cuda_detail::check(cublasSetMathMode(vediff::cuda_detail::cublas(),
                                                     vediff::cuda_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                                   "cublasSetMathMode");
        // cuBLAS's bf16 operands are rounded once, outside the timing: the product alone (empty in fp32).
        const std::int64_t span16 = peak.bf16 ? n * n : 0;
        const auto a16 = vediff::cuda_detail::rounded_copy(a.data(), span16), b16 = vediff::cuda_detail::rounded_copy(b.data(), span16);
        const auto raw = [&] {  // the same product, column-major: Cᵀ = Bᵀ·Aᵀ
            if (peak.bf16)
                vediff::cuda_detail::check(cublasGemmEx(vediff::cuda_detail::cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one, b16.data(),
                                                        CUDA_R_16BF, ni, a16.data(), CUDA_R_16BF, ni, &zero, c.data(), CUDA_R_32F, ni,
                                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                           "cublasGemmEx");
            else
                vediff::cuda_detail::check(cublasSgemm(vediff::cuda_detail::cublas(), CUBLAS_OP_N, CUBLAS_OP_N, ni, ni, ni, &one, b.data(), ni,
                                                       a.data(), ni, &zero, c.data(), ni),
                                           "cublasSgemm");
        };
        const auto time = [&](auto f) {
            for (int i = 0; i < 3; ++i) f();
            const auto start = clock_type::now();
            for (int i = 0; i < repetitions; ++i) f();
            return seconds_since(start) / repetitions;
        };
        const double t_ours = time(ours), t_raw = time(raw), flops = 2.0 * double(n) * double(n) * double(n);
        const double ours_tflops = flops / t_ours * 1e-12, raw_tflops = flops / t_raw * 1e-12;
        std::printf("%8lld %16.1f %16.1f %7.2fx %14s %14s\n", static_cast<long long>(n), ours_tflops * 1e3, raw_tflops * 1e3, t_raw / t_ours,
                    peak.percent(ours_tflops).c_str(), peak.percent(raw_tflops).c_str());
        const std::string bench = "gemm_n" + std::to_string(n);
        peak.result("vediff", bench, -1, ours_tflops);
        peak.result("cublas", bench, -1, raw_tflops);
    }
    std::printf("(%% peak: a fraction of %s)\n", peak.describe_peak().c_str());
}

vediff::models::dit_config dit_b2() {
    vediff::models::dit_config c;
    c.input_size = 32;
    c.in_channels = 4;
    c.num_classes = 1000;
    return c.with_size("B", 2);
}

/// Matrix-product flops of one forward per sample (as bench_dit counts them): the linear layers
/// per token, attention's q·kᵀ and p·v (n·d multiply-adds each per token and layer), and the
/// per-sample conditioning MLPs; a training step counts 3 forwards (backward = 2 forwards).
double forward_flops_per_sample(const vediff::models::dit_config& c) {
    const double d = double(c.hidden_size), n = double(c.tokens()), p2c = double(c.patch_size * c.patch_size);
    const double per_token = c.depth * 12 * d * d + p2c * c.in_channels * d + d * p2c * c.out_channels();
    const double attention = c.depth * 2 * n * d;
    const double per_sample = c.depth * 6 * d * d + 2 * d * d + 256 * d + d * d;
    return 2 * (n * (per_token + attention) + per_sample);
}

template <class Precision>
void bench_train(int steps, const peak_reference& peak) {
    const auto cfg = dit_b2();
    const std::int64_t batch = 256;
    vediff::models::dit<float, gpu, Precision> model(cfg, 0);
    vediff::optim::adamw<float, gpu> opt(model, {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0});
    vediff::philox_generator data{.seed = 1}, gen{.seed = 2};
    const auto x1 = vediff::ops::normal<float, gpu>({batch, 4, 32, 32}, data);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch));
    for (std::int64_t i = 0; i < batch; ++i) labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 1000);
    const auto y = vediff::tensor<std::int32_t, gpu>::from_host({batch}, std::span<const std::int32_t>(labels));
    const auto step = [&] {
        opt.zero_grad();
        const auto pair = vediff::diffusion::make_training_pair(x1.view(), gen, vediff::diffusion::flow_matching_config{});
        const auto v = model.forward(pair.x_t, pair.t, y);
        // The loss is read after the step (as the peer's per-step synchronize), not between forward
        // and backward, where the read would stop the host from queueing the backward.
        const auto loss =
            vediff::diffusion::flow_matching_loss_deferred(v.view(), pair.target.view(), vediff::diffusion::flow_matching_config{});
        (void)model.backward(loss.dv);
        opt.step();
        return loss.value.get();
    };
    const auto [per_step, loss, new_allocations] = time_steps(step, steps);
    const double images_per_s = double(batch) / per_step;
    const double tflops = 3.0 * forward_flops_per_sample(cfg) * double(batch) / per_step * 1e-12;
    std::printf("== DiT-B/2 training step, batch %lld, %s: %.1f images/s, %.1f TFLOP/s (matrix products), %s; loss %.4f; "
                "device allocations after the first step: %zu\n",
                static_cast<long long>(batch), peak.precision(), images_per_s, tflops, peak.describe(tflops).c_str(), loss, new_allocations);
    peak.result("vediff", "train", images_per_s, tflops);
}

template <class Precision>
void bench_sample(const peak_reference& peak) {
    const auto cfg = dit_b2();
    const std::int64_t images = 256;
    vediff::models::dit<float, gpu, Precision> model(cfg, 0);
    model.train(false);
    vediff::philox_generator gen{.seed = 4};
    const auto x0 = vediff::ops::normal<float, gpu>({images, 4, 32, 32}, gen);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(images));
    for (std::int64_t i = 0; i < images; ++i) labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 1000);
    const auto forward = [&](const vediff::tensor_view<float, gpu>& x, const vediff::tensor_view<float, gpu>& t,
                             const vediff::tensor_view<std::int32_t, gpu>& yy) { return model.forward(x, t, yy); };
    auto v = vediff::diffusion::make_guided_velocity<float, gpu>(std::cref(forward), labels, 1000, {.scale = 4.0});
    const auto start = clock_type::now();
    const auto x = vediff::diffusion::sample(v, x0.view(), {.kind = vediff::diffusion::sampler_kind::euler, .steps = 50});
    const double s = seconds_since(start);
    // Guidance doubles the batch: 2 forwards per image and step.
    const double images_per_s = double(images) / s, tflops = 2.0 * 50 * double(images) * forward_flops_per_sample(cfg) / s * 1e-12;
    std::printf("== DiT-B/2 sampling, %lld images, 50 Euler steps, CFG 4, %s: %.1f s, %.1f images/s, %.1f TFLOP/s, %s\n",
                static_cast<long long>(images), peak.precision(), s, images_per_s, tflops, peak.describe(tflops).c_str());
    peak.result("vediff", "sample", images_per_s, tflops);
    (void)x;
}

template <class Precision>
void bench_tokenizer(int steps, const peak_reference& peak) {
    vediff::models::autoencoder_config c;  // the LDM / VA-VAE f8 tokenizer, 4 latent channels
    c.in_channels = c.out_channels = 3;
    c.ch = 128;
    c.ch_mult = {1, 2, 4, 4};
    c.num_res_blocks = 2;
    c.z_channels = c.embed_dim = 4;
    c.resolution = 256;
    c.attn_resolutions = {};
    const std::int64_t batch = 16;
    vediff::models::autoencoder_kl<float, gpu, Precision> ae(c, 0);
    vediff::optim::adamw<float, gpu> opt(ae, {.lr = 1e-4, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-8, .weight_decay = 0});
    vediff::philox_generator data{.seed = 5}, posterior{.seed = 6};
    const auto x = vediff::ops::uniform<float, gpu>({batch, 3, 256, 256}, data, -1.0f, 1.0f);
    const vediff::loss::tokenizer_loss<vediff::loss::reconstruction<vediff::loss::l1>, vediff::loss::variance_expansion,
                                       vediff::loss::magnitude_regularizer>
        loss_fn{{{}, vediff::loss::variance_expansion({.weight = 0.1, .delta = 1e-6}),
                 vediff::loss::magnitude_regularizer({.weight = 1e-6, .tau = 1.0})},
                vediff::loss::reduction::per_image_sum};
    const auto step = [&] {
        opt.zero_grad();
        auto post = vediff::models::gaussian_posterior<float, gpu>::from_moments(ae.encode(x));
        auto z = post.sample(posterior);
        auto x_hat = ae.decode(z);
        auto r = loss_fn.evaluate(vediff::loss::tokenizer_outputs<float, gpu>{x, x_hat, post.mean, post.logvar, z});
        auto dz = ae.decode_backward(r.gradients.dx_hat);
        vediff::ops::axpy(dz.view(), r.gradients.dz.view());
        post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
        (void)ae.encode_backward(post.moments_backward(r.gradients.dmean, r.gradients.dlogvar));
        opt.step();
        return r.total;
    };
    const auto [per_step, loss, new_allocations] = time_steps(step, steps);
    const auto math = [&](bool tf32) { return peak.bf16 ? "bf16" : tf32 ? "TF32" : "FP32"; };
    std::printf("== tokenizer (LDM f8, %lld parameters) training step, 3x256x256, batch %lld, %s matmul, %s convolutions: %.1f images/s, "
                "%.3f s/step, loss %.1f; device allocations after the first step: %zu\n",
                static_cast<long long>(vediff::nn::parameter_count(ae)), static_cast<long long>(batch), math(vediff::cuda_tf32()),
                math(vediff::cuda_conv_tf32()), double(batch) / per_step, per_step, loss, new_allocations);
    peak.result("vediff", "tokenizer", double(batch) / per_step, -1);  // no FLOP count for the convolutions: no fraction
}

/// --self-check: the peak table against the datasheet figures it was derived from (the same
/// check as gpu_peak.hpp's static_assert, printed); needs no GPU.
int self_check() {
    int failures = 0;
    std::printf("%-10s %6s %4s %6s %5s %16s %12s\n", "GPU", "sm", "SMs", "MHz", "kind", "datasheet TF/s", "table TF/s");
    for (const auto& f : vediff::bench::datasheet_figures) {
        const bool ok = vediff::bench::reproduces(f);
        failures += ok ? 0 : 1;
        const auto kind = vediff::bench::peak_kind_name(f.kind);
        std::printf("%-10.*s sm_%d%d %4d %6.0f %5.*s %16.1f %12.1f%s\n", int(f.gpu.size()), f.gpu.data(), f.major, f.minor, f.sms,
                    f.clock_mhz, int(kind.size()), kind.data(), f.tflops,
                    vediff::bench::dense_peak_tflops(f.major, f.minor, f.sms, f.clock_mhz, f.kind), ok ? "" : "  MISMATCH");
    }
    std::printf("bench_cuda --self-check: %s\n", failures == 0 ? "the peak table reproduces every datasheet figure" : "MISMATCH");
    return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    std::string mode = "all", precision = "fp32";
    int steps = 10;
    double peak_override = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--mode" && i + 1 < argc) mode = argv[++i];
        else if (arg == "--tf32") vediff::set_cuda_tf32(true);
        else if (arg == "--precision" && i + 1 < argc) precision = argv[++i];
        else if (arg == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
        else if (arg == "--peak-tflops" && i + 1 < argc) peak_override = std::atof(argv[++i]);
        else if (arg == "--self-check") return self_check();
        else if (arg == "--attention" && i + 1 < argc) {
            const std::string path = argv[++i];
            if (path == "auto") vediff::set_cuda_attention_path(vediff::cuda_attention_path::automatic);
            else if (path == "fused") vediff::set_cuda_attention_path(vediff::cuda_attention_path::fused);
            else if (path == "unfused") vediff::set_cuda_attention_path(vediff::cuda_attention_path::unfused);
            else {
                std::fprintf(stderr, "bench_cuda: --attention must be auto, fused or unfused, got '%s'\n", path.c_str());
                return 2;
            }
        }
        else {
            std::fprintf(stderr, "usage: bench_cuda [--mode gemm|train|sample|tokenizer|all] [--precision fp32|bf16] [--tf32] [--steps S] "
                                 "[--peak-tflops X] [--attention auto|fused|unfused] | --self-check\n");
            return 2;
        }
    }
    if (steps < 1 || !(peak_override >= 0) || !vediff::is_precision_name(precision) ||
        (mode != "gemm" && mode != "train" && mode != "sample" && mode != "tokenizer" && mode != "all")) {
        std::fprintf(stderr, "bench_cuda: --mode must be gemm, train, sample, tokenizer or all, --precision fp32 or bf16, --steps "
                             "positive, --peak-tflops not negative\n");
        return 2;
    }
    if (!vediff::cuda_available()) {
        std::printf("bench_cuda: no CUDA device: nothing measured\n");
        return 0;
    }
    cudaDeviceProp prop{};
    vediff::cuda_detail::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    peak_reference peak;
    int clock_khz = 0;  // cudaDeviceProp::clockRate is gone in CUDA 13: the attribute is the way
    vediff::cuda_detail::check(cudaDeviceGetAttribute(&peak.major, cudaDevAttrComputeCapabilityMajor, 0), "cudaDeviceGetAttribute");
    vediff::cuda_detail::check(cudaDeviceGetAttribute(&peak.minor, cudaDevAttrComputeCapabilityMinor, 0), "cudaDeviceGetAttribute");
    vediff::cuda_detail::check(cudaDeviceGetAttribute(&peak.sms, cudaDevAttrMultiProcessorCount, 0), "cudaDeviceGetAttribute");
    vediff::cuda_detail::check(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0), "cudaDeviceGetAttribute");
    peak.clock_mhz = clock_khz / 1000.0;
    peak.override_tflops = peak_override;
    peak.bf16 = precision == "bf16";
    const auto known = [&](peak_kind k) { return peak.peak_tflops(k) > 0 ? fixed(peak.peak_tflops(k), 1) : std::string("unknown"); };
    std::printf("== device: %s, %.1f GiB, sm_%d%d, %d SMs, max SM clock %.0f MHz; dense peaks at that clock, TFLOP/s: FP32 %s, "
                "TF32 %s, bf16 %s (gpu_peak.hpp)\n",
                prop.name, double(prop.totalGlobalMem) / double(1 << 30), peak.major, peak.minor, peak.sms, peak.clock_mhz,
                known(peak_kind::fp32_cuda_cores).c_str(), known(peak_kind::tf32_tensor).c_str(), known(peak_kind::bf16_tensor).c_str());
    vediff::with_precision(precision, [&]<class Precision>() {
        if (mode == "gemm" || mode == "all") bench_gemm(10, peak);
        if (mode == "train" || mode == "all") bench_train<Precision>(steps, peak);
        if (mode == "sample" || mode == "all") bench_sample<Precision>(peak);
        if (mode == "tokenizer" || mode == "all") bench_tokenizer<Precision>(steps, peak);
    });
    return 0;
}
