#define BOOST_TEST_MODULE adaptive_ode
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/diffusion/adaptive_ode.hpp"
#include "vediff/ops/gemm.hpp"

using namespace vediff;
using namespace vediff::diffusion;
using testing::contains;
using testing::error_message;

namespace {
using dtensor = tensor<double, cpu>;
using dview = tensor_view<double, cpu>;

// dx/dt = a·x + b·t elementwise: x(t) = (x0 + b/a²)·e^{a t} − (b/a)·t − b/a².
constexpr double a_coef = -1.3, b_coef = 2.0;
dtensor affine_field(const dview& x, const dview& t) { return ops::add_scalar(ops::scale(x, a_coef).view(), b_coef * t.at(0)); }
double affine_exact(double x0, double t) {
    const double c = b_coef / (a_coef * a_coef);
    return (x0 + c) * std::exp(a_coef * t) - (b_coef / a_coef) * t - c;
}

const std::vector<double> affine_start = {1.0, -0.5, 2.5, 0.25, -3.0, 0.7};

/// The largest error of dopri5 on the affine ODE from 0 to 1 in units of the tolerance scale.
struct affine_run {
    double max_error = 0, max_scaled_error = 0;
    adaptive_ode_stats stats;
};
affine_run run_affine(double atol, double rtol) {
    const auto x0 = dtensor::from_host({2, 3}, std::span<const double>(affine_start));
    adaptive_ode_config cfg;
    cfg.atol = atol;
    cfg.rtol = rtol;
    auto result = sample_dopri5(affine_field, x0.view(), cfg);
    const auto got = result.sample.to_vector();
    affine_run run;
    run.stats = result.stats;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double exact = affine_exact(affine_start[i], 1.0);
        const double e = std::abs(got[i] - exact);
        run.max_error = std::max(run.max_error, e);
        run.max_scaled_error = std::max(run.max_scaled_error, e / (atol + rtol * std::abs(exact)));
    }
    return run;
}
} // namespace

BOOST_AUTO_TEST_CASE(affine_ode_error_is_within_the_tolerance_scale) {
    for (double rtol : {1e-3, 1e-5, 1e-7}) {
        const auto run = run_affine(rtol * 1e-3, rtol);
        BOOST_TEST_MESSAGE("rtol " << rtol << ": max error " << run.max_error << " (" << run.max_scaled_error
                                   << " tolerances), NFE " << run.stats.function_evaluations);
        BOOST_TEST(run.max_scaled_error < 10.0);
        BOOST_TEST(run.stats.accepted_steps >= 1);
        // 2 calls to choose the first step, then 6 per attempt (the 7th stage is reused).
        BOOST_TEST(run.stats.function_evaluations == 2 + 6 * (run.stats.accepted_steps + run.stats.rejected_steps));
    }
}

BOOST_AUTO_TEST_CASE(function_evaluations_decrease_as_rtol_loosens) {
    std::int64_t previous = std::numeric_limits<std::int64_t>::max();
    for (double rtol : {1e-9, 1e-7, 1e-5, 1e-3}) {
        const auto run = run_affine(1e-12, rtol);
        BOOST_TEST_MESSAGE("rtol " << rtol << ": NFE " << run.stats.function_evaluations);
        BOOST_TEST(run.stats.function_evaluations < previous);
        previous = run.stats.function_evaluations;
    }
}

BOOST_AUTO_TEST_CASE(error_falls_as_the_fifth_power_of_the_work) {
    // A 5th-order method: error ∝ h⁵ ∝ NFE⁻⁵. The slope of log error against log NFE between a
    // loose and a tight tolerance is near −5 (a 4th-order solution would give −4, Euler −1).
    const auto loose = run_affine(1e-14, 1e-5);
    const auto tight = run_affine(1e-14, 1e-10);
    const double slope = std::log(tight.max_error / loose.max_error) /
                         std::log(double(tight.stats.function_evaluations) / double(loose.stats.function_evaluations));
    BOOST_TEST_MESSAGE("error " << loose.max_error << " -> " << tight.max_error << ", NFE "
                                << loose.stats.function_evaluations << " -> " << tight.stats.function_evaluations
                                << ": slope " << slope);
    BOOST_TEST(tight.max_error < loose.max_error * 1e-3);
    BOOST_TEST(slope < -4.5);
    BOOST_TEST(slope > -6.5);
}

