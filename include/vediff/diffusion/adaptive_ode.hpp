#pragma once
// An adaptive ODE sampler: Dormand–Prince 5(4) ("dopri5") with absolute and relative tolerances,
// the default ODE sampler of SiT (through torchdiffeq's odeint, atol 1e-6, rtol 1e-3, from t0 = 0
// to t1 = 1 for a velocity model on the linear path). It integrates dx/dt = v(x, t) from the noise
// at t = 0 to the sample at t = 1, as the fixed-grid samplers of samplers.hpp do.
//
// The method, as torchdiffeq's dopri5 defines it:
//  - the Dormand–Prince tableau with the embedded 4th-order weights of Shampine's variant (the
//    error weights below); 7 stages, the last one evaluated at the new point and reused as the
//    first stage of the next step ("first same as last"): 6 calls of v per step attempt;
//  - the error ratio r = RMS over every element of err / (atol + rtol·max(|x_old|, |x_new|));
//    a step is accepted when r ≤ 1;
//  - the next step h·min(10, max(0.9·r^(−1/5), 0.2)), and never a shrink after an accepted step
//    (the lower bound is 1 there); r = 0 grows the step tenfold;
//  - the first step, unless given, from Hairer, Nørsett & Wanner's empirical rule (Solving ODEs I,
//    Sec. II.4), which costs one extra call of v (the first call, v(x0, t0), is reused).
// One difference: torchdiffeq steps past t1 and interpolates back; here the last step is cut to
// land on t1 exactly, so v is never evaluated at t > 1 (outside the times a model was trained on).
//
// The error norm is ONE norm over the whole batch tensor, as torchdiffeq computes it (and SiT uses
// it): every sample of a batch takes the same steps, so a sample depends slightly on its batch
// mates (the hardest sample sets the step size for all). Per-sample step sizes would need per-
// sample times and masking of accepted/rejected samples; matching the reference was chosen instead.
//
// Device-generic: the stages are ops:: calls on tensors. The norm is reduced on the device
// (ops::mean of the squared ratios) and ONE scalar is read back to the host per step attempt to
// decide acceptance; the elementwise |x| and max have no ops:: function yet, so they are formed
// from the sign that ops::abs_error_sum adds into its gradient (each such call also returns its
// sum to the host: two more scalar reads per attempt, whose values are unused).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/loss.hpp"
#include "vediff/ops/reduce.hpp"

