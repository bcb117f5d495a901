// The device-parity harness of cuda/test_cuda_parity.cu, run cpu against cpu on every machine:
// the same steps must agree exactly, and the harness must notice one perturbed weight, so that the
// GPU test's checks are known to run and to be able to fail.
#define BOOST_TEST_MODULE device_parity
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "support/device_parity.hpp"

using namespace vediff;
using namespace vediff::testing::parity;
using other = vediff::cpu;

namespace {
// The same device and code: bit-identical results.
constexpr double loss_tolerance = 0, gradient_tolerance = 0, sample_tolerance = 0;
} // namespace

BOOST_AUTO_TEST_CASE(tokenizer_training_step_matches_the_cpu) {
    models::autoencoder_kl<float, cpu> on_cpu(small_autoencoder(), 0);
    models::autoencoder_kl<float, other> on_other(small_autoencoder(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 3};
    const auto x = ops::uniform<float, cpu>({2, 1, 32, 32}, data, -1.0f, 1.0f);
    const auto a = tokenizer_step(on_cpu, x);
    const auto b = tokenizer_step(on_other, x);
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        BOOST_TEST(std::abs(a[i].second - b[i].second) <= loss_tolerance * std::abs(a[i].second),
                   a[i].first << ": " << a[i].second << " vs " << b[i].second);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(dit_training_step_matches_the_cpu) {
    models::dit<float, cpu> on_cpu(small_dit(), 0);
    models::dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 4};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
    const double loss_cpu = dit_step<cpu>(on_cpu, x1, labels);
    const double loss_other = dit_step<other>(on_other, x1, labels);
    BOOST_TEST(std::abs(loss_cpu - loss_other) <= loss_tolerance * std::abs(loss_cpu), loss_cpu << " vs " << loss_other);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(lightningdit_training_step_matches_the_cpu) {
    models::lightning_dit<float, cpu> on_cpu(small_dit(), 0);
    models::lightning_dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 6};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {9, 8, 7, 6, 5, 4, 3, 2};
    const double loss_cpu = dit_step<cpu>(on_cpu, x1, labels);
    const double loss_other = dit_step<other>(on_other, x1, labels);
    BOOST_TEST(std::abs(loss_cpu - loss_other) <= loss_tolerance * std::abs(loss_cpu), loss_cpu << " vs " << loss_other);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(same_seed_sampling_gives_the_same_images) {
    models::dit<float, cpu> on_cpu(small_dit(), 0);
    models::dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    for (const auto kind : {diffusion::sampler_kind::euler, diffusion::sampler_kind::heun, diffusion::sampler_kind::euler_maruyama}) {
        const auto a = guided_samples<cpu>(on_cpu, kind);
        const auto b = guided_samples<other>(on_other, kind);
        BOOST_TEST(relative_difference(a, b) <= sample_tolerance, "sampler " << int(kind));
    }
}

BOOST_AUTO_TEST_CASE(a_perturbed_weight_is_noticed) {
    models::dit<float, cpu> a(small_dit(), 0), b(small_dit(), 0);
    randomize_and_copy(a, b);
    // One weight matrix of one block 1% off: what a kernel with a wrong scale or a lost term gives.
    auto params = nn::named_parameters(b);
    auto& off = params[params.size() / 2].second->value;
    for (auto& w : off.span()) w *= 1.01f;
    philox_generator data{.seed = 4};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
    const double loss_a = dit_step<cpu>(a, x1, labels), loss_b = dit_step<cpu>(b, x1, labels);
    BOOST_TEST(loss_a != loss_b);
    BOOST_TEST(largest_gradient_difference(a, b) > 1e-4);  // the tolerances of the GPU test
    BOOST_TEST(relative_difference(guided_samples<cpu>(a, diffusion::sampler_kind::euler),
                                   guided_samples<cpu>(b, diffusion::sampler_kind::euler)) > 1e-4);
}
