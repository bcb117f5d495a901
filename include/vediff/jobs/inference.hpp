#pragma once
// The tokenizer's inference passes of the jobs (sample, eval, encode): under nn::no_grad, so its
// layers keep no activations and no views of their inputs. A kept input view would outlive the
// caller's loop-local latent (a dangling view inside the model), and kept activations hold every
// layer's output until the next forward. A backward after these passes throws (nn::backward_record).
#include <type_traits>

#include "vediff/core/tensor.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/models/autoencoder.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/nn/grad_mode.hpp"

namespace vediff::jobs {

/// Images decoded from latents z (on any device) by the tokenizer on D, as a host tensor.
template <device D, device From>
tensor<float> decode_to_host(models::autoencoder_kl<float, D>& ae, const tensor_view<float, From>& z) {
    const nn::no_grad inference;
    const view_on<float, D> z_on_device(z);
    auto x = ae.decode(z_on_device.view());
    if constexpr (std::is_same_v<D, cpu>) return x;
    else return to<cpu>(x.view());
}

/// The posterior q(z | x) of images x on D.
template <device D>
models::gaussian_posterior<float, D> encode_posterior(models::autoencoder_kl<float, D>& ae, const tensor_view<float, D>& x) {
    const nn::no_grad inference;
    return models::gaussian_posterior<float, D>::from_moments(ae.encode(x));
}

} // namespace vediff::jobs
