#pragma once
// The decoder's sensitivity to each latent element, T_i = ‖∂x/∂z_i‖² = (JᵀJ)_ii for the Jacobian
// J = ∂decode(z)/∂z of one sample (pixels × latent elements): the quantity the Variance Expansion
// equilibrium σ = (λ1/T)^¼ is written in (loss/variance_expansion.hpp, metrics/sensitivity_equilibrium.hpp).
//
// Hutchinson's estimator through exact vector–Jacobian products: for a probe v in image space
// with E[v vᵀ] = I, u = Jᵀv has E[u_i²] = Σ_j J_ji² = T_i, and E[‖u‖²] = tr(J Jᵀ) = Σ_i T_i. The
// estimate of T_i is the mean of u_i² over the probes. Rademacher probes (±1) have the smaller
// variance, Var(u_i²) = 2·(T_i² − Σ_j J_ji⁴) against 2·T_i² for N(0, I) probes, and estimate the
// trace exactly when J Jᵀ is diagonal. u is one backward pass of the decoder (for
// models::autoencoder_kl, decode(z) then decode_backward(v)), so the cost is one forward per batch
// and one backward per probe, never a Jacobian.
//
// Each sample's probes are reserved up front (per_sample_draws), so the estimates do not depend
// on the batch size.
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/metrics/per_sample_draws.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::metrics {

enum class probe_distribution { rademacher, normal };

struct sensitivity_options {
    std::int64_t probes = 32;                                // vector–Jacobian products per latent
    probe_distribution probe = probe_distribution::rademacher;
    std::int64_t batch_size = 16;                            // latents decoded at once
};

/// A decoder with a backward: decode(z) caches what decode_backward(dx) needs to return dz.
template <class M>
concept differentiable_decoder = requires(M& m, const tensor_view<typename M::value_type, typename M::device_type>& t) {
    { m.decode(t) } -> std::same_as<tensor<typename M::value_type, typename M::device_type>>;
    { m.decode_backward(t) } -> std::same_as<tensor<typename M::value_type, typename M::device_type>>;
};

namespace detail {

template <class T, device D>
void require_latents(const char* op, const tensor_view<T, D>& latents, const sensitivity_options& opt) {
    if (latents.rank() < 2 || latents.dim(0) < 1 || latents.numel() == 0)
        throw shape_error(fmt::format("{}: latents must be a non-empty batch (N, C, ...), got shape {}", op, latents.shape()));
    if (opt.probes < 1 || opt.batch_size < 1)
        throw std::invalid_argument(fmt::format("{}: probes {} and batch size {} must be positive", op, opt.probes, opt.batch_size));
}

/// Probes (B, ...) for samples [first, first + B): probe `p` of each sample from its own draws.
template <class T, device D>
tensor<T, D> probe_batch(const tensor_shape& shape, const per_sample_draws& draws, std::int64_t first, std::int64_t p, probe_distribution kind) {
    tensor<T, D> v(shape);
    for (std::int64_t i = 0; i < shape[0]; ++i) {
        auto g = draws(first + i, p);
        if (kind == probe_distribution::normal) ops::fill_normal(v[i], g);
        else ops::fill_bernoulli(v[i], g, 0.5, T(2));  // {0, 2}, shifted to {−1, +1} below
    }
    if (kind == probe_distribution::rademacher) return ops::add_scalar(v.view(), T(-1));
    return v;
}

/// The estimator's loop: for each batch, vjp_of_batch(z, first) returns a callable v → Jᵀv and the
/// image shape of the batch; the squared products are averaged over the probes.
template <class T, device D, class Start>
tensor<T, D> hutchinson(const tensor_view<T, D>& latents, philox_generator& gen, const sensitivity_options& opt,
                        const tensor_shape& sample_image_shape, Start&& start_batch) {
    const std::int64_t n = latents.dim(0), per_sample = latents.numel() / n;
    const per_sample_draws draws(gen, n, sample_image_shape.numel(), opt.probes);
    std::vector<double> sum(static_cast<std::size_t>(latents.numel()), 0.0);
    for (std::int64_t first = 0; first < n; first += opt.batch_size) {
        const std::int64_t last = std::min(n, first + opt.batch_size);
        const auto z = latents.slice(first, last);
        auto vjp = start_batch(z);
        tensor_shape image_shape{last - first};
        for (auto d : sample_image_shape) image_shape.push_back(d);
        for (std::int64_t p = 0; p < opt.probes; ++p) {
            const auto v = probe_batch<T, D>(image_shape, draws, first, p, opt.probe);
            const tensor<T, D> u = vjp(v.view());
            if (!(u.shape() == z.shape()))
                throw shape_error(fmt::format("decoder_sensitivity: the vector–Jacobian product of latents {} and probes {} has shape {}",
                                              z.shape(), v.shape(), u.shape()));
            const auto host = u.to_vector();
            double* out = sum.data() + first * per_sample;
            for (std::size_t k = 0; k < host.size(); ++k) out[k] += double(host[k]) * double(host[k]);
        }
    }
    std::vector<T> mean(sum.size());
    for (std::size_t k = 0; k < sum.size(); ++k) mean[k] = static_cast<T>(sum[k] / double(opt.probes));
    return tensor<T, D>::from_host(latents.shape(), std::span<const T>(mean));
}

} // namespace detail

/// Hutchinson estimates of T_i, shaped like latents (N, C, ...), from a vector–Jacobian product
/// vjp(z, v) → Jᵀv (z (B, C, ...), v (B, sample_image_shape...), result shaped like z).
/// Advances gen by opt.probes probes of sample_image_shape per latent.
template <class VJP, class T, device D>
    requires std::invocable<VJP&, const tensor_view<T, D>&, const tensor_view<T, D>&>
tensor<T, D> decoder_sensitivity(VJP&& vjp, const tensor_view<T, D>& latents, const tensor_shape& sample_image_shape, philox_generator& gen,
                                 const sensitivity_options& opt = {}) {
    detail::require_latents("decoder_sensitivity", latents, opt);
    if (sample_image_shape.rank() < 1 || sample_image_shape.rank() >= max_rank || sample_image_shape.numel() == 0)
        throw shape_error(fmt::format("decoder_sensitivity: the image shape of one sample {} must be non-empty with rank 1 to {}",
                                      sample_image_shape, max_rank - 1));
    return detail::hutchinson(latents, gen, opt, sample_image_shape, [&](const tensor_view<T, D>& z) {
        return [&vjp, z](const tensor_view<T, D>& v) { return vjp(z, v); };
    });
}

/// The same through a decoder object (e.g. models::autoencoder_kl): one decode per batch, then one
/// decode_backward per probe, under nn::retain_graph. decode_backward accumulates the decoder's parameter gradients as in
/// training; zero them afterwards (nn::zero_grad) if the model trains on.
template <differentiable_decoder M, class T, device D>
    requires std::same_as<T, typename M::value_type> && std::same_as<D, typename M::device_type>
tensor<T, D> decoder_sensitivity(M& decoder, const tensor_view<T, D>& latents, philox_generator& gen, const sensitivity_options& opt = {}) {
    detail::require_latents("decoder_sensitivity", latents, opt);
    // The image shape of one sample, from decoding the first latent.
    const auto first_image = decoder.decode(latents.slice(0, 1));
    const tensor_shape sample_image_shape = first_image.shape().drop_front();
    return detail::hutchinson(latents, gen, opt, sample_image_shape, [&](const tensor_view<T, D>& z) {
        (void)decoder.decode(z);  // caches the activations every decode_backward of this batch uses
        return [&decoder](const tensor_view<T, D>& v) {
            nn::retain_graph keep;  // several backward passes of one forward: none releases what it kept
            return decoder.decode_backward(v);
        };
    });
}

/// Σ_i T_i over each sample's latent elements: the estimate of tr(J Jᵀ) per sample.
template <class T, device D>
std::vector<double> sensitivity_trace_per_sample(const tensor_view<T, D>& sensitivity) {
    if (sensitivity.rank() < 1 || sensitivity.dim(0) < 1)
        throw shape_error(fmt::format("sensitivity_trace_per_sample: expected a batch (N, ...), got shape {}", sensitivity.shape()));
    const auto host = sensitivity.to_vector();
    const std::int64_t n = sensitivity.dim(0), per_sample = sensitivity.numel() / n;
    std::vector<double> trace(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t k = 0; k < per_sample; ++k) trace[static_cast<std::size_t>(i)] += double(host[static_cast<std::size_t>(i * per_sample + k)]);
    return trace;
}

} // namespace vediff::metrics
