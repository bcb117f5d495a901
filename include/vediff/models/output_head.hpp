#pragma once
// The last layers of the LDM encoder and decoder: norm_out (GroupNorm) → SiLU → conv_out (3×3,
// padding 1). Its parameters are named `norm_out` and `conv_out` directly under its owner.
#include <cstdint>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/norm.hpp"

namespace vediff::models {

template <class T, device D, precision_policy P = fp32>
using output_head_base =
    nn::sequential<nn::named<"norm_out", nn::group_norm<T, D>>, nn::silu<T, D>, nn::named<"conv_out", nn::conv2d<T, D, P>>>;

template <class T = float, device D = cpu, precision_policy P = fp32>
struct output_head : output_head_base<T, D, P> {
    output_head() = default;
    output_head(std::int64_t in_channels, std::int64_t out_channels, std::int64_t norm_groups, double norm_eps)
        : output_head_base<T, D, P>(
              nn::group_norm<T, D>({.groups = norm_groups, .channels = in_channels, .eps = norm_eps, .affine = true}),
              nn::silu<T, D>{},
              nn::conv2d<T, D, P>({.in_channels = in_channels, .out_channels = out_channels, .kernel_size = 3,
                                .padding = ops::padding2d::symmetric(1)})) {}
};

} // namespace vediff::models
