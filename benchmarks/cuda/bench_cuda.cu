// GPU benchmarks of the cuda backend (issue 9), for the machines that lend a GPU:
//   gemm     vediff's gemm_kernels<cuda>::gemm against raw cublasSgemm, square n = 1024 … 8192
//            (FP32, and TF32 with --tf32), GFLOP/s and the ratio (target ≥ 95%)
//   train    DiT-B/2 on 4×32×32 latents (ImageNet-256 f8 shape), batch 256: one flow-matching step
//            (forward, MSE, backward, AdamW): images/s and TFLOP/s of the matrix products
//   sample   the same DiT, 256 images, 50 Euler steps with classifier-free guidance (scale 4)
//   tokenizer  the LDM f8 autoencoder (ch 128, mult 1,2,4,4, 2 blocks, 4 latent channels) on
//            3×256×256, batch 16: one VE-loss step (encode, sample, decode, L1 + VE + magnitude,
//            backward, AdamW): images/s
//   bench_cuda [--mode gemm|train|sample|tokenizer|all] [--tf32] [--steps S]
// Without a GPU it prints that nothing was measured and exits 0, so scripts run it anywhere.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vediff/backend/cuda.hpp"
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

namespace {

double seconds_since(clock_type::time_point start) {
    vediff::cuda_detail::synchronize();
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

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

void bench_gemm(int repetitions) {
    std::printf("== sgemm C = A·B, square, row-major; %s math\n", vediff::cuda_tf32() ? "TF32" : "FP32");
    std::printf("%8s %16s %16s %8s\n", "n", "vediff GFLOP/s", "cuBLAS GFLOP/s", "ratio");
    for (std::int64_t n : {1024, 2048, 4096, 8192}) {
        vediff::philox_generator gen{.seed = 1};
        const auto a = vediff::ops::normal<float, gpu>({n, n}, gen), b = vediff::ops::normal<float, gpu>({n, n}, gen);
        auto c = vediff::tensor<float, gpu>::zeros({n, n});
        const auto ours = [&] { vediff::gemm_kernels<gpu>::gemm(n, n, n, 1.0f, a.data(), n, false, b.data(), n, false, 0.0f, c.data(), n); };
        const float one = 1, zero = 0;
        const int ni = static_cast<int>(n);
        vediff::cuda_detail::check(cublasSetMathMode(vediff::cuda_detail::cublas(),
                                                     vediff::cuda_tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
                                   "cublasSetMathMode");
        const auto raw = [&] {  // the same product, column-major: Cᵀ = Bᵀ·Aᵀ
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
        std::printf("%8lld %16.1f %16.1f %7.2fx\n", static_cast<long long>(n), flops / t_ours * 1e-9, flops / t_raw * 1e-9, t_raw / t_ours);
    }
}

vediff::models::dit_config dit_b2() {
    vediff::models::dit_config c;
    c.input_size = 32;
    c.in_channels = 4;
    c.num_classes = 1000;
    return c.with_size("B", 2);
}

/// Matrix-product flops of one forward per sample (as bench_dit counts them).
double forward_flops_per_sample(const vediff::models::dit_config& c) {
    const double d = double(c.hidden_size), n = double(c.tokens()), p2c = double(c.patch_size * c.patch_size);
    const double per_token = c.depth * 12 * d * d + p2c * c.in_channels * d + d * p2c * c.out_channels();
    const double attention = c.depth * 2 * n * d;
    const double per_sample = c.depth * 6 * d * d + 2 * d * d + 256 * d + d * d;
    return 2 * (n * (per_token + attention) + per_sample);
}

void bench_train(int steps) {
    const auto cfg = dit_b2();
    const std::int64_t batch = 256;
    vediff::models::dit<float, gpu> model(cfg, 0);
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
        const auto loss = vediff::diffusion::flow_matching_loss(v.view(), pair.target.view(), vediff::diffusion::flow_matching_config{});
        (void)model.backward(loss.dv);
        opt.step();
        return loss.value;
    };
    const auto [per_step, loss, new_allocations] = time_steps(step, steps);
    std::printf("== DiT-B/2 training step, batch %lld, %s: %.1f images/s, %.1f TFLOP/s (matrix products), loss %.4f; "
                "device allocations after the first step: %zu\n",
                static_cast<long long>(batch), vediff::cuda_tf32() ? "TF32" : "FP32", double(batch) / per_step,
                3.0 * forward_flops_per_sample(cfg) * double(batch) / per_step * 1e-12, loss,
                new_allocations);
}

void bench_sample() {
    const auto cfg = dit_b2();
    const std::int64_t images = 256;
    vediff::models::dit<float, gpu> model(cfg, 0);
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
    std::printf("== DiT-B/2 sampling, %lld images, 50 Euler steps, CFG 4: %.1f s, %.1f images/s, %.1f TFLOP/s\n",
                static_cast<long long>(images), s, double(images) / s, 2.0 * 50 * double(images) * forward_flops_per_sample(cfg) / s * 1e-12);
    (void)x;
}

void bench_tokenizer(int steps) {
    vediff::models::autoencoder_config c;  // the LDM / VA-VAE f8 tokenizer, 4 latent channels
    c.in_channels = c.out_channels = 3;
    c.ch = 128;
    c.ch_mult = {1, 2, 4, 4};
    c.num_res_blocks = 2;
    c.z_channels = c.embed_dim = 4;
    c.resolution = 256;
    c.attn_resolutions = {};
    const std::int64_t batch = 16;
    vediff::models::autoencoder_kl<float, gpu> ae(c, 0);
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
    std::printf("== tokenizer (LDM f8, %lld parameters) training step, 3x256x256, batch %lld, %s matmul, %s convolutions: %.1f images/s, "
                "%.3f s/step, loss %.1f; device allocations after the first step: %zu\n",
                static_cast<long long>(vediff::nn::parameter_count(ae)), static_cast<long long>(batch),
                vediff::cuda_tf32() ? "TF32" : "FP32", vediff::cuda_conv_tf32() ? "TF32" : "FP32", double(batch) / per_step, per_step, loss,
                new_allocations);
}

} // namespace

int main(int argc, char** argv) {
    std::string mode = "all";
    int steps = 10;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--mode" && i + 1 < argc) mode = argv[++i];
        else if (arg == "--tf32") vediff::set_cuda_tf32(true);
        else if (arg == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: bench_cuda [--mode gemm|train|sample|tokenizer|all] [--tf32] [--steps S]\n");
            return 2;
        }
    }
    if (steps < 1 || (mode != "gemm" && mode != "train" && mode != "sample" && mode != "tokenizer" && mode != "all")) {
        std::fprintf(stderr, "bench_cuda: --mode must be gemm, train, sample, tokenizer or all and --steps positive\n");
        return 2;
    }
    if (!vediff::cuda_available()) {
        std::printf("bench_cuda: no CUDA device: nothing measured\n");
        return 0;
    }
    cudaDeviceProp prop{};
    vediff::cuda_detail::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("== device: %s, %.1f GiB\n", prop.name, double(prop.totalGlobalMem) / double(1 << 30));
    if (mode == "gemm" || mode == "all") bench_gemm(10);
    if (mode == "train" || mode == "all") bench_train(steps);
    if (mode == "sample" || mode == "all") bench_sample();
    if (mode == "tokenizer" || mode == "all") bench_tokenizer(steps);
    return 0;
}
