#pragma once
// The PatchGAN discriminator of taming-transformers (NLayerDiscriminator, n_layers 3), which
// LDM's and VA-VAE's tokenizer losses train against: for an image (N, C, H, W) it gives a logit
// per overlapping patch, (N, 1, H/8 − 2, W/8 − 2) (30×30 for 256×256, each patch ~70 px).
//
//   main.0   Conv2d(C, ndf, 4, stride 2, pad 1)                LeakyReLU(0.2)   main.1
//   main.2   Conv2d(ndf, 2·ndf, 4, 2, 1, no bias)   main.3 BatchNorm2d   LeakyReLU(0.2)   main.4
//   main.5   Conv2d(2·ndf, 4·ndf, 4, 2, 1, no bias)  main.6 BatchNorm2d   LeakyReLU(0.2)   main.7
//   main.8   Conv2d(4·ndf, 8·ndf, 4, 1, 1, no bias)  main.9 BatchNorm2d   LeakyReLU(0.2)   main.10
//   main.11  Conv2d(8·ndf, 1, 4, 1, 1)
//
// Initialization as taming's weights_init: convolution weights N(0, 0.02²), BatchNorm weights
// N(1, 0.02²) and biases 0; the two convolution biases keep PyTorch's default U(±1/√fan_in).
// Parameter names are the state_dict's, so taming/LDM discriminator checkpoints load.
#include <cstdint>
#include <tuple>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/batch_norm.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/init.hpp"

namespace vediff::models {

struct patchgan_config {
    std::int64_t in_channels = 3;
    std::int64_t ndf = 64;  // channels of the first convolution
};

template <class T = float, device D = cpu>
struct patchgan_discriminator {
    using value_type = T;
    using device_type = D;
    using conv = nn::conv2d<T, D>;
    using act = nn::leaky_relu<T, D>;
    using norm = nn::batch_norm2d<T, D>;
    using stack = nn::sequential<conv, act, conv, norm, act, conv, norm, act, conv, norm, act, conv>;

    patchgan_config config;
    stack main;

    patchgan_discriminator() = default;
    explicit patchgan_discriminator(patchgan_config c, std::uint64_t seed = 0) : config(c), main(make_stack(c)) {
        auto& l = main.layers;
        for (auto* weight : {&std::get<0>(l).weight, &std::get<2>(l).weight, &std::get<5>(l).weight, &std::get<8>(l).weight,
                             &std::get<11>(l).weight})
            weight->init = nn::init_rule::normal(0.02);
        for (auto* bn : {&std::get<3>(l), &std::get<6>(l), &std::get<9>(l)}) {
            bn->weight.init = nn::init_rule::normal(0.02, 1.0);
            bn->bias.init = nn::init_rule::constant(0);
        }
        nn::initialize(*this, seed);
    }

    /// x (N, in_channels, H, W), H and W ≥ 32 → logits (N, 1, H/8 − 2, W/8 − 2).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() != 4 || x.dim(1) != config.in_channels || x.dim(2) < 32 || x.dim(3) < 32)
            throw shape_error(fmt::format("patchgan_discriminator: input {} must be (N, {}, H, W) with H, W ≥ 32", x.shape(),
                                          config.in_channels));
        return main.forward(x);
    }
    /// dlogits → dx; accumulates every trainable parameter's gradient.
    tensor<T, D> backward(const tensor_view<T, D>& dlogits) { return main.backward(dlogits); }

    /// Drops what the last forward kept for backward (a forward under nn::no_grad on a 32×32 image
    /// in evaluation mode, which keeps nothing and moves no running statistic); a backward after
    /// this is an error naming the layer.
    void forget() {
        nn::no_grad off;
        const bool was_training = training_;
        train(false);
        const auto tiny = tensor<T, D>::zeros({1, config.in_channels, 32, 32});
        (void)main.forward(tiny.view());
        train(was_training);
    }

    /// Training (batch statistics, updated running statistics) or evaluation (running statistics).
    void train(bool training) {
        training_ = training;
        main.train(training);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        main.for_each_parameter(f, nn::join_name(prefix, "main"));
    }

private:
    bool training_ = true;

    static stack make_stack(const patchgan_config& c) {
        if (c.in_channels <= 0 || c.ndf <= 0)
            throw shape_error(fmt::format("patchgan_discriminator: in_channels {} and ndf {} must be positive", c.in_channels, c.ndf));
        const auto layer = [](std::int64_t in, std::int64_t out, std::int64_t stride, bool bias) {
            return conv({.in_channels = in, .out_channels = out, .kernel_size = 4, .stride = stride,
                         .padding = ops::padding2d::symmetric(1), .bias = bias});
        };
        const T slope = T(0.2);
        const auto f = c.ndf;
        return stack(layer(c.in_channels, f, 2, true), act(slope),                              //
                     layer(f, 2 * f, 2, false), norm({.channels = 2 * f}), act(slope),          //
                     layer(2 * f, 4 * f, 2, false), norm({.channels = 4 * f}), act(slope),      //
                     layer(4 * f, 8 * f, 1, false), norm({.channels = 8 * f}), act(slope),      //
                     layer(8 * f, 1, 1, true));
    }
};

} // namespace vediff::models