BOOST_AUTO_TEST_CASE(linear_field_in_two_dimensions_matches_the_damped_rotation) {
    // dx/dt = A·x with A = [[−λ, −ω], [ω, −λ]]: x(t) = e^{−λt}·R(ωt)·x0, for a batch of points.
    const double lambda = 0.4, omega = 3.0;
    const auto A = dtensor::from_host({2, 2}, {-lambda, -omega, omega, -lambda});
    auto field = [&](const dview& x, const dview&) { return ops::matmul(x, A.view(), false, true); };
    const std::vector<double> start = {1.0, 0.0, -0.5, 2.0, 0.3, -1.2, 4.0, 1.0};
    const auto x0 = dtensor::from_host({4, 2}, std::span<const double>(start));
    adaptive_ode_config cfg;
    cfg.atol = 1e-9;
    cfg.rtol = 1e-7;
    const auto result = sample_dopri5(field, x0.view(), cfg);
    const auto got = result.sample.to_vector();
    const double decay = std::exp(-lambda), c = std::cos(omega), s = std::sin(omega);
    for (std::size_t p = 0; p < 4; ++p) {
        const double u = start[2 * p], w = start[2 * p + 1];
        const double eu = decay * (c * u - s * w), ew = decay * (s * u + c * w);
        BOOST_TEST(std::abs(got[2 * p] - eu) < 10 * (cfg.atol + cfg.rtol * std::abs(eu)));
        BOOST_TEST(std::abs(got[2 * p + 1] - ew) < 10 * (cfg.atol + cfg.rtol * std::abs(ew)));
    }
}

BOOST_AUTO_TEST_CASE(gaussian_flow_matching_field_transports_noise_to_mu_plus_sigma_noise) {
    // Data N(μ, σ²) per coordinate, noise N(0, 1), x_t = t·x1 + (1 − t)·x0: x_t ~ N(tμ, s_t²) with
    // s_t² = (1 − t)² + t²σ², and the marginal velocity is v = μ + (s_t'/s_t)·(x − tμ),
    // s_t'/s_t = (tσ² − (1 − t))/s_t². Its flow maps x0 to tμ + s_t·x0, so x(1) = μ + σ·x0.
    const double mu = 1.5, sigma = 0.3;
    auto field = [&](const dview& x, const dview& t_batch) {
        const double t = t_batch.at(0);
        const double s2 = (1 - t) * (1 - t) + t * t * sigma * sigma;
        const double rate = (t * sigma * sigma - (1 - t)) / s2;
        auto out = ops::add_scalar(x, -t * mu);
        out = ops::scale(out.view(), rate);
        return ops::add_scalar(out.view(), mu);
    };
    const std::vector<double> noise = {0.1, -1.2, 0.8, 2.1, -0.4, 0.0, 1.7, -2.5};
    const auto x0 = dtensor::from_host({2, 1, 2, 2}, std::span<const double>(noise));
    adaptive_ode_config cfg;  // SiT's defaults: atol 1e-6, rtol 1e-3
    const auto result = sample_dopri5(field, x0.view(), cfg);
    const auto got = result.sample.to_vector();
    BOOST_TEST_MESSAGE("NFE at SiT's tolerances: " << result.stats.function_evaluations);
    for (std::size_t i = 0; i < noise.size(); ++i) {
        const double exact = mu + sigma * noise[i];
        BOOST_TEST(std::abs(got[i] - exact) < 10 * (cfg.atol + cfg.rtol * std::abs(exact)));
    }
}

BOOST_AUTO_TEST_CASE(first_step_given_skips_the_selection_call) {
    const auto x0 = dtensor::from_host({1, 2}, {1.0, -1.0});
    adaptive_ode_config cfg;
    cfg.first_step = 0.1;
    const auto result = sample_dopri5(affine_field, x0.view(), cfg);
    BOOST_TEST(result.stats.function_evaluations == 1 + 6 * (result.stats.accepted_steps + result.stats.rejected_steps));
}

