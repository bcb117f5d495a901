#pragma once
// Batch normalization over (N, C, ...) per channel, torch.nn.BatchNorm2d's function.
// Training mode normalizes with the batch's own mean and biased variance (batch_norm_train) and
// moves the running statistics toward the batch's, its variance unbiased (batch_norm_update_running);
// evaluation mode, y = (x − running_mean)·weight / √(running_var + eps) + bias, uses the running
// statistics (batch_norm_eval). batch_norm_backward covers both. batch_norm_fold writes evaluation
// mode as an affine map y = scale·x + shift, so that a convolution followed by the norm becomes
// one convolution (models/inception.hpp's basic_conv2d does this). cpu only so far (core/kernels.hpp).
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

/// A batch norm's output and what its backward and the running statistics need, each (C).
template <class T, device D>
struct batch_normalized {
    tensor<T, D> y;     // shape of x
    tensor<T, D> mean;  // the statistics used: the batch's (training) or the running mean (evaluation)
    tensor<T, D> var;   // biased batch variance (training) or the running variance (evaluation)
    tensor<T, D> rstd;  // 1/√(var + eps)
};

namespace detail {
template <class T, device D>
std::int64_t check_batch_norm(const char* op, const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias) {
    if (x.rank() < 2 || x.numel() == 0)
        throw shape_error(fmt::format("{}: input must be a non-empty (N, C, ...), got shape {}", op, x.shape()));
    const auto c = x.dim(1);
    if (weight.rank() != 1 || weight.dim(0) != c || !(bias.shape() == weight.shape()))
        throw shape_error(fmt::format("{}: weight {} and bias {} must be ({}) for input {}", op, weight.shape(), bias.shape(), c, x.shape()));
    return x.numel() / (x.dim(0) * c);
}
} // namespace detail

/// Training mode: x normalized with its own per-channel mean and biased variance.
template <class T, device D>
batch_normalized<T, D> batch_norm_train(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias,
                                        double eps) {
    const auto inner = detail::check_batch_norm("batch_norm_train", x, weight, bias);
    const auto c = x.dim(1);
    batch_normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>({c}), tensor<T, D>({c}), tensor<T, D>({c})};
    batch_norm_kernels<D>::statistics(r.mean.data(), r.var.data(), r.rstd.data(), x.data(), x.dim(0), c, inner, eps);
    batch_norm_kernels<D>::normalize(r.y.data(), x.data(), r.mean.data(), r.rstd.data(), weight.data(), bias.data(), x.dim(0), c, inner);
    return r;
}

/// Evaluation mode: x normalized with the running statistics.
template <class T, device D>
batch_normalized<T, D> batch_norm_eval(const tensor_view<T, D>& x, const tensor_view<T, D>& weight, const tensor_view<T, D>& bias,
                                       const tensor_view<T, D>& running_mean, const tensor_view<T, D>& running_var, double eps) {
    const auto inner = detail::check_batch_norm("batch_norm_eval", x, weight, bias);
    require_same_shape("batch_norm_eval (running_mean vs weight)", running_mean, weight);
    require_same_shape("batch_norm_eval (running_var vs weight)", running_var, weight);
    const auto c = x.dim(1);
    batch_normalized<T, D> r{tensor<T, D>(x.shape()), tensor<T, D>::copy_of(running_mean), tensor<T, D>::copy_of(running_var),
                             tensor<T, D>({c})};
    batch_norm_kernels<D>::inverse_std(r.rstd.data(), r.var.data(), c, eps);
    batch_norm_kernels<D>::normalize(r.y.data(), x.data(), r.mean.data(), r.rstd.data(), weight.data(), bias.data(), x.dim(0), c, inner);
    return r;
}

/// dx of a batch norm whose forward used (mean, rstd): batch_statistics true for training mode
/// (the statistics depend on x), false for evaluation mode; dweight and dbias accumulate (+=).
template <class T, device D>
tensor<T, D> batch_norm_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x, const tensor_view<T, D>& mean,
                                 const tensor_view<T, D>& rstd, const tensor_view<T, D>& weight, const tensor_view<T, D>& dweight,
                                 const tensor_view<T, D>& dbias, bool batch_statistics) {
    const auto inner = detail::check_batch_norm("batch_norm_backward", x, weight, dbias);
    require_same_shape("batch_norm_backward (dy vs x)", dy, x);
    require_same_shape("batch_norm_backward (dweight vs weight)", dweight, weight);
    require_same_shape("batch_norm_backward (mean vs weight)", mean, weight);
    require_same_shape("batch_norm_backward (rstd vs weight)", rstd, weight);
    tensor<T, D> dx(x.shape());
    batch_norm_kernels<D>::backward(dx.data(), dweight.data(), dbias.data(), dy.data(), x.data(), mean.data(), rstd.data(), weight.data(),
                                    x.dim(0), x.dim(1), inner, batch_statistics);
    return dx;
}

/// running ← (1 − momentum)·running + momentum·batch, the batch variance unbiased over `count`
/// values per channel.
template <class T, device D>
void batch_norm_update_running(const tensor_view<T, D>& running_mean, const tensor_view<T, D>& running_var,
                               const tensor_view<T, D>& batch_mean, const tensor_view<T, D>& batch_var, double momentum,
                               std::int64_t count) {
    require_same_shape("batch_norm_update_running (running_var vs running_mean)", running_var, running_mean);
    require_same_shape("batch_norm_update_running (batch_mean vs running_mean)", batch_mean, running_mean);
    require_same_shape("batch_norm_update_running (batch_var vs running_mean)", batch_var, running_mean);
    batch_norm_kernels<D>::update_running(running_mean.data(), running_var.data(), batch_mean.data(), batch_var.data(),
                                          running_mean.numel(), momentum, count);
}

} // namespace vediff::ops
