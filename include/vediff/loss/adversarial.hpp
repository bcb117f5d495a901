#pragma once
// The adversarial terms of LDM's tokenizer loss (taming-transformers' LPIPSWithDiscriminator):
//   discriminator, hinge:  ½·(mean(relu(1 − D(x))) + mean(relu(1 + D(x̂))))
//   generator:             −mean(D(x̂))
// each with its gradient with respect to the logits, and LDM's adaptive weight
//   λ_adv = ‖∇_L L_rec‖ / (‖∇_L L_G‖ + 1e-4), clamped to [0, 1e4], × disc_weight,
// with ∇_L the gradient with respect to the decoder's last layer's weight. Means are over all
// logits (every patch of every image), as torch.mean is.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/reduce.hpp"

namespace vediff::loss {

template <class T, device D>
struct discriminator_loss {
    double value = 0;       // ½·(real_term + fake_term)
    double real_term = 0;   // mean(relu(1 − D(x)))
    double fake_term = 0;   // mean(relu(1 + D(x̂)))
    tensor<T, D> d_real;    // ∂value/∂D(x)
    tensor<T, D> d_fake;    // ∂value/∂D(x̂)
};

/// The discriminator's hinge loss on the logits of real and reconstructed images.
template <class T, device D>
discriminator_loss<T, D> hinge_discriminator_loss(const tensor_view<T, D>& real_logits, const tensor_view<T, D>& fake_logits) {
    if (real_logits.numel() == 0 || fake_logits.numel() == 0)
        throw shape_error(fmt::format("hinge_discriminator_loss: empty logits {} and {}", real_logits.shape(), fake_logits.shape()));
    discriminator_loss<T, D> r;
    const auto margin_real = ops::add_scalar(ops::scale(real_logits, T(-1)).view(), T(1));  // 1 − D(x)
    const auto margin_fake = ops::add_scalar(fake_logits, T(1));                            // 1 + D(x̂)
    r.real_term = double(ops::mean(ops::relu(margin_real.view()).view()).to_vector()[0]);
    r.fake_term = double(ops::mean(ops::relu(margin_fake.view()).view()).to_vector()[0]);
    r.value = 0.5 * (r.real_term + r.fake_term);
    const auto d_real_all = tensor<T, D>::full(real_logits.shape(), T(-0.5 / double(real_logits.numel())));
    const auto d_fake_all = tensor<T, D>::full(fake_logits.shape(), T(0.5 / double(fake_logits.numel())));
    r.d_real = ops::relu_backward(d_real_all.view(), margin_real.view());
    r.d_fake = ops::relu_backward(d_fake_all.view(), margin_fake.view());
    return r;
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
