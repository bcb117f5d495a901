#pragma once
// The toy experiment's tokenizer: a VAE on 2-D points with a 2-D latent, two MLPs in the roles of
// the LDM autoencoder's encoder and decoder, with the same interface (encode → moments
// (B, 2·latent) = [mean | logvar], for models::gaussian_posterior; decode z (B, latent) → x̂), so a
// training step is the image tokenizer's step with (B, 2) tensors in place of (B, C, H, W).
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vediff/models/toy_mlp.hpp"

namespace vediff::models {

struct toy_tokenizer_config {
    std::int64_t data_dim = 2;
    std::int64_t latent_dim = 2;
    std::int64_t hidden = 128;
    std::int64_t hidden_layers = 2;  // of the encoder and of the decoder
};

template <class T = float, device D = cpu>
struct toy_tokenizer {
    using value_type = T;
    using device_type = D;

    toy_tokenizer_config config;
    toy_mlp<T, D> encoder;  // data_dim → 2·latent_dim
    toy_mlp<T, D> decoder;  // latent_dim → data_dim

    toy_tokenizer() = default;
    explicit toy_tokenizer(const toy_tokenizer_config& c, std::uint64_t seed = 0)
        : config(c),
          encoder({.in_features = c.data_dim, .hidden = c.hidden, .hidden_layers = c.hidden_layers, .out_features = 2 * c.latent_dim}),
          decoder({.in_features = c.latent_dim, .hidden = c.hidden, .hidden_layers = c.hidden_layers, .out_features = c.data_dim}) {
        nn::initialize(*this, seed);
    }

    /// x (B, data_dim) → moments (B, 2·latent_dim).
    tensor<T, D> encode(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> encode(const tensor_view<T, D>& x) { return encoder.forward(x); }
    /// dmoments → dx; accumulates the encoder's gradients.
    tensor<T, D> encode_backward(const tensor_view<T, D>& dmoments) { return encoder.backward(dmoments); }

    /// z (B, latent_dim) → x̂ (B, data_dim).
    tensor<T, D> decode(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> decode(const tensor_view<T, D>& z) { return decoder.forward(z); }
    /// dx̂ → dz; accumulates the decoder's gradients.
    tensor<T, D> decode_backward(const tensor_view<T, D>& dx_hat) { return decoder.backward(dx_hat); }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        encoder.for_each_parameter(f, nn::join_name(prefix, "encoder"));
        decoder.for_each_parameter(f, nn::join_name(prefix, "decoder"));
    }
};

} // namespace vediff::models
