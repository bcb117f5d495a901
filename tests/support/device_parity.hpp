#pragma once
// Whole-model parity between the cpu and another device: the same weights (random, not the models'
// own initialization: a DiT's zero-initialized output layer would leave every other gradient zero,
// and zeros agree trivially), data and seeds (Philox draws are equal across devices), then one
// tokenizer training step, one DiT training step, and guided sampling on each. Used by
// cuda/test_cuda_parity.cu (cpu against cuda) and by test_device_parity.cpp, which runs the same
// code cpu against cpu so that the harness itself runs, and can fail, on every machine.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/loss/kl.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/dit.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/lpips.hpp"
#include "vediff/models/patchgan_discriminator.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::testing::parity {

/// ‖a − b‖ / ‖a‖ (0 when both are zero).
double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
        norm += double(a[i]) * double(a[i]);
    }
    return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

/// Every parameter of the cpu model drawn from N(0, 0.05²) by its own stream, then copied by name
/// into the other model, so both start from the same non-trivial weights.
template <class CpuModel, class OtherModel>
void randomize_and_copy(CpuModel& on_cpu, OtherModel& on_other) {
    auto from = nn::named_parameters(on_cpu);
    auto to_params = nn::named_parameters(on_other);
    BOOST_REQUIRE_EQUAL(from.size(), to_params.size());
    for (std::size_t i = 0; i < from.size(); ++i) {
        BOOST_REQUIRE_EQUAL(from[i].first, to_params[i].first);
        if (from[i].second->trainable) {
            philox_generator g{.seed = 77, .stream = i};
            ops::fill_normal(from[i].second->value.view(), g, 0.0f, 0.05f);
        }
        to_params[i].second->value = to<typename OtherModel::device_type>(from[i].second->value.view());
    }
}

/// The largest relative difference between the two models' gradients, over trainable parameters
/// (each compared by name); also requires some gradient to be non-zero, so that the comparison
/// is not of zeros.
template <class CpuModel, class OtherModel>
double largest_gradient_difference(CpuModel& on_cpu, OtherModel& on_other) {
    auto a = nn::named_parameters(on_cpu);
    auto b = nn::named_parameters(on_other);
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    std::size_t nonzero = 0;
    double largest = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!a[i].second->trainable) continue;
        const auto ga = a[i].second->grad.to_vector(), gb = b[i].second->grad.to_vector();
        const double r = relative_difference(ga, gb);
        if (r > largest) BOOST_TEST_MESSAGE(a[i].first << ": gradient differs by " << r << " relative");
        largest = std::max(largest, r);
        for (float v : ga) nonzero += v != 0.0f;
    }
    BOOST_TEST(nonzero > 0);
    return largest;
}

models::dit_config small_dit() {
    models::dit_config c;
    c.input_size = 8;
    c.in_channels = 4;
    c.num_classes = 10;
    c.hidden_size = 64;
    c.depth = 2;
    c.num_heads = 4;
    c.patch_size = 2;
    c.class_dropout_prob = 0.25;  // label dropout is part of the step (Philox, host-side draws)
    return c;
}

models::autoencoder_config small_autoencoder() {
    models::autoencoder_config c;
    c.ch = 32;
    c.ch_mult = {1, 2};
    c.norm_groups = 8;
    c.attn_resolutions = {16};
    return c;
}

/// One training step of the tokenizer with the VE loss (and KL, so every term runs): the loss
/// breakdown, and the gradients left in the model.
template <device D>
loss::loss_breakdown tokenizer_step(models::autoencoder_kl<float, D>& ae, const tensor<float>& x_host) {
    const view_on<float, D> x(x_host.view());
    nn::zero_grad(ae);
    philox_generator posterior{.seed = 5, .stream = 1};
    auto post = models::gaussian_posterior<float, D>::from_moments(ae.encode(x.view()));
    auto z = post.sample(posterior);
    auto x_hat = ae.decode(z);
    const loss::tokenizer_loss<loss::reconstruction<loss::l1>, loss::variance_expansion, loss::magnitude_regularizer, loss::kl_divergence>
        fn{{{}, loss::variance_expansion({.weight = 0.1, .delta = 1e-6}), loss::magnitude_regularizer({.weight = 1e-6, .tau = 1.0}),
            loss::kl_divergence({.weight = 1e-6})},
           loss::reduction::per_image_sum};
    auto r = fn.evaluate(loss::tokenizer_outputs<float, D>{x.view(), x_hat, post.mean, post.logvar, z});
    BOOST_REQUIRE(r.finite());
    auto dz = ae.decode_backward(r.gradients.dx_hat);
    ops::axpy(dz.view(), r.gradients.dz.view());
    post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
    (void)ae.encode_backward(post.moments_backward(r.gradients.dmean, r.gradients.dlogvar));
    return r.breakdown;
}

/// One flow-matching training step of the DiT; returns the loss, leaves the gradients.
template <device D, class Model>
double dit_step(Model& model, const tensor<float>& x1_host, const std::vector<std::int32_t>& labels_host) {
    const view_on<float, D> x1(x1_host.view());
    nn::zero_grad(model);
    philox_generator noise{.seed = 9, .stream = 1};
    const diffusion::flow_matching_config flow{.times = diffusion::time_sampling::logit_normal(), .time_shift = 1.0, .cosine_term = true};
    const auto pair = diffusion::make_training_pair(x1.view(), noise, flow);
    const auto labels = tensor<std::int32_t, D>::from_host({std::int64_t(labels_host.size())}, std::span<const std::int32_t>(labels_host));
    const auto v = model.forward(pair.x_t, pair.t, labels);
    const auto loss = diffusion::flow_matching_loss(v.view(), pair.target.view(), flow);
    (void)model.backward(loss.dv);
    return loss.value;
}

/// Guided sampling of the model on device D from the same noise (CFG 4, `kind`, 6 steps): the
/// displacement of every sample from its noise.
template <device D, class Model>
std::vector<float> guided_samples(Model& model, diffusion::sampler_kind kind) {
    model.train(false);
    philox_generator noise{.seed = 21}, sde{.seed = 22};
    auto x0 = tensor<float, D>({6, 4, 8, 8});
    ops::fill_normal(x0.view(), noise);
    const auto velocity_model = [&](const tensor_view<float, D>& x, const tensor_view<float, D>& t, const tensor_view<std::int32_t, D>& y) {
        return model.forward(x, t, y);
    };
    auto v = diffusion::make_guided_velocity<float, D>(std::cref(velocity_model), std::vector<std::int32_t>{0, 1, 2, 3, 4, 5}, 10,
                                                       diffusion::guidance_config{.scale = 4.0});
    // The displacement x1 − x0, the part the model contributes (x0 itself is equal on both devices).
    const auto x1 = diffusion::sample(v, x0.view(), diffusion::sampler_config{.kind = kind, .steps = 6}, sde);
    return ops::sub(x1.view(), x0.view()).to_vector();
}


} // namespace vediff::testing::parity
