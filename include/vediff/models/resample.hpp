#pragma once
// LDM's resampling blocks (with_conv = True, as in every autoencoder config):
//   downsample: zero pad (left 0, right 1, top 0, bottom 1), then a 3×3 stride-2 conv — one
//               conv2d with asymmetric padding; (B, C, H, W) → (B, C, H/2, W/2) for even H, W;
//   upsample:   nearest-neighbour ×2, then a 3×3 conv with padding 1.
// Both hold their convolution under the name `conv`.
#include <cstdint>

#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/upsample.hpp"

namespace vediff::models {

template <class T = float, device D = cpu, precision_policy P = fp32>
struct downsample : nn::sequential<nn::named<"conv", nn::conv2d<T, D, P>>> {
    using base = nn::sequential<nn::named<"conv", nn::conv2d<T, D, P>>>;
    /// LDM pads after the image (torch.nn.functional.pad(x, (0, 1, 0, 1))), not symmetrically.
    static constexpr ops::padding2d padding{.top = 0, .bottom = 1, .left = 0, .right = 1};

    downsample() = default;
    explicit downsample(std::int64_t channels, std::uint64_t seed = 0)
        : base(nn::conv2d<T, D, P>(
              {.in_channels = channels, .out_channels = channels, .kernel_size = 3, .stride = 2, .padding = padding})) {
        nn::initialize(*this, seed);
    }
};

template <class T = float, device D = cpu, precision_policy P = fp32>
struct upsample : nn::sequential<nn::upsample_nearest2x<T, D>, nn::named<"conv", nn::conv2d<T, D, P>>> {
    using base = nn::sequential<nn::upsample_nearest2x<T, D>, nn::named<"conv", nn::conv2d<T, D, P>>>;

    upsample() = default;
    explicit upsample(std::int64_t channels, std::uint64_t seed = 0)
        : base(nn::upsample_nearest2x<T, D>{},
               nn::conv2d<T, D, P>({.in_channels = channels, .out_channels = channels, .kernel_size = 3,
                                 .padding = ops::padding2d::symmetric(1)})) {
        nn::initialize(*this, seed);
    }
};

} // namespace vediff::models
