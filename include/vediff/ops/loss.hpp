#pragma once
// Elementwise loss terms summed over a whole tensor, each with its gradient fused in: the value
// comes back as a double (summed in double, in an order that does not depend on the thread
// count), and when a gradient view is given, grad_scale times the term's derivative is ADDED into
// it. An empty (default) gradient view asks for the value alone. Weights and reductions are the
// caller's (loss/); these are the device kernels' front doors.
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/deferred.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

namespace detail {
/// Throws unless t has storage or no elements (a default view has rank 0, which counts as one).
template <class T, device D>
void require_present(const char* op, const tensor_view<T, D>& t, const char* what) {
    if (!t.defined() && t.numel() != 0) throw shape_error(fmt::format("{}: input {} is missing (no storage)", op, what));
}
/// Checks that an optional gradient view is absent or shaped like its input.
template <class T, device D>
void require_gradient_shape(const char* op, const tensor_view<T, D>& input, const tensor_view<T, D>& grad, const char* what) {
    if (grad.defined() && !(grad.shape() == input.shape()))
        throw shape_error(fmt::format("{}: gradient {} has shape {}, its input {}", op, what, grad.shape(), input.shape()));
}
/// The checks of a reconstruction error: x and x̂ present and alike, dx_hat absent or alike.
template <class T, device D>
void check_error_sum(const char* op, const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat) {
    require_present(op, x, "x");
    require_present(op, x_hat, "x_hat");
    require_same_shape(op, x, x_hat);
    require_gradient_shape(op, x_hat, dx_hat, "dx_hat");
}
} // namespace detail

/// Σ |x̂ − x|; adds grad_scale · sign(x̂ − x) into dx_hat (subgradient 0 where x̂ = x).
template <class T, device D>
double abs_error_sum(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat = {},
                     double grad_scale = 1.0) {
    detail::check_error_sum("abs_error_sum", x, x_hat, dx_hat);
    return loss_kernels<D>::abs_error(x.data(), x_hat.data(), dx_hat.data(), x.numel(), grad_scale);
}

/// Σ (x̂ − x)²; adds grad_scale · 2(x̂ − x) into dx_hat.
template <class T, device D>
double squared_error_sum(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat = {},
                         double grad_scale = 1.0) {
    detail::check_error_sum("squared_error_sum", x, x_hat, dx_hat);
    return loss_kernels<D>::squared_error(x.data(), x_hat.data(), dx_hat.data(), x.numel(), grad_scale);
}

namespace detail {
inline deferred_value sum_later(const std::vector<double>& partials) {  // a host backend's: known now
    double total = 0;
    for (double p : partials) total += p;
    return deferred_value(total);
}
template <device D>
deferred_value sum_later(tensor<double, D> partials) {
    return deferred_sum(std::move(partials));
}
} // namespace detail

/// squared_error_sum, read when asked: on a device the block sums stay there and nothing waits
/// (core/deferred.hpp); the same number as squared_error_sum.
template <class T, device D>
deferred_value squared_error_sum_deferred(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat,
                                          const tensor_view<T, D>& dx_hat = {}, double grad_scale = 1.0) {
    detail::check_error_sum("squared_error_sum", x, x_hat, dx_hat);
    return detail::sum_later(loss_kernels<D>::squared_error_partials(x.data(), x_hat.data(), dx_hat.data(), x.numel(), grad_scale));
}

/// Σ 1/(exp(logvar) + δ), δ ≥ 0; adds grad_scale · (−σ²/(σ² + δ)²) into dlogvar.
template <class T, device D>
double inverse_variance_sum(const tensor_view<T, D>& logvar, double delta, const tensor_view<T, D>& dlogvar = {},
                            double grad_scale = 1.0) {
    if (!(delta >= 0)) throw std::invalid_argument(fmt::format("inverse_variance_sum: delta must be >= 0, got {}", delta));
    detail::require_present("inverse_variance_sum", logvar, "logvar");
    detail::require_gradient_shape("inverse_variance_sum", logvar, dlogvar, "dlogvar");
    return loss_kernels<D>::inverse_variance(logvar.data(), delta, dlogvar.data(), logvar.numel(), grad_scale);
}

