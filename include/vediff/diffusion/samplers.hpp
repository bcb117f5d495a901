#pragma once
// Samplers of the linear flow-matching path (flow_matching.hpp: t = 0 noise, t = 1 data): they
// carry noise x0 at t = 0 to a sample x1 at t = 1 along a velocity field v(x, t).
//
// ODE, dx/dt = v(x, t), on the grid t_i = shift(i/steps), i = 0..steps (linspace(0, 1, steps + 1)
// warped by the time shift of flow_matching.hpp; 1 = no shift):
//   euler  x ← x + h·v(x, t_i)                                              (first order, 1 call/step)
//   heun   x̃ = x + h·v(x, t_i);  x ← x + h/2·(v(x, t_i) + v(x̃, t_i+1))      (second order, 2 calls/step)
// LightningDiT samples with Euler on linspace(0, 1, 250), which is steps = 249 here.
//
// SDE (SiT's sampler), Euler–Maruyama for
//     dx = [v + w(t)·s] dt + √(2·w(t)) dW,   s = (t·v − x)/(1 − t),   w(t) = 1 − t,
// s being the score ∇ log p_t(x) recovered from the velocity on the linear path, and w(t) = 1 − t
// SiT's default diffusion coefficient ("sigma" form, σ_t = 1 − t): it injects the most noise near
// t = 0 and none at t = 1. Any w keeps the path's marginals exact in continuous time. The grid is
// linspace(0, 1 − Δ, steps) (steps − 1 noisy steps; Δ = last_step_size = 0.04, which keeps 1 − t
// away from 0 in the score), then a last noise-free step x ← x + Δ·drift to t = 1: `steps` calls
// of v in all. The time shift is not applied to this grid (the last step's size would change with
// it); a shift other than 1 is an error here.
//
// The velocity function is any callable v(x, t) with x (B, ...) and t (B) views returning a tensor
// shaped like x; classifier-free guidance composes by wrapping (guidance.hpp). The SDE's noise
// comes from a step-noise source, noise(out, step), which fills out (B, ...) with the batch's
// noise of noisy step `step`; diffusion/sampling_noise.hpp's source draws it per sample, so a
// sample is the same whatever batch it is drawn in and with any thread count.
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/metrics/per_sample_draws.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::diffusion {

/// The type-erased form of a sampler's velocity function.
template <class T, device D = cpu>
using velocity_function = std::function<tensor<T, D>(const tensor_view<T, D>&, const tensor_view<T, D>&)>;

enum class sampler_kind { euler, heun, euler_maruyama };

struct sampler_config {
    sampler_kind kind = sampler_kind::euler;
    int steps = 250;              // ODE: steps of the grid; SDE: points of the noisy grid = calls of v
    double time_shift = 1.0;      // ODE grid only
    double last_step_size = 0.04; // SDE only: Δ
};

/// The ODE grid shift(linspace(0, 1, steps + 1)); its ends are exactly 0 and 1.
inline std::vector<double> ode_time_grid(int steps, double time_shift = 1.0) {
    if (steps < 1) throw std::invalid_argument(fmt::format("ode_time_grid: {} steps, need at least 1", steps));
    std::vector<double> grid(static_cast<std::size_t>(steps) + 1);
    for (int i = 0; i <= steps; ++i) grid[static_cast<std::size_t>(i)] = shift_time(double(i) / double(steps), time_shift);
    grid.back() = 1.0;
    return grid;
}

/// The SDE grid linspace(0, 1 − Δ, steps) followed by 1 (the end of the noise-free last step).
inline std::vector<double> sde_time_grid(int steps, double last_step_size = 0.04) {
    if (steps < 2) throw std::invalid_argument(fmt::format("sde_time_grid: {} steps, need at least 2", steps));
    if (!(last_step_size > 0 && last_step_size < 1))
        throw std::invalid_argument(fmt::format("sde_time_grid: last step size {} is outside (0, 1)", last_step_size));
    std::vector<double> grid(static_cast<std::size_t>(steps) + 1);
    const double end = 1.0 - last_step_size;
    for (int i = 0; i < steps; ++i) grid[static_cast<std::size_t>(i)] = end * double(i) / double(steps - 1);
    grid.back() = 1.0;
    return grid;
}

/// The noisy steps of a sampler: those that draw noise (steps − 1 for the SDE, none for the ODEs).
inline int noisy_steps(const sampler_config& cfg) { return cfg.kind == sampler_kind::euler_maruyama ? cfg.steps - 1 : 0; }

/// A step-noise source: noise(out, step) fills out (B, ...) with N(0, I) noise of noisy step `step`.
template <class Noise, class T, class D>  // D a device (a concept's parameters cannot be constrained)
concept step_noise_source = std::invocable<Noise&, const tensor_view<T, D>&, int>;

namespace detail {
template <class T, device D, class Velocity>
tensor<T, D> evaluate_velocity(Velocity& v, const tensor_view<T, D>& x, double t) {
    const auto times = tensor<T, D>::full(tensor_shape{x.dim(0)}, T(t));
    tensor<T, D> out = v(x, times.view());
    if (!(out.shape() == x.shape()))
        throw shape_error(fmt::format("sample: the velocity function returned shape {} for x {}", out.shape(), x.shape()));
    return out;
}

/// The SDE drift v + w·s with s = (t·v − x)/(1 − t) and w = 1 − t, formed in place in v.
template <class T, device D>
void sde_drift_in_place(const tensor_view<T, D>& v, const tensor_view<T, D>& x, double t) {
    const double w = 1.0 - t;
    auto score = ops::scale(v, T(t / (1.0 - t)));
    ops::axpy(score.view(), x, T(-1.0 / (1.0 - t)));
    ops::axpy(v, score.view(), T(w));
}
} // namespace detail

/// x1 from the noise x0 (B, ...) along v(x, t); noise supplies the SDE's step noise (unused by the ODEs).
template <class T, device D, class Velocity, class Noise>
    requires step_noise_source<Noise, T, D>
tensor<T, D> sample(Velocity&& v, const tensor_view<T, D>& x0, const sampler_config& cfg, Noise&& noise) {
    if (x0.rank() < 1 || x0.empty()) throw shape_error(fmt::format("sample: noise of shape {} is empty", x0.shape()));
    auto x = tensor<T, D>::copy_of(x0);
    if (cfg.kind == sampler_kind::euler_maruyama) {
        if (cfg.time_shift != 1.0)
            throw std::invalid_argument(fmt::format("sample: time shift {} is for the ODE samplers; the SDE grid is fixed",
                                                    cfg.time_shift));
        const auto grid = sde_time_grid(cfg.steps, cfg.last_step_size);
        auto step_noise = tensor<T, D>(x.shape());
        for (std::size_t i = 0; i + 1 < grid.size(); ++i) {
            const double t = grid[i], dt = grid[i + 1] - t;
            auto drift = detail::evaluate_velocity(v, x.view(), t);
            detail::sde_drift_in_place(drift.view(), x.view(), t);
            ops::axpy(x.view(), drift.view(), T(dt));
            if (i + 2 == grid.size()) break;  // the last step to t = 1 is noise-free
            noise(step_noise.view(), static_cast<int>(i));
            ops::axpy(x.view(), step_noise.view(), T(std::sqrt(2.0 * (1.0 - t) * dt)));
        }
        return x;
    }
    const auto grid = ode_time_grid(cfg.steps, cfg.time_shift);
    for (std::size_t i = 0; i + 1 < grid.size(); ++i) {
        const double t = grid[i], h = grid[i + 1] - t;
        auto v1 = detail::evaluate_velocity(v, x.view(), t);
        if (cfg.kind == sampler_kind::euler) {
            ops::axpy(x.view(), v1.view(), T(h));
            continue;
        }
        auto predicted = tensor<T, D>::copy_of(x.view());
        ops::axpy(predicted.view(), v1.view(), T(h));
        auto v2 = detail::evaluate_velocity(v, predicted.view(), grid[i + 1]);
        ops::axpy(x.view(), v1.view(), T(h / 2));
        ops::axpy(x.view(), v2.view(), T(h / 2));
    }
    return x;
}

/// The SDE's noise from gen, drawn per sample of this call: the blocks of all B samples' noisy
/// steps are reserved up front (metrics::per_sample_draws), sample b's step-i noise at its own
/// block. A job that samples in batches uses sampling_noise.hpp instead, whose samples are those
/// of the whole run, not of one call.
template <class T, device D, class Velocity>
tensor<T, D> sample(Velocity&& v, const tensor_view<T, D>& x0, const sampler_config& cfg, philox_generator& gen) {
    if (x0.rank() < 1 || x0.empty()) throw shape_error(fmt::format("sample: noise of shape {} is empty", x0.shape()));
    const std::int64_t batch = x0.dim(0);
    const metrics::per_sample_draws draws(gen, batch, x0.numel() / batch, std::max(noisy_steps(cfg), 0));
    return sample(std::forward<Velocity>(v), x0, cfg, [&draws](const tensor_view<T, D>& out, int step) {
        for (std::int64_t b = 0; b < out.dim(0); ++b) {
            auto g = draws(b, step);
            ops::fill_normal(out[b], g);
        }
    });
}

/// The ODE samplers need no generator.
template <class T, device D, class Velocity>
tensor<T, D> sample(Velocity&& v, const tensor_view<T, D>& x0, const sampler_config& cfg) {
    if (cfg.kind == sampler_kind::euler_maruyama)
        throw std::invalid_argument("sample: the Euler–Maruyama sampler needs a source of noise");
    return sample(std::forward<Velocity>(v), x0, cfg, [](const tensor_view<T, D>&, int) {});
}

} // namespace vediff::diffusion
