#pragma once
// The cpu-against-another-device parity cases (support/device_parity.hpp), included by
// cuda/test_cuda_parity.cu (other = cuda) and test_device_parity.cpp (other = cpu). The including
// file defines `other` and the tolerances loss_tolerance, gradient_tolerance, sample_tolerance.
#include <cmath>
#include <cstdint>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "support/device_parity.hpp"

namespace vediff::testing::parity {

/// One flow-matching step of the same DiT-shaped model on both devices: loss and gradients.
template <template <class, class> class Model>
void check_dit_step(std::uint64_t data_seed, const std::vector<std::int32_t>& labels) {
    Model<float, cpu> on_cpu(small_dit(), 0);
    Model<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = data_seed};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const double loss_cpu = dit_step<cpu>(on_cpu, x1, labels);
    const double loss_other = dit_step<other>(on_other, x1, labels);
    BOOST_TEST(std::abs(loss_cpu - loss_other) <= loss_tolerance * std::abs(loss_cpu), loss_cpu << " vs " << loss_other);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

} // namespace vediff::testing::parity

BOOST_AUTO_TEST_CASE(tokenizer_training_step_matches_the_cpu) {
    using namespace vediff;
    using namespace vediff::testing::parity;
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

template <class T, class D>
using dit_of = vediff::models::dit<T, D>;
template <class T, class D>
using lightning_dit_of = vediff::models::lightning_dit<T, D>;

BOOST_AUTO_TEST_CASE(dit_training_step_matches_the_cpu) {
    vediff::testing::parity::check_dit_step<dit_of>(4, {0, 1, 2, 3, 4, 5, 6, 7});
}

BOOST_AUTO_TEST_CASE(lightningdit_training_step_matches_the_cpu) {
    vediff::testing::parity::check_dit_step<lightning_dit_of>(6, {9, 8, 7, 6, 5, 4, 3, 2});
}

BOOST_AUTO_TEST_CASE(same_seed_sampling_gives_the_same_images) {
    using namespace vediff;
    using namespace vediff::testing::parity;
    models::dit<float, cpu> on_cpu(small_dit(), 0);
    models::dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    for (const auto kind : {diffusion::sampler_kind::euler, diffusion::sampler_kind::heun, diffusion::sampler_kind::euler_maruyama}) {
        const auto a = guided_samples<cpu>(on_cpu, kind);
        const auto b = guided_samples<other>(on_other, kind);
        BOOST_TEST(relative_difference(a, b) <= sample_tolerance, "sampler " << int(kind));
    }
}

// The tokenizer recipe's networks: the PatchGAN discriminator in training mode (BatchNorm with
// batch statistics, then its running statistics) and in evaluation mode, and LPIPS (a narrow random
// VGG) with its gradient to the reconstruction: outputs, input gradients and weight gradients.
BOOST_AUTO_TEST_CASE(discriminator_and_lpips_match_the_cpu) {
    using namespace vediff;
    using namespace vediff::testing::parity;
    models::patchgan_discriminator<float, cpu> d_cpu({.in_channels = 3, .ndf = 8}, 0);
    models::patchgan_discriminator<float, other> d_other({.in_channels = 3, .ndf = 8}, 0);
    randomize_and_copy(d_cpu, d_other);  // trainable weights only: BatchNorm's buffers start at mean 0, var 1
    philox_generator data{.seed = 8};
    const auto x = ops::uniform<float, cpu>({2, 3, 40, 40}, data, -1.0f, 1.0f);
    const auto x1 = ops::uniform<float, cpu>({2, 3, 40, 40}, data, -1.0f, 1.0f);
    const view_on<float, other> x_other(x.view()), x1_other(x1.view());
    for (const bool training : {true, false}) {
        BOOST_TEST_CONTEXT((training ? "training" : "evaluation")) {
            d_cpu.train(training);
            d_other.train(training);
            nn::zero_grad(d_cpu);
            nn::zero_grad(d_other);
            const auto logits = d_cpu.forward(x.view());
            const auto logits_other = d_other.forward(x_other.view());
            BOOST_TEST(relative_difference(logits.to_vector(), logits_other.to_vector()) <= loss_tolerance);
            const auto dx = d_cpu.backward(logits.view());
            const auto dx_other = d_other.backward(logits_other.view());
            BOOST_TEST(relative_difference(dx.to_vector(), dx_other.to_vector()) <= gradient_tolerance);
            BOOST_TEST(largest_gradient_difference(d_cpu, d_other) <= gradient_tolerance);
        }
    }
    for (std::size_t k : {3, 6, 9}) {
        const auto name = fmt::format("main.{}.running_var", k);
        const auto a = nn::named_parameters(d_cpu);
        const auto b = nn::named_parameters(d_other);
        for (std::size_t i = 0; i < a.size(); ++i)
            if (a[i].first == name)
                BOOST_TEST(relative_difference(a[i].second->value.to_vector(), b[i].second->value.to_vector()) <= loss_tolerance, name);
    }

    models::lpips<float, cpu> l_cpu(3, 16);
    models::lpips<float, other> l_other(3, 16);
    auto from = nn::named_parameters(l_cpu);
    auto to_params = nn::named_parameters(l_other);
    for (std::size_t i = 0; i < from.size(); ++i) to_params[i].second->value = to<other>(from[i].second->value.view());
    const auto distance = l_cpu.forward(x.view(), x1.view());
    const auto distance_other = l_other.forward(x_other.view(), x1_other.view());
    BOOST_TEST(relative_difference(distance.to_vector(), distance_other.to_vector()) <= loss_tolerance);
    const auto ones = tensor<float, cpu>::full({2}, 1.0f);
    const auto ones_other = tensor<float, other>::full({2}, 1.0f);
    const auto dl = l_cpu.backward(ones.view());
    const auto dl_other = l_other.backward(ones_other.view());
    BOOST_TEST(relative_difference(dl.to_vector(), dl_other.to_vector()) <= gradient_tolerance);
}