BOOST_AUTO_TEST_CASE(invalid_configs_are_named_errors) {
    const auto x0 = dtensor::from_host({1, 2}, {1.0, -1.0});
    auto message_for = [&](adaptive_ode_config cfg) {
        return error_message<std::invalid_argument>([&] { sample_dopri5(affine_field, x0.view(), cfg); });
    };
    adaptive_ode_config c;
    c.atol = 0;
    BOOST_TEST(contains(message_for(c), "atol"));
    c = {};
    c.atol = -1e-6;
    BOOST_TEST(contains(message_for(c), "atol"));
    c = {};
    c.rtol = std::nan("");
    BOOST_TEST(contains(message_for(c), "rtol"));
    c = {};
    c.first_step = -0.1;
    BOOST_TEST(contains(message_for(c), "first_step"));
    c = {};
    c.max_steps = 0;
    BOOST_TEST(contains(message_for(c), "max_steps"));
    const auto interval = error_message<std::invalid_argument>([&] { sample_dopri5(affine_field, x0.view(), {}, 1.0, 0.5); });
    BOOST_TEST(contains(interval, "interval"));
}

BOOST_AUTO_TEST_CASE(a_field_producing_nan_stops_with_a_named_error) {
    const auto x0 = dtensor::from_host({1, 2}, {1.0, -1.0});
    // NaN from the start, and NaN that appears only after t = 0.5 (inside the stepping loop).
    auto always_nan = [](const dview& x, const dview&) { return dtensor::full(x.shape(), std::nan("")); };
    auto nan_later = [](const dview& x, const dview& t) {
        return t.at(0) > 0.5 ? dtensor::full(x.shape(), std::nan("")) : ops::scale(x, -1.0);
    };
    const auto first = error_message<std::runtime_error>([&] { sample_dopri5(always_nan, x0.view(), {}); });
    const auto later = error_message<std::runtime_error>([&] { sample_dopri5(nan_later, x0.view(), {}); });
    BOOST_TEST_MESSAGE(first);
    BOOST_TEST_MESSAGE(later);
    BOOST_TEST(contains(first, "not finite"));
    BOOST_TEST(contains(later, "not finite"));
}

BOOST_AUTO_TEST_CASE(too_few_max_steps_is_a_named_error) {
    const auto x0 = dtensor::from_host({1, 2}, {1.0, -1.0});
    adaptive_ode_config cfg;
    cfg.atol = 1e-12;
    cfg.rtol = 1e-10;
    cfg.max_steps = 3;
    const auto msg = error_message<std::runtime_error>([&] { sample_dopri5(affine_field, x0.view(), cfg); });
    BOOST_TEST(contains(msg, "max_steps"));
}

BOOST_AUTO_TEST_CASE(batch_mates_share_one_error_norm) {
    // The documented choice (as torchdiffeq): one norm over the batch, so a sample's steps depend
    // on its mates. A hard mate (large |x| far from its tolerance floor) changes the NFE.
    const auto alone = dtensor::from_host({1, 2}, {1e-3, -1e-3});
    const auto with_mate = dtensor::from_host({2, 2}, {1e-3, -1e-3, 50.0, -80.0});
    adaptive_ode_config cfg;
    cfg.atol = 1e-3;
    cfg.rtol = 1e-9;
    const auto a = sample_dopri5(affine_field, alone.view(), cfg);
    const auto b = sample_dopri5(affine_field, with_mate.view(), cfg);
    BOOST_TEST(a.stats.function_evaluations != b.stats.function_evaluations);
}

BOOST_AUTO_TEST_CASE(velocity_is_never_evaluated_past_the_end_time) {
    // A slow field on a large state makes the first-step rule's probe h0 = 0.01·d0/d1 huge (~10⁴);
    // the probe and the last step stay inside [0, 1] (torchdiffeq would step past and interpolate).
    double latest = 0;
    auto slow = [&](const dview& x, const dview& t) {
        latest = std::max(latest, t.at(0));
        return ops::scale(x, -1e-6);
    };
    const auto x0 = dtensor::from_host({1, 2}, {1e3, -1e3});
    const auto result = sample_dopri5(slow, x0.view(), {});
    BOOST_TEST(latest <= 1.0);
    BOOST_TEST(std::abs(result.sample.to_vector()[0] - 1e3 * std::exp(-1e-6)) < 1e-3);
}