/// Σ exp(|z| − τ); adds grad_scale · sign(z) · exp(|z| − τ) into dz.
template <class T, device D>
double magnitude_penalty_sum(const tensor_view<T, D>& z, double tau, const tensor_view<T, D>& dz = {},
                             double grad_scale = 1.0) {
    detail::require_present("magnitude_penalty_sum", z, "z");
    detail::require_gradient_shape("magnitude_penalty_sum", z, dz, "dz");
    return loss_kernels<D>::magnitude(z.data(), tau, dz.data(), z.numel(), grad_scale);
}

/// Σ ½(μ² + σ² − 1 − log σ²), the KL divergence of N(μ, σ²) from N(0, 1) per element; adds
/// grad_scale · μ into dmean and grad_scale · ½(σ² − 1) into dlogvar (either may be empty).
template <class T, device D>
double gaussian_kl_sum(const tensor_view<T, D>& mean, const tensor_view<T, D>& logvar, const tensor_view<T, D>& dmean = {},
                       const tensor_view<T, D>& dlogvar = {}, double grad_scale = 1.0) {
    detail::require_present("gaussian_kl_sum", mean, "mean");
    detail::require_present("gaussian_kl_sum", logvar, "logvar");
    require_same_shape("gaussian_kl_sum", mean, logvar);
    detail::require_gradient_shape("gaussian_kl_sum", mean, dmean, "dmean");
    detail::require_gradient_shape("gaussian_kl_sum", logvar, dlogvar, "dlogvar");
    return loss_kernels<D>::gaussian_kl(mean.data(), logvar.data(), dmean.data(), dlogvar.data(), mean.numel(), grad_scale);
}

/// Σ exp(x) (the summed variance when x is a log-variance).
template <class T, device D>
double exp_sum(const tensor_view<T, D>& x) {
    detail::require_present("exp_sum", x, "x");
    return loss_kernels<D>::exp_sum(x.data(), x.numel());
}

/// Per-channel moments of z (B, C, ...): each channel's mean and sum of squared deviations
/// (m2) over the batch and every position, `count` = B · (positions) values per channel.
struct channel_moments_result {
    std::int64_t count = 0;
    std::vector<double> mean, m2;  // (C)
};

template <class T, device D>
channel_moments_result channel_moments(const tensor_view<T, D>& z) {
    detail::require_present("channel_moments", z, "z");
    if (z.rank() < 2) throw shape_error(fmt::format("channel_moments: z must be (B, C, ...), got shape {}", z.shape()));
    const std::int64_t B = z.dim(0), C = z.dim(1), S = z.shape().prod(2, z.rank());
    channel_moments_result r{B * S, std::vector<double>(static_cast<std::size_t>(C)), std::vector<double>(static_cast<std::size_t>(C))};
    loss_kernels<D>::channel_moments(r.mean.data(), r.m2.data(), z.data(), B, C, S);
    return r;
}

/// Adds the moments of another batch to `total` exactly (Chan et al.'s pairwise update of the mean
/// and sum of squared deviations), so that accumulated statistics do not depend on how the values
/// were batched. `what` names the caller and the batch in the error when the channel counts differ.
inline void merge_moments(channel_moments_result& total, const channel_moments_result& batch, std::string_view what) {
    if (total.count == 0) {
        total = batch;
        return;
    }
    if (batch.mean.size() != total.mean.size())
        throw shape_error(fmt::format("{}: a batch of {} channels after batches of {}", what, batch.mean.size(), total.mean.size()));
    const double na = double(total.count), nb = double(batch.count), n = na + nb;
    for (std::size_t c = 0; c < total.mean.size(); ++c) {
        const double delta = batch.mean[c] - total.mean[c];
        total.mean[c] += delta * nb / n;
        total.m2[c] += batch.m2[c] + delta * delta * na * nb / n;
    }
    total.count += batch.count;
}

/// Number of NaN or infinite elements of x.
template <class T, device D>
std::int64_t count_nonfinite(const tensor_view<T, D>& x) {
    detail::require_present("count_nonfinite", x, "x");
    return loss_kernels<D>::count_nonfinite(x.data(), x.numel());
}

} // namespace vediff::ops