namespace vediff::diffusion {

struct adaptive_ode_config {
    double atol = 1e-6;       // SiT's default
    double rtol = 1e-3;       // SiT's default
    double first_step = 0.0;  // 0: chosen by the Hairer–Nørsett–Wanner rule
    int max_steps = 10000;    // step attempts (accepted + rejected) before giving up
};

struct adaptive_ode_stats {
    std::int64_t function_evaluations = 0;  // calls of v, the initial-step selection included
    std::int64_t accepted_steps = 0;
    std::int64_t rejected_steps = 0;
};

template <class T, device D>
struct adaptive_ode_result {
    tensor<T, D> sample;
    adaptive_ode_stats stats;
};

/// Throws std::invalid_argument naming the first invalid field of c.
inline void validate(const adaptive_ode_config& c) {
    auto bad = [](const char* what, double value, const char* need) {
        return std::invalid_argument(fmt::format("dopri5: {} = {} is invalid, need {}", what, value, need));
    };
    if (!(c.atol > 0) || !std::isfinite(c.atol)) throw bad("atol", c.atol, "a finite value > 0");
    if (!(c.rtol >= 0) || !std::isfinite(c.rtol)) throw bad("rtol", c.rtol, "a finite value >= 0");
    if (!(c.first_step >= 0) || !std::isfinite(c.first_step)) throw bad("first_step", c.first_step, "0 (automatic) or a finite value > 0");
    if (c.max_steps < 1) throw bad("max_steps", c.max_steps, "at least 1");
}

namespace dopri5_tableau {
// Nodes c_2..c_7, the stage weights a_ij (row i: the weights of k_1..k_i for stage i+1), the
// 5th-order solution weights b (= the last row of a; b_7 = 0) and the error weights b − b̂.
inline constexpr std::array<double, 6> c = {1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0, 1.0};
inline constexpr std::array<std::array<double, 6>, 6> a = {{
    {1.0 / 5, 0, 0, 0, 0, 0},
    {3.0 / 40, 9.0 / 40, 0, 0, 0, 0},
    {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0},
    {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0},
    {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0},
    {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
}};
inline constexpr std::array<double, 7> error = {
    35.0 / 384 - 1951.0 / 21600, 0, 500.0 / 1113 - 22642.0 / 50085, 125.0 / 192 - 451.0 / 720,
    -2187.0 / 6784 + 12231.0 / 42400, 11.0 / 84 - 649.0 / 6300, -1.0 / 60};
inline constexpr int order = 5;
inline constexpr double safety = 0.9, ifactor = 10.0, dfactor = 0.2;
} // namespace dopri5_tableau

namespace detail {
/// |x| elementwise: x times its sign, the sign taken from abs_error_sum's subgradient (0 at 0).
template <class T, device D>
tensor<T, D> elementwise_abs(const tensor_view<T, D>& x) {
    const auto zero = tensor<T, D>::zeros(x.shape());
    auto sign = tensor<T, D>::zeros(x.shape());
    (void)ops::abs_error_sum(zero.view(), x, sign.view());
    return ops::mul(x, sign.view());
}

/// max(a, b) elementwise, as b + (d + |d|)/2 with d = a − b.
template <class T, device D>
tensor<T, D> elementwise_max(const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    auto d = ops::sub(a, b);
    auto out = elementwise_abs(d.view());
    ops::axpy(out.view(), d.view(), T(1));
    ops::axpby(out.view(), b, T(1), T(0.5));
    return out;
}

/// RMS over every element of x / (atol + rtol·scale): one scalar read back from the device.
template <class T, device D>
double rms_ratio(const tensor_view<T, D>& x, const tensor_view<T, D>& scale, double atol, double rtol) {
    auto tol = ops::scale(scale, T(rtol));
    tol = ops::add_scalar(tol.view(), T(atol));
    auto ratio = ops::div(x, tol.view());
    auto squared = ops::mul(ratio.view(), ratio.view());
    const auto mean = ops::mean(squared.view()).to_vector();
    return std::sqrt(static_cast<double>(mean[0]));
}
} // namespace detail

/// x(t1) from the noise x0 (B, ...) along dx/dt = v(x, t), with dopri5 under cfg's tolerances.
/// Throws std::invalid_argument for a bad config or interval, std::runtime_error when v yields
/// a non-finite value, the step size underflows, or max_steps attempts do not reach t1.
template <class T, device D, class Velocity>
adaptive_ode_result<T, D> sample_dopri5(Velocity&& v, const tensor_view<T, D>& x0, const adaptive_ode_config& cfg,
                                        double t0 = 0.0, double t1 = 1.0) {
    namespace tab = dopri5_tableau;
    validate(cfg);
    if (x0.rank() < 1 || x0.empty()) throw shape_error(fmt::format("dopri5: noise of shape {} is empty", x0.shape()));
    if (!(t1 > t0) || !std::isfinite(t0) || !std::isfinite(t1))
        throw std::invalid_argument(fmt::format("dopri5: the interval [{}, {}] must be finite and increasing", t0, t1));

    adaptive_ode_stats stats;
    auto call = [&](const tensor_view<T, D>& x, double t) {
        ++stats.function_evaluations;
        return detail::evaluate_velocity(v, x, t);
    };
    auto non_finite = [&](const char* what, double t) {
        return std::runtime_error(fmt::format("dopri5: {} is not finite at t = {} (the velocity field produced NaN or inf)", what, t));
    };

    auto x = tensor<T, D>::copy_of(x0);
    auto f = call(x.view(), t0);
    auto abs_x = detail::elementwise_abs(x.view());

    double h = cfg.first_step;
    if (h == 0) {  // Hairer–Nørsett–Wanner: a step whose Euler error is about 1% of the tolerance
        const double d0 = detail::rms_ratio(x.view(), abs_x.view(), cfg.atol, cfg.rtol);
        const double d1 = detail::rms_ratio(f.view(), abs_x.view(), cfg.atol, cfg.rtol);
        if (!std::isfinite(d0)) throw non_finite("the initial state", t0);
        if (!std::isfinite(d1)) throw non_finite("the velocity", t0);
        // The probe stays inside [t0, t1] (torchdiffeq does not cut it; v is not evaluated past t1 here).
        const double h0 = std::min((d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1, t1 - t0);
        auto x_probe = tensor<T, D>::copy_of(x.view());
        ops::axpy(x_probe.view(), f.view(), T(h0));
        const auto f_probe = call(x_probe.view(), t0 + h0);
        const auto df = ops::sub(f_probe.view(), f.view());
        const double d2 = detail::rms_ratio(df.view(), abs_x.view(), cfg.atol, cfg.rtol) / h0;
        if (!std::isfinite(d2)) throw non_finite("the velocity", t0 + h0);
        // The error estimate is 4th order, so the rule's exponent is 1/(4 + 1), as torchdiffeq's.
        const double h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? std::max(1e-6, h0 * 1e-3)
                                                       : std::pow(0.01 / std::max(d1, d2), 1.0 / tab::order);
        h = std::min(100 * h0, h1);
    }

    double t = t0;
    std::array<tensor<T, D>, 7> k;
    int attempts = 0;
    while (t < t1) {
        if (attempts++ >= cfg.max_steps)
            throw std::runtime_error(fmt::format("dopri5: max_steps = {} step attempts did not reach t = {} (at t = {}, step {})",
                                                 cfg.max_steps, t1, t, h));
        const double step = std::min(h, t1 - t);
        if (!(t + step > t)) throw std::runtime_error(fmt::format("dopri5: the step size {} underflows at t = {}", step, t));

        k[0] = tensor<T, D>::copy_of(f.view());
        tensor<T, D> x_new;
        for (std::size_t i = 0; i < 6; ++i) {
            auto stage = tensor<T, D>::copy_of(x.view());
            for (std::size_t j = 0; j <= i; ++j)
                if (tab::a[i][j] != 0) ops::axpy(stage.view(), k[j].view(), T(step * tab::a[i][j]));
            const double ti = (i == 5) ? t + step : t + tab::c[i] * step;
            k[i + 1] = call(stage.view(), ti);
            if (i == 5) x_new = std::move(stage);  // the last stage's point is the 5th-order solution
        }
        auto err = tensor<T, D>::zeros(x.shape());
        for (std::size_t j = 0; j < 7; ++j)
            if (tab::error[j] != 0) ops::axpy(err.view(), k[j].view(), T(step * tab::error[j]));

        auto abs_new = detail::elementwise_abs(x_new.view());
        const auto scale = detail::elementwise_max(abs_x.view(), abs_new.view());
        const double ratio = detail::rms_ratio(err.view(), scale.view(), cfg.atol, cfg.rtol);
        if (std::isnan(ratio)) throw non_finite("the error estimate", t + step);

        const bool accept = ratio <= 1;
        double factor = tab::ifactor;
        if (ratio > 0) {
            const double lower = accept ? 1.0 : tab::dfactor;
            factor = std::min(tab::ifactor, std::max(tab::safety / std::pow(ratio, 1.0 / tab::order), lower));
        }
        h = step * factor;
        if (accept) {
            ++stats.accepted_steps;
            t = (step == t1 - t) ? t1 : t + step;
            x = std::move(x_new);
            abs_x = std::move(abs_new);
            f = std::move(k[6]);
        } else {
            ++stats.rejected_steps;
        }
    }
    return {std::move(x), stats};
}

} // namespace vediff::diffusion
