#pragma once
// The LDM AutoencoderKL (ldm.models.autoencoder.AutoencoderKL) without its loss module:
//   encode: moments = quant_conv(encoder(x)), (B, 2·embed_dim, h, w) = [mean | logvar] channels,
//           turned into a distribution by gaussian_posterior::from_moments;
//   decode: x̂ = decoder(post_quant_conv(z)).
// Parameter names are those of the reference state_dict ("encoder.conv_in.weight", …,
// "quant_conv.weight", "post_quant_conv.bias"), so converted LDM / VA-VAE checkpoints load with
// io::load_state_dict. Like every layer, encode and decode cache views of their inputs: the
// caller keeps x alive until encode_backward and z alive until decode_backward return. Each
// backward releases what its forward kept (nn/grad_mode.hpp): one decode_backward per decode,
// unless an nn::retain_graph is alive.
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/gradient_listener.hpp"
#include "vediff/models/autoencoder_config.hpp"
#include "vediff/models/decoder.hpp"
#include "vediff/models/encoder.hpp"
#include "vediff/nn/conv2d.hpp"

namespace vediff::models {

template <class T = float, device D = cpu, precision_policy P = fp32>
struct autoencoder_kl {
    using value_type = T;
    using device_type = D;
    using precision = P;  // of every convolution; the spatial attention's products and the norms stay fp32

    autoencoder_config config;
    models::encoder<T, D, P> encoder;
    models::decoder<T, D, P> decoder;
    nn::conv2d<T, D, P> quant_conv;       // 1×1, 2·z_channels → 2·embed_dim
    nn::conv2d<T, D, P> post_quant_conv;  // 1×1, embed_dim → z_channels

    /// Weights as nn::initialize(*this, seed) draws them: each parameter from its own key.
    explicit autoencoder_kl(const autoencoder_config& c, std::uint64_t seed = 0) : config(c) {
        config.validate();
        encoder = models::encoder<T, D, P>(config);
        decoder = models::decoder<T, D, P>(config);
        quant_conv = conv1x1(2 * config.z_channels, 2 * config.embed_dim);
        post_quant_conv = conv1x1(config.embed_dim, config.z_channels);
        nn::initialize(*this, seed);
    }

    /// (B, embed_dim, h, w) of the latents of a batch of B images of the configured resolution.
    tensor_shape latent_shape(std::int64_t batch) const {
        return {batch, config.embed_dim, config.latent_resolution(), config.latent_resolution()};
    }

    /// x (B, in, H, W), H and W multiples of 2^(levels − 1) → moments (B, 2·embed_dim, h, w).
    tensor<T, D> encode(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> encode(const tensor_view<T, D>& x) {
        const auto f = config.downsampling_factor();
        if (x.rank() != 4 || x.dim(1) != config.in_channels || x.dim(2) % f != 0 || x.dim(3) % f != 0 || x.dim(2) == 0 ||
            x.dim(3) == 0)
            throw shape_error(fmt::format("autoencoder_kl::encode: input {} must be (B, {}, H, W) with H and W positive multiples of {}",
                                          x.shape(), config.in_channels, f));
        h_ = encoder.forward(x);
        return quant_conv.forward(h_);
    }

    /// dmoments (B, 2·embed_dim, h, w) → dx; accumulates the encoder's and quant_conv's gradients.
    tensor<T, D> encode_backward(const tensor_view<T, D>& dmoments) {
        auto dh = quant_conv.backward(dmoments);
        nn::announce_final_gradients(quant_conv);
        auto dx = encoder.backward(dh);  // announces its parts
        if (nn::backward_releases()) h_ = tensor<T, D>{};  // made by the encoder, read by quant_conv: both done
        return dx;
    }

    /// z (B, embed_dim, h, w) → x̂ (B, out, h·f, w·f).
    tensor<T, D> decode(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> decode(const tensor_view<T, D>& z) {
        if (z.rank() != 4 || z.dim(1) != config.embed_dim)
            throw shape_error(fmt::format("autoencoder_kl::decode: latents {} must be (B, {}, h, w)", z.shape(), config.embed_dim));
        z_post_ = post_quant_conv.forward(z);
        return decoder.forward(z_post_);
    }

    /// dx̂ (B, out, H, W) → dz; accumulates the decoder's and post_quant_conv's gradients.
    tensor<T, D> decode_backward(const tensor_view<T, D>& dx_hat) {
        auto dz_post = decoder.backward(dx_hat);  // announces its parts
        auto dz = post_quant_conv.backward(dz_post);
        nn::announce_final_gradients(post_quant_conv);
        if (nn::backward_releases()) z_post_ = tensor<T, D>{};  // made by post_quant_conv, read by the decoder: both done
        return dz;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        encoder.for_each_parameter(f, nn::join_name(prefix, "encoder"));
        decoder.for_each_parameter(f, nn::join_name(prefix, "decoder"));
        quant_conv.for_each_parameter(f, nn::join_name(prefix, "quant_conv"));
        post_quant_conv.for_each_parameter(f, nn::join_name(prefix, "post_quant_conv"));
    }

private:
    static nn::conv2d<T, D, P> conv1x1(std::int64_t in, std::int64_t out) {
        return nn::conv2d<T, D, P>({.in_channels = in, .out_channels = out, .kernel_size = 1});
    }

    tensor<T, D> h_;       // (B, 2·z_channels, h, w), the encoder's output
    tensor<T, D> z_post_;  // (B, z_channels, h, w), post_quant_conv's output
};

} // namespace vediff::models
