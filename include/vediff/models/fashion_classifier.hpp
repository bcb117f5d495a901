#pragma once
// A small CNN for 28×28 grey images (Fashion-MNIST): conv-GroupNorm-SiLU blocks with two
// stride-2 down-samplings, then a linear feature layer and a linear head. Its penultimate
// activations (feature_dim values per image) serve as the feature network of the Fréchet
// distance on Fashion-MNIST, so `features()` is public.
#include <cstdint>
#include <string>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/flatten.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/nn/norm.hpp"

namespace vediff::models {

struct fashion_classifier_config {
    std::int64_t in_channels = 1;
    std::int64_t image_size = 28;  // square; must be divisible by 4
    std::int64_t width = 32;       // channels of the first block; doubled after the first down-sampling
    std::int64_t groups = 8;       // GroupNorm groups
    std::int64_t feature_dim = 128;
    std::int64_t num_classes = 10;
};

/// conv → GroupNorm → SiLU, named like a PyTorch module with children `conv` and `norm`.
template <class T, device D>
using conv_norm_silu = nn::sequential<nn::named<"conv", nn::conv2d<T, D>>, nn::named<"norm", nn::group_norm<T, D>>, nn::silu<T, D>>;

template <class T = float, device D = cpu>
struct fashion_classifier {
    using value_type = T;
    using device_type = D;
    using block = conv_norm_silu<T, D>;

    // features.{0..3}: the conv blocks; features.5: the feature layer (features.4 is the flatten).
    nn::sequential<block, block, block, block, nn::flatten<T, D>, nn::linear<T, D>, nn::silu<T, D>> features_net;
    nn::linear<T, D> head;
    fashion_classifier_config config;

    explicit fashion_classifier(const fashion_classifier_config& c = {}, std::uint64_t seed = 0)
        : features_net(make_block(c, c.in_channels, c.width, 1), make_block(c, c.width, 2 * c.width, 2),
                       make_block(c, 2 * c.width, 2 * c.width, 1), make_block(c, 2 * c.width, 2 * c.width, 2),
                       nn::flatten<T, D>{},
                       nn::linear<T, D>(2 * c.width * (c.image_size / 4) * (c.image_size / 4), c.feature_dim, true),
                       nn::silu<T, D>{}),
          head(c.feature_dim, c.num_classes, true),
          config(c) {
        nn::initialize(*this, seed);
    }

    /// Images (N, C, H, W) → logits (N, num_classes).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        features_ = features_net.forward(x);
        return head.forward(features_);
    }
    tensor<T, D> backward(const tensor_view<T, D>& dlogits) { return features_net.backward(head.backward(dlogits)); }

    /// Penultimate activations (N, feature_dim) of images (N, C, H, W).
    tensor<T, D> features(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> features(const tensor_view<T, D>& x) { return features_net.forward(x); }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        features_net.for_each_parameter(f, nn::join_name(prefix, "features"));
        head.for_each_parameter(f, nn::join_name(prefix, "head"));
    }

private:
    static block make_block(const fashion_classifier_config& c, std::int64_t in, std::int64_t out, std::int64_t stride) {
        return block(nn::conv2d<T, D>({.in_channels = in, .out_channels = out, .kernel_size = 3, .stride = stride,
                                       .padding = ops::padding2d::symmetric(1)}),
                     nn::group_norm<T, D>({.groups = c.groups, .channels = out}), nn::silu<T, D>{});
    }

    tensor<T, D> features_;  // (N, feature_dim), the head's cached input
};

} // namespace vediff::models
