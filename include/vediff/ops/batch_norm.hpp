#pragma once
// Batch normalization in evaluation mode, y = (x − running_mean)·weight / √(running_var + eps) + bias
// per channel, written as the affine map y = scale·x + shift. batch_norm_fold returns (scale,
// shift) so that a convolution followed by the norm becomes one convolution with its weight rows
// multiplied by scale and shift as its bias (models/inception.hpp's basic_conv2d does this).
// cpu only, like the frozen feature network that uses it (core/kernels.hpp).
#include <cstdint>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// (scale, shift), each (C), from weight, bias, running_mean and running_var (C); computed in double.
/// A channel whose running_var + eps is not positive, or with a non-finite value, is an error naming it.
template <class T, device D>
std::pair<tensor<T, D>, tensor<T, D>> batch_norm_fold(const tensor_view<T, D>& weight, const tensor_view<T, D>& bias,
                                                      const tensor_view<T, D>& running_mean,
                                                      const tensor_view<T, D>& running_var, double eps) {
    if (weight.rank() != 1)
        throw shape_error(fmt::format("batch_norm_fold: weight must have rank 1 (C), got {}", weight.shape()));
    require_same_shape("batch_norm_fold (bias vs weight)", bias, weight);
    require_same_shape("batch_norm_fold (running_mean vs weight)", running_mean, weight);
    require_same_shape("batch_norm_fold (running_var vs weight)", running_var, weight);
    if (!(eps > 0)) throw shape_error(fmt::format("batch_norm_fold: eps {} must be > 0", eps));
    tensor<T, D> scale(weight.shape()), shift(weight.shape());
    const std::int64_t bad = batch_norm_kernels<D>::fold(scale.data(), shift.data(), weight.data(), bias.data(),
                                                         running_mean.data(), running_var.data(), eps, weight.numel());
    if (bad >= 0)
        throw std::invalid_argument(fmt::format("batch_norm_fold: channel {} of {} has a running_var + eps that is not a positive "
                                                "number, or a non-finite weight, bias or running_mean", bad, weight.numel()));
    return {std::move(scale), std::move(shift)};
}

} // namespace vediff::ops
