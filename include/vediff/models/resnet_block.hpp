#pragma once
// LDM's ResnetBlock without time embedding (the autoencoder's):
//   h = conv2(silu(norm2(conv1(silu(norm1(x)))))),  y = nin_shortcut(x) + h,
// GroupNorm (affine, eps 1e-6) and 3×3 convolutions; `nin_shortcut` is a 1×1 convolution present
// only when the channel count changes. Dropout (0 in every autoencoder config) is omitted. Each
// GroupNorm + SiLU pair is one nn::group_norm_silu, which keeps one activation for backward where
// the two layers kept two (the block keeps 3 full-size tensors instead of 5, besides its output).
#include <cstdint>
#include <utility>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/norm.hpp"
#include "vediff/nn/optional_layer.hpp"

namespace vediff::models {

struct resnet_block_config {
    std::int64_t in_channels = 0;
    std::int64_t out_channels = 0;
    std::int64_t norm_groups = 32;
    double norm_eps = 1e-6;
};

/// norm1 + SiLU → conv1 → norm2 + SiLU → conv2, named as in LDM's state_dict.
template <class T, device D, precision_policy P = fp32>
using resnet_body = nn::sequential<nn::named<"norm1", nn::group_norm_silu<T, D>>, nn::named<"conv1", nn::conv2d<T, D, P>>,
                                   nn::named<"norm2", nn::group_norm_silu<T, D>>, nn::named<"conv2", nn::conv2d<T, D, P>>>;

template <class T, device D, precision_policy P = fp32>
using resnet_shortcut = nn::named<"nin_shortcut", nn::optional_layer<nn::conv2d<T, D, P>>>;

template <class T = float, device D = cpu, precision_policy P = fp32>
struct resnet_block : nn::residual<resnet_body<T, D, P>, resnet_shortcut<T, D, P>> {
    using base = nn::residual<resnet_body<T, D, P>, resnet_shortcut<T, D, P>>;

    resnet_block() = default;
    /// Convolutions initialized as PyTorch's defaults, GroupNorm weight 1, bias 0, drawn as
    /// nn::initialize(*this, seed) draws them.
    explicit resnet_block(const resnet_block_config& c, std::uint64_t seed = 0) : base(make_body(c), make_shortcut(c)) {
        nn::initialize(*this, seed);
    }

    bool has_shortcut() const { return this->shortcut.has_value(); }

private:
    static nn::group_norm_silu<T, D> norm(const resnet_block_config& c, std::int64_t channels) {
        return nn::group_norm_silu<T, D>({.groups = c.norm_groups, .channels = channels, .eps = c.norm_eps, .affine = true});
    }
    static nn::conv2d<T, D, P> conv3x3(std::int64_t in, std::int64_t out) {
        return nn::conv2d<T, D, P>({.in_channels = in, .out_channels = out, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)});
    }
    static resnet_body<T, D, P> make_body(const resnet_block_config& c) {
        return resnet_body<T, D, P>(norm(c, c.in_channels), conv3x3(c.in_channels, c.out_channels), norm(c, c.out_channels),
                                 conv3x3(c.out_channels, c.out_channels));
    }
    static resnet_shortcut<T, D, P> make_shortcut(const resnet_block_config& c) {
        if (c.in_channels == c.out_channels) return {};
        return nn::optional_layer<nn::conv2d<T, D, P>>(
            nn::conv2d<T, D, P>({.in_channels = c.in_channels, .out_channels = c.out_channels, .kernel_size = 1}));
    }
};

} // namespace vediff::models
