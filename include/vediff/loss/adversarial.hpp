#pragma once
// The adversarial terms of LDM's tokenizer loss (taming-transformers' LPIPSWithDiscriminator):
//   discriminator, hinge:    ½·(mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))))
//   discriminator, vanilla:  ½·(mean(softplus(−D(x))) + mean(softplus(D(x̂))))  (non-saturating)
//   generator:               −mean(D(x̂))  (taming's, whichever discriminator loss)
// each with its gradient with respect to the logits, and LDM's adaptive weight
//   λ_adv = ‖∇_L L_rec‖ / (‖∇_L L_G‖ + 1e-4), clamped to [0, 1e4], × disc_weight,
// with ∇_L the gradient with respect to the decoder's last layer's weight. Means are over all
// logits (every patch of every image), as torch.mean is.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <span>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/reduce.hpp"

namespace vediff::loss {

/// Which discriminator loss: taming's `disc_loss` "hinge" or "vanilla".
enum class discriminator_objective { hinge, vanilla };

inline discriminator_objective parse_discriminator_objective(std::string_view s) {
    if (s == "hinge") return discriminator_objective::hinge;
    if (s == "vanilla") return discriminator_objective::vanilla;
    throw std::invalid_argument(fmt::format("unknown discriminator loss '{}' (expected hinge or vanilla)", s));
}
constexpr std::string_view to_string(discriminator_objective o) { return o == discriminator_objective::hinge ? "hinge" : "vanilla"; }

/// One half of the discriminator loss (the real images' or the reconstructions'): its value, its
/// gradient with respect to the logits, and the logits' mean (which LDM logs).
template <class T, device D>
struct logit_term {
    double value = 0;
    double mean_logit = 0;
    tensor<T, D> gradient;
};

namespace detail {
// softplus(s·l) per logit, mean × ½, and its gradient ½·s·sigmoid(s·l)/n. The logits are one
// per patch (N·30·30 at 256 px): computed on the host, where their mean is read anyway.
template <class T, device D>
logit_term<T, D> softplus_half(const tensor_view<T, D>& logits, double sign) {
    const auto l = logits.to_vector();
    std::vector<T> g(l.size());
    double sum = 0, logit_sum = 0;
    const double n = double(l.size());
    for (std::size_t i = 0; i < l.size(); ++i) {
        const double a = sign * double(l[i]);
        sum += std::max(a, 0.0) + std::log1p(std::exp(-std::abs(a)));  // softplus without overflow
        logit_sum += double(l[i]);
        g[i] = T(0.5 * sign / (1.0 + std::exp(-a)) / n);
    }
    return {0.5 * sum / n, logit_sum / n, tensor<T, D>::from_host(logits.shape(), std::span<const T>(g))};
}
} // namespace detail

/// The real images' half: ½·mean(relu(1 − D(x))) (hinge) or ½·mean(softplus(−D(x))) (vanilla).
template <class T, device D>
logit_term<T, D> discriminator_real_term(discriminator_objective o, const tensor_view<T, D>& logits) {
    if (logits.numel() == 0) throw shape_error(fmt::format("discriminator loss: empty logits {} of real images", logits.shape()));
    if (o == discriminator_objective::vanilla) return detail::softplus_half(logits, -1.0);
    logit_term<T, D> r;
    const auto margin = ops::add_scalar(ops::scale(logits, T(-1)).view(), T(1));  // 1 − D(x)
    r.value = 0.5 * double(ops::mean(ops::relu(margin.view()).view()).to_vector()[0]);
    r.mean_logit = double(ops::mean(logits).to_vector()[0]);
    const auto all = tensor<T, D>::full(logits.shape(), T(-0.5 / double(logits.numel())));
    r.gradient = ops::relu_backward(all.view(), margin.view());
    return r;
}

/// The reconstructions' half: ½·mean(relu(1 + D(x̂))) (hinge) or ½·mean(softplus(D(x̂))) (vanilla).
template <class T, device D>
logit_term<T, D> discriminator_fake_term(discriminator_objective o, const tensor_view<T, D>& logits) {
    if (logits.numel() == 0) throw shape_error(fmt::format("discriminator loss: empty logits {} of reconstructions", logits.shape()));
    if (o == discriminator_objective::vanilla) return detail::softplus_half(logits, 1.0);
    logit_term<T, D> r;
    const auto margin = ops::add_scalar(logits, T(1));  // 1 + D(x̂)
    r.value = 0.5 * double(ops::mean(ops::relu(margin.view()).view()).to_vector()[0]);
    r.mean_logit = double(ops::mean(logits).to_vector()[0]);
    const auto all = tensor<T, D>::full(logits.shape(), T(0.5 / double(logits.numel())));
    r.gradient = ops::relu_backward(all.view(), margin.view());
    return r;
}

template <class T, device D>
struct discriminator_loss {
    double value = 0;       // ½·(real_term + fake_term)
    double real_term = 0;   // mean(relu(1 − D(x))), or mean(softplus(−D(x)))
    double fake_term = 0;   // mean(relu(1 + D(x̂))), or mean(softplus(D(x̂)))
    tensor<T, D> d_real;    // ∂value/∂D(x)
    tensor<T, D> d_fake;    // ∂value/∂D(x̂)
};

/// The discriminator's loss on the logits of real and reconstructed images: the sum of
/// discriminator_real_term and discriminator_fake_term.
template <class T, device D>
discriminator_loss<T, D> discriminator_loss_of(discriminator_objective o, const tensor_view<T, D>& real_logits,
                                               const tensor_view<T, D>& fake_logits) {
    if (real_logits.numel() == 0 || fake_logits.numel() == 0)
        throw shape_error(fmt::format("discriminator loss: empty logits {} and {}", real_logits.shape(), fake_logits.shape()));
    auto real = discriminator_real_term(o, real_logits);
    auto fake = discriminator_fake_term(o, fake_logits);
    discriminator_loss<T, D> r;
    r.real_term = 2 * real.value;
    r.fake_term = 2 * fake.value;
    r.value = real.value + fake.value;
    r.d_real = std::move(real.gradient);
    r.d_fake = std::move(fake.gradient);
    return r;
}

template <class T, device D>
discriminator_loss<T, D> hinge_discriminator_loss(const tensor_view<T, D>& real_logits, const tensor_view<T, D>& fake_logits) {
    return discriminator_loss_of(discriminator_objective::hinge, real_logits, fake_logits);
}

template <class T, device D>
struct generator_loss {
    double value = 0;    // −mean(D(x̂))
    tensor<T, D> d_fake; // ∂value/∂D(x̂) = −1/n everywhere
};

/// The generator's (the tokenizer's) adversarial term on the logits of its reconstructions.
template <class T, device D>
generator_loss<T, D> hinge_generator_loss(const tensor_view<T, D>& fake_logits) {
    if (fake_logits.numel() == 0) throw shape_error(fmt::format("hinge_generator_loss: empty logits {}", fake_logits.shape()));
    generator_loss<T, D> r;
    r.value = -double(ops::mean(fake_logits).to_vector()[0]);
    r.d_fake = tensor<T, D>::full(fake_logits.shape(), T(-1.0 / double(fake_logits.numel())));
    return r;
}

/// LDM's adaptive weight from the gradients of the reconstruction (incl. perceptual) loss and of
/// the generator loss with respect to the decoder's last layer's weight (same shape).
template <class T, device D>
double adaptive_weight(const tensor_view<T, D>& rec_grad, const tensor_view<T, D>& g_grad, double disc_weight) {
    require_same_shape("adaptive_weight", rec_grad, g_grad);
    const auto norm = [](const tensor_view<T, D>& g) {
        return std::sqrt(double(ops::sum(ops::mul(g, g).view()).to_vector()[0]));
    };
    const double rec = norm(rec_grad), gen = norm(g_grad);
    if (!std::isfinite(rec) || !std::isfinite(gen))
        throw std::invalid_argument(fmt::format("adaptive_weight: gradient norms {} (reconstruction) and {} (generator) are not finite", rec, gen));
    return std::clamp(rec / (gen + 1e-4), 0.0, 1e4) * disc_weight;
}

} // namespace vediff::loss
