#pragma once
// Ops of the diagonal Gaussian posterior of a VAE (LDM's DiagonalGaussianDistribution):
//   split_gaussian_moments: moments (B, 2C, ...) → mean, logvar = clamp(raw logvar, lo, hi), each (B, C, ...);
//   gaussian_sample:        z = mean + exp(logvar/2)·ε (the reparameterization trick);
// and their backwards. The channel split is on axis 1, the first C channels being the mean.
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T, device D>
struct gaussian_moments {
    tensor<T, D> mean;        // (B, C, ...)
    tensor<T, D> logvar;      // (B, C, ...), clamped
    tensor<T, D> raw_logvar;  // (B, C, ...), before the clamp (its gradient mask)
};

namespace detail {
inline tensor_shape half_channels(const char* op, const tensor_shape& moments) {
    if (moments.rank() < 2 || moments[1] % 2 != 0)
        throw shape_error(fmt::format("{}: moments {} must be (B, 2C, ...) with an even channel count", op, moments));
    tensor_shape s = moments;
    s[1] /= 2;
    return s;
}
} // namespace detail

/// moments (B, 2C, ...) → mean = channels [0, C), logvar = channels [C, 2C) clamped to [lo, hi].
template <class T, device D>
gaussian_moments<T, D> split_gaussian_moments(const tensor_view<T, D>& moments, double logvar_min, double logvar_max) {
    const auto s = detail::half_channels("split_gaussian_moments", moments.shape());
    if (!(logvar_min <= logvar_max))
        throw std::invalid_argument(fmt::format("split_gaussian_moments: clamp range [{}, {}] is empty", logvar_min, logvar_max));
    gaussian_moments<T, D> r{tensor<T, D>(s), tensor<T, D>(s), tensor<T, D>(s)};
    posterior_kernels<D>::split(r.mean.data(), r.logvar.data(), r.raw_logvar.data(), moments.data(), s[0], s.prod(1, s.rank()),
                                T(logvar_min), T(logvar_max));
    return r;
}

/// dmoments (B, 2C, ...) from dmean and dlogvar; dlogvar passes only where lo ≤ raw_logvar ≤ hi.
template <class T, device D>
tensor<T, D> split_gaussian_moments_backward(const tensor_view<T, D>& dmean, const tensor_view<T, D>& dlogvar,
                                             const tensor_view<T, D>& raw_logvar, double logvar_min, double logvar_max) {
    require_same_shape("split_gaussian_moments_backward (dmean vs raw_logvar)", dmean, raw_logvar);
    require_same_shape("split_gaussian_moments_backward (dlogvar vs raw_logvar)", dlogvar, raw_logvar);
    if (raw_logvar.rank() < 2)
        throw shape_error(fmt::format("split_gaussian_moments_backward: raw_logvar {} must be (B, C, ...)", raw_logvar.shape()));
    tensor_shape s = raw_logvar.shape();
    s[1] *= 2;
    tensor<T, D> dmoments(s);
    posterior_kernels<D>::split_backward(dmoments.data(), dmean.data(), dlogvar.data(), raw_logvar.data(), s[0],
                                         raw_logvar.shape().prod(1, s.rank()), T(logvar_min), T(logvar_max));
    return dmoments;
}

/// z = mean + exp(logvar/2)·eps, all of one shape.
template <class T, device D>
tensor<T, D> gaussian_sample(const tensor_view<T, D>& mean, const tensor_view<T, D>& logvar, const tensor_view<T, D>& eps) {
    require_same_shape("gaussian_sample (mean vs logvar)", mean, logvar);
    require_same_shape("gaussian_sample (mean vs eps)", mean, eps);
    tensor<T, D> z(mean.shape());
    posterior_kernels<D>::sample(z.data(), mean.data(), logvar.data(), eps.data(), z.numel());
    return z;
}

/// Accumulates the gradients of gaussian_sample: dmean += dz, dlogvar += dz·eps·exp(logvar/2)/2.
template <class T, device D>
void gaussian_sample_backward(const tensor_view<T, D>& dz, const tensor_view<T, D>& logvar, const tensor_view<T, D>& eps,
                              const tensor_view<T, D>& dmean, const tensor_view<T, D>& dlogvar) {
    require_same_shape("gaussian_sample_backward (dz vs logvar)", dz, logvar);
    require_same_shape("gaussian_sample_backward (dz vs eps)", dz, eps);
    require_same_shape("gaussian_sample_backward (dz vs dmean)", dz, dmean);
    require_same_shape("gaussian_sample_backward (dz vs dlogvar)", dz, dlogvar);
    posterior_kernels<D>::sample_backward(dmean.data(), dlogvar.data(), dz.data(), logvar.data(), eps.data(), dz.numel());
}

} // namespace vediff::ops
