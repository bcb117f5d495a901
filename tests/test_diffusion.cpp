#define BOOST_TEST_MODULE diffusion
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "support/threads.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/guidance.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/diffusion/sampling_noise.hpp"
#include "vediff/ops/random.hpp"

using namespace vediff;
using namespace vediff::diffusion;
using namespace vediff::testing;

namespace {

// ---------------------------------------------------------------------------------------------
// The closed-form problem: data x1 ~ N(m_c, s_c²) independently per element (m, s chosen by the
// element's channel c), noise x0 ~ N(0, 1). On the linear path x_t ~ N(t·m, a) with
// a = t²s² + (1 − t)², and the exact velocity E[x1 − x0 | x_t = x] is affine in x:
//     v(x, t) = m + (x − t·m)·(t·s² − (1 − t))/a.
// Its ODE flow is x_t = t·m + √a(t)·x0, so the exact ODE sample of noise x0 is x1 = m + s·x0.
struct gaussian_target {
    std::vector<double> m, s;  // per channel

    double velocity(double x, double t, std::size_t c) const {
        const double a = t * t * s[c] * s[c] + (1 - t) * (1 - t);
        return m[c] + (x - t * m[c]) * (t * s[c] * s[c] - (1 - t)) / a;
    }
    double exact_sample(double x0, std::size_t c) const { return m[c] + s[c] * x0; }

    /// The velocity function the samplers take: x (B, C, ...), t (B).
    template <class T>
    tensor<T, cpu> operator()(const tensor_view<T, cpu>& x, const tensor_view<T, cpu>& t) const {
        auto out = tensor<T, cpu>::empty(x.shape());
        const std::int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / (B * C);
        for (std::int64_t i = 0; i < x.numel(); ++i) {
            const auto b = i / (C * S);
            const auto c = static_cast<std::size_t>((i / S) % C);
            out.data()[i] = T(velocity(double(x.data()[i]), double(t.data()[b]), c));
        }
        return out;
    }
};

struct channel_stats {
    std::vector<double> mean, var;  // var unbiased
};

template <class T>
channel_stats stats_per_channel(const tensor_view<T, cpu>& x) {
    const std::int64_t B = x.dim(0), C = x.dim(1), S = x.numel() / (B * C);
    channel_stats r{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
    const double n = double(B * S);
    for (std::int64_t i = 0; i < x.numel(); ++i) r.mean[(i / S) % C] += double(x.data()[i]) / n;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
        const double d = double(x.data()[i]) - r.mean[(i / S) % C];
        r.var[(i / S) % C] += d * d / (n - 1);
    }
    return r;
}

/// max over elements of |x1 − (m + s·x0)|/s: the distance from the exact ODE solution, in units
/// of the target's standard deviation.
template <class T>
double max_error_to_exact(const gaussian_target& g, const tensor_view<T, cpu>& x1, const tensor_view<T, cpu>& x0) {
    const std::int64_t C = x1.dim(1), S = x1.numel() / (x1.dim(0) * C);
    double worst = 0;
    for (std::int64_t i = 0; i < x1.numel(); ++i) {
        const auto c = static_cast<std::size_t>((i / S) % C);
        worst = std::max(worst, std::abs(double(x1.data()[i]) - g.exact_sample(double(x0.data()[i]), c)) / g.s[c]);
    }
    return worst;
}

template <class T>
bool bitwise_equal(const tensor_view<T, cpu>& a, const tensor_view<T, cpu>& b) {
    return a.shape() == b.shape() && std::equal(a.span().begin(), a.span().end(), b.span().begin());
}

} // namespace

// =============================================================================================
BOOST_AUTO_TEST_SUITE(ode_samplers)

// (a) 20,000 elements, 5,000 per channel. Two checks per channel:
//   - against the population N(m, s²): the sample mean's standard error is s/√n and the variance's
//     relative standard error √(2/(n − 1)), so 4 standard errors (a false alarm about once in
//     16,000 runs; the draws are fixed by the seed anyway) plus the discretization error;
//   - against the exact ODE sample m + s·x0 of the *same* noise, which removes the sampling error
//     and leaves only the integrator's, measured in units of s: Euler (400 steps, O(h)) 0.045 and
//     Heun (100 steps, O(h²)) 0.0049, both on the stiffest channel (s = 0.1, where the velocity's
//     slope reaches about 1/s near t = 1); the bounds 0.06 and 0.007 leave ~40% margin. The
//     orders themselves are tested below.
BOOST_AUTO_TEST_CASE(euler_and_heun_reproduce_the_target_distribution) {
    const gaussian_target g{{0.5, -1.0, 2.0, 0.0}, {0.3, 1.5, 0.1, 1.0}};
    philox_generator gen{.seed = 11};
    const auto x0 = ops::normal<double>({50, 4, 10, 10}, gen);
    const double n = 5000;
    struct run {
        sampler_kind kind;
        int steps;
        double per_element_tolerance;
    };
    for (const run r : {run{sampler_kind::euler, 400, 0.06}, run{sampler_kind::heun, 100, 0.007}}) {
        const auto x1 = sample(g, x0.view(), sampler_config{.kind = r.kind, .steps = r.steps});
        const double err = max_error_to_exact(g, x1.view(), x0.view());
        BOOST_TEST_MESSAGE("sampler " << int(r.kind) << ", " << r.steps << " steps: max |x1 − (m + s·x0)|/s = " << err);
        BOOST_TEST(err < r.per_element_tolerance);
        const auto st = stats_per_channel(x1.view());
        for (std::size_t c = 0; c < 4; ++c) {
            BOOST_TEST_CONTEXT("sampler " << int(r.kind) << " channel " << c) {
                const double eps = r.per_element_tolerance;  // |x1 − exact| <= eps·s moves the variance by <= 2eps + eps²
                BOOST_TEST(std::abs(st.mean[c] - g.m[c]) < 4 * g.s[c] / std::sqrt(n) + eps * g.s[c]);
                BOOST_TEST(std::abs(st.var[c] / (g.s[c] * g.s[c]) - 1) < 4 * std::sqrt(2 / (n - 1)) + 2 * eps + eps * eps);
            }
        }
    }
}

// (c) Terminal error on one deterministic trajectory against the exact ODE solution m + s·x0, as
// the steps double: first order halves it (ratio 2), second order quarters it (ratio 4). The
// ratios are asymptotic; with 32 → 64 → 128 steps they are within 10% of 2 and 4.
BOOST_AUTO_TEST_CASE(euler_is_first_order_and_heun_second_order) {
    const gaussian_target g{{0.5, -1.0, 2.0, 0.0}, {0.7, 1.5, 0.4, 1.0}};
    const auto x0 = tensor<double, cpu>::from_host({1, 4, 1, 1}, {1.3, -0.7, 0.4, 2.0});
    auto error = [&](sampler_kind kind, int steps, double shift) {
        const auto x1 = sample(g, x0.view(), sampler_config{.kind = kind, .steps = steps, .time_shift = shift});
        return max_error_to_exact(g, x1.view(), x0.view());
    };
    struct expectation {
        sampler_kind kind;
        double shift, order_ratio;
    };
    for (const expectation e : {expectation{sampler_kind::euler, 1.0, 2.0}, expectation{sampler_kind::heun, 1.0, 4.0},
                                expectation{sampler_kind::euler, 0.3, 2.0}, expectation{sampler_kind::heun, 0.3, 4.0}}) {
        const double e32 = error(e.kind, 32, e.shift), e64 = error(e.kind, 64, e.shift), e128 = error(e.kind, 128, e.shift);
        BOOST_TEST_MESSAGE("sampler " << int(e.kind) << " shift " << e.shift << ": errors " << e32 << ", " << e64 << ", "
                                      << e128 << "; ratios " << e32 / e64 << ", " << e64 / e128);
        BOOST_TEST_CONTEXT("sampler " << int(e.kind) << " shift " << e.shift) {
            BOOST_TEST(std::abs(e32 / e64 / e.order_ratio - 1) < 0.1);
            BOOST_TEST(std::abs(e64 / e128 / e.order_ratio - 1) < 0.1);
        }
    }
}

BOOST_AUTO_TEST_CASE(time_grids) {
    const auto plain = ode_time_grid(4);
    BOOST_TEST(plain == (std::vector<double>{0, 0.25, 0.5, 0.75, 1}), boost::test_tools::per_element());
    const auto shifted = ode_time_grid(4, 0.3);
    BOOST_TEST(shifted.front() == 0.0);
    BOOST_TEST(shifted.back() == 1.0);
    BOOST_TEST(shifted[2] == 0.15 / 0.65, boost::test_tools::tolerance(1e-15));
    const auto sde = sde_time_grid(5, 0.04);
    BOOST_TEST(sde == (std::vector<double>{0, 0.24, 0.48, 0.72, 0.96, 1}), boost::test_tools::per_element());
    BOOST_CHECK_THROW(ode_time_grid(0), std::invalid_argument);
    BOOST_CHECK_THROW(sde_time_grid(1), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(velocity_shape_mismatch_is_reported) {
    const auto x0 = tensor<double, cpu>::zeros({2, 3});
    auto wrong = [](const tensor_view<double, cpu>&, const tensor_view<double, cpu>&) { return tensor<double, cpu>::zeros({2, 2}); };
    const auto msg = shape_error_message([&] { sample(wrong, x0.view(), sampler_config{.steps = 2}); });
    BOOST_TEST(contains(msg, "(2, 2)"), msg);
    BOOST_TEST(contains(msg, "(2, 3)"), msg);
}

BOOST_AUTO_TEST_SUITE_END()

// =============================================================================================
BOOST_AUTO_TEST_SUITE(sde_sampler)

// (b) Euler–Maruyama with SiT's grid. The SDE keeps the marginals of the path, but the last step
// is a noise-free Euler step of Δ = 0.04 with the SDE drift (1 + t)·v − x, which maps
// d = x − t·m to d·(1 + Δ·((1 + t)·k − 1)), k = (t·s² − (1 − t))/a at t = 1 − Δ. So the samples
// should be N(m, σ²) with σ = √a(1 − Δ)·|1 + Δ((1 + t)k − 1)| (within 1–2% of s for these s; for
// small s the step is far off, e.g. s = 0.1 gives σ = 0.077). Tolerances: 4 standard errors of
// the mean (σ/√n) and of the std (relative 1/√(2n)), plus 1% for the Euler–Maruyama bias of the
// 249 noisy steps (O(h), h = 0.0039, on an Ornstein–Uhlenbeck-like rate of order 1).
BOOST_AUTO_TEST_CASE(euler_maruyama_reproduces_the_target_distribution) {
    const gaussian_target g{{0.5, -1.0, 2.0, 0.0}, {0.5, 1.5, 0.8, 1.0}};
    philox_generator gen{.seed = 5};
    const auto x0 = ops::normal<double>({250, 4, 10, 10}, gen);  // 25,000 per channel
    const double n = 25000, delta = 0.04;
    const auto x1 = sample(g, x0.view(), sampler_config{.kind = sampler_kind::euler_maruyama, .steps = 250}, gen);
    const auto st = stats_per_channel(x1.view());
    for (std::size_t c = 0; c < 4; ++c) {
        const double t = 1 - delta, s2 = g.s[c] * g.s[c], a = t * t * s2 + (1 - t) * (1 - t);
        const double k = (t * s2 - (1 - t)) / a;
        const double sigma = std::sqrt(a) * std::abs(1 + delta * ((1 + t) * k - 1));
        BOOST_TEST_MESSAGE("channel " << c << ": mean " << st.mean[c] << " (m " << g.m[c] << "), std " << std::sqrt(st.var[c])
                                      << " (predicted " << sigma << ", s " << g.s[c] << ")");
        BOOST_TEST_CONTEXT("channel " << c) {
            BOOST_TEST(std::abs(st.mean[c] - g.m[c]) < 4 * sigma / std::sqrt(n) + 0.01 * g.s[c]);
            BOOST_TEST(std::abs(std::sqrt(st.var[c]) / sigma - 1) < 4 / std::sqrt(2 * n) + 0.01);
            // The property the name claims: the samples' spread is the target's, within the 2% the
            // discretization leaves (σ above) and 4 standard errors.
            BOOST_TEST(std::abs(std::sqrt(st.var[c]) / g.s[c] - 1) < 0.02 + 4 / std::sqrt(2 * n));
        }
    }
}

// (e) The same seed gives bit-identical samples with 1 and 2 threads (131,072 elements, above
// the backend's grain size, so two threads really split the work); another seed does not.
BOOST_AUTO_TEST_CASE(same_seed_same_samples_for_any_thread_count) {
    const gaussian_target g{{0.5, -1.0, 2.0, 0.0}, {0.5, 1.5, 0.8, 1.0}};
    auto run = [&](int threads, std::uint64_t seed, sampler_kind kind) {
        return with_threads(threads, [&] {
            philox_generator gen{.seed = seed, .stream = 3};
            auto x0 = ops::normal<float>({2, 4, 128, 128}, gen);
            return sample(g, x0.view(), sampler_config{.kind = kind, .steps = 8}, gen);
        });
    };
    for (auto kind : {sampler_kind::euler_maruyama, sampler_kind::heun}) {
        const auto one = run(1, 42, kind), two = run(2, 42, kind);
        BOOST_TEST(bitwise_equal(one.view(), two.view()), "sampler " << int(kind));
    }
    const auto a = run(2, 42, sampler_kind::euler_maruyama), b = run(2, 43, sampler_kind::euler_maruyama);
    BOOST_TEST(!bitwise_equal(a.view(), b.view()));
}

BOOST_AUTO_TEST_CASE(noise_consumption_and_options) {
    const gaussian_target g{{0.0}, {1.0}};
    const auto x0 = tensor<double, cpu>::zeros({2, 1, 3});
    philox_generator gen{.seed = 1};
    sample(g, x0.view(), sampler_config{.kind = sampler_kind::euler_maruyama, .steps = 10}, gen);
    // Reserved per sample (per_sample_draws): 2 samples × 9 noisy steps × ⌈3/4⌉ = 1 Philox block
    // each; the last step adds no noise.
    BOOST_TEST(gen.offset == 2u * 9u * 1u);
    BOOST_CHECK_THROW(sample(g, x0.view(), sampler_config{.kind = sampler_kind::euler_maruyama, .steps = 10, .time_shift = 0.3}, gen),
                      std::invalid_argument);
    BOOST_CHECK_THROW(sample(g, x0.view(), sampler_config{.kind = sampler_kind::euler_maruyama}), std::invalid_argument);
}

// A sample is the same whatever batch it is drawn in: 7 samples in one batch of 7, in batches of
// 3 (3, 3, 1) and of 2, bit for bit, for the SDE (initial and step noise) and for Euler (initial
// noise). 6 elements per sample, so Philox's 4-word blocks straddle samples when a batch is
// filled from one stream.
BOOST_AUTO_TEST_CASE(samples_do_not_depend_on_the_batch_size) {
    const gaussian_target g{{0.5, -1.0}, {0.5, 1.5}};
    const std::int64_t n = 7;
    auto run = [&](sampler_kind kind, std::int64_t batch) {
        const sampler_config cfg{.kind = kind, .steps = 6};
        philox_generator gen{.seed = 9, .stream = 2};
        const sampling_noise noise(gen, n, tensor_shape{2, 3, 1}, cfg);
        auto out = tensor<double, cpu>({n, 2, 3, 1});
        for (std::int64_t first = 0; first < n; first += batch) {
            const std::int64_t last = std::min(n, first + batch);
            const auto x0 = noise.initial<double, cpu>(first, last);
            const auto x1 = sample(g, x0.view(), cfg, noise.steps<double, cpu>(first));
            ops::copy(out.slice(first, last), x1.view());
        }
        return out;
    };
    for (auto kind : {sampler_kind::euler_maruyama, sampler_kind::euler}) {
        const auto whole = run(kind, 7);
        for (std::int64_t batch : {3, 2}) BOOST_TEST(bitwise_equal(whole.view(), run(kind, batch).view()), "sampler " << int(kind) << ", batch " << batch);
    }
    // The SDE's step noise matters: the SDE and Euler samples of the same initial noise differ.
    BOOST_TEST(!bitwise_equal(run(sampler_kind::euler_maruyama, 7).view(), run(sampler_kind::euler, 7).view()));
}

BOOST_AUTO_TEST_SUITE_END()

// =============================================================================================
BOOST_AUTO_TEST_SUITE(classifier_free_guidance)

namespace {
/// A fake conditional velocity whose halves are easy to tell apart: v = x·(1 + y/4) + t·(c + 1).
/// It records the batch size and labels of its last call.
struct recording_model {
    int calls = 0;
    std::int64_t last_batch = 0;
    std::vector<std::int32_t> last_labels;

    static double value(double x, double t, std::int32_t y, std::int64_t c) { return x * (1 + y / 4.0) + t * double(c + 1); }

    tensor<double, cpu> operator()(const tensor_view<double, cpu>& x, const tensor_view<double, cpu>& t,
                                   const tensor_view<std::int32_t, cpu>& y) {
        ++calls;
        last_batch = x.dim(0);
        last_labels = y.to_vector();
        auto out = tensor<double, cpu>::empty(x.shape());
        const std::int64_t C = x.dim(1), S = x.numel() / (x.dim(0) * C);
        for (std::int64_t i = 0; i < x.numel(); ++i) {
            const auto b = i / (C * S), c = (i / S) % C;
            out.data()[i] = value(x.data()[i], t.data()[b], y.data()[b], c);
        }
        return out;
    }
};

constexpr std::int32_t null_label = 10;

/// v_u + s·(v_c − v_u) where guided(b, c), else v_c, element by element.
tensor<double, cpu> expected_guidance(const tensor_view<double, cpu>& x, const std::vector<double>& t, const std::vector<std::int32_t>& y,
                                      double s, const std::function<bool(std::int64_t, std::int64_t)>& guided) {
    auto out = tensor<double, cpu>::empty(x.shape());
    const std::int64_t C = x.dim(1), S = x.numel() / (x.dim(0) * C);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
        const auto b = i / (C * S), c = (i / S) % C;
        const double vc = recording_model::value(x.data()[i], t[b], y[b], c);
        const double vu = recording_model::value(x.data()[i], t[b], null_label, c);
        out.data()[i] = guided(b, c) ? vu + s * (vc - vu) : vc;
    }
    return out;
}
} // namespace

// (d) Guidance against element-by-element formulas.
BOOST_AUTO_TEST_CASE(guidance_formula_channels_and_interval) {
    const auto x = random_tensor<double>({3, 4, 2, 2}, 3);
    const std::vector<double> t_host{0.05, 0.5, 0.9};
    const std::vector<std::int32_t> y_host{1, 2, 7};
    const auto t = tensor<double, cpu>::from_host({3}, std::span<const double>(t_host));
    const auto y = tensor<std::int32_t, cpu>::from_host({3}, std::span<const std::int32_t>(y_host));

    // Scale 1: exactly the unguided conditional call, with one call of batch B.
    recording_model model;
    const auto unguided = model(x.view(), t.view(), y.view());
    model.calls = 0;
    const auto same = guided_velocity(model, x.view(), t.view(), y.view(), null_label, guidance_config{});
    BOOST_TEST(bitwise_equal(same.view(), unguided.view()));
    BOOST_TEST(model.calls == 1);
    BOOST_TEST(model.last_batch == 3);

    // Scale 4 on every channel: one call of the doubled batch with labels [y; null].
    model.calls = 0;
    const auto all = guided_velocity(model, x.view(), t.view(), y.view(), null_label, guidance_config{.scale = 4});
    BOOST_TEST(model.calls == 1);
    BOOST_TEST(model.last_batch == 6);
    BOOST_TEST(model.last_labels == (std::vector<std::int32_t>{1, 2, 7, null_label, null_label, null_label}),
               boost::test_tools::per_element());
    check_close(all, expected_guidance(x, t_host, y_host, 4, [](auto, auto) { return true; }), 1e-13, 1e-13, "scale 4, all channels");

    // The reference quirk: only the first 3 of 4 channels guided; channel 3 is exactly v_c.
    const auto quirk = guided_velocity(model, x.view(), t.view(), y.view(), null_label, guidance_config{.scale = 4, .first_channels = 3});
    check_close(quirk, expected_guidance(x, t_host, y_host, 4, [](auto, auto c) { return c < 3; }), 1e-13, 1e-13, "first 3 channels");
    for (std::int64_t b = 0; b < 3; ++b)
        for (std::int64_t p = 0; p < 4; ++p) BOOST_TEST(quirk.at(b, 3, p / 2, p % 2) == unguided.at(b, 3, p / 2, p % 2));

    // Interval [0.125, 0.8]: sample 0 (t = 0.05) and sample 2 (t = 0.9) are plain conditional, bit for bit.
    const auto interval = guided_velocity(model, x.view(), t.view(), y.view(), null_label,
                                          guidance_config{.scale = 4, .interval_start = 0.125, .interval_end = 0.8});
    check_close(interval, expected_guidance(x, t_host, y_host, 4, [](auto b, auto) { return b == 1; }), 1e-13, 1e-13, "interval");
    BOOST_TEST(bitwise_equal(interval.slice(0, 1), unguided.slice(0, 1)));
    BOOST_TEST(bitwise_equal(interval.slice(2, 3), unguided.slice(2, 3)));

    // Every t outside the interval: no doubled call at all.
    model.calls = 0;
    const auto outside = guided_velocity(model, x.view(), t.view(), y.view(), null_label,
                                         guidance_config{.scale = 4, .interval_start = 0.95, .interval_end = 1.0});
    BOOST_TEST(model.last_batch == 3);
    BOOST_TEST(bitwise_equal(outside.view(), unguided.view()));

    BOOST_CHECK_THROW(guided_velocity(model, x.view(), t.view(), y.view(), null_label, guidance_config{.scale = 2, .first_channels = 5}),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(guidance_composes_with_a_sampler) {
    recording_model model;
    const auto x0 = random_tensor<double>({2, 4, 1, 1}, 8);
    const std::vector<std::int32_t> labels{3, 5};
    const sampler_config cfg{.kind = sampler_kind::heun, .steps = 6};
    // Scale 1 samples exactly as the conditional model with the labels bound.
    const auto guided_one = sample(make_guided_velocity<double>(std::ref(model), labels, null_label, guidance_config{}), x0.view(), cfg);
    const auto y = tensor<std::int32_t, cpu>::from_host({2}, std::span<const std::int32_t>(labels));
    auto conditional = [&](const tensor_view<double, cpu>& x, const tensor_view<double, cpu>& t) { return model(x, t, y.view()); };
    const auto plain = sample(conditional, x0.view(), cfg);
    BOOST_TEST(bitwise_equal(guided_one.view(), plain.view()));
    // Scale 3 differs, and calls the model once per evaluation (2 per Heun step).
    model.calls = 0;
    const auto guided_three = sample(make_guided_velocity<double>(std::ref(model), labels, null_label, guidance_config{.scale = 3}), x0.view(), cfg);
    BOOST_TEST(model.calls == 12);
    BOOST_TEST(!bitwise_equal(guided_three.view(), plain.view()));
}

BOOST_AUTO_TEST_SUITE_END()

// =============================================================================================
BOOST_AUTO_TEST_SUITE(flow_matching)

// (f) The loss's gradient by central differences (double, relative error < 1e-6), with and
// without the cosine term, and its value against a direct computation.
BOOST_AUTO_TEST_CASE(loss_value_and_gradient) {
    auto v = random_tensor<double>({2, 3, 4, 5}, 21);
    const auto u = random_tensor<double>({2, 3, 4, 5}, 22);
    for (bool cosine : {false, true}) {
        const flow_matching_config cfg{.cosine_term = cosine};
        const auto r = flow_matching_loss(v.view(), u.view(), cfg);
        // Direct: MSE over all 120 elements; cosine over the 3 channels at each of 2·20 positions.
        double mse = 0, cos_loss = 0;
        for (std::int64_t i = 0; i < v.numel(); ++i) mse += (v.data()[i] - u.data()[i]) * (v.data()[i] - u.data()[i]) / 120.0;
        for (std::int64_t b = 0; b < 2; ++b)
            for (std::int64_t p = 0; p < 20; ++p) {
                double vu = 0, vv = 0, uu = 0;
                for (std::int64_t c = 0; c < 3; ++c) {
                    const double a = v.at(b, c, p / 5, p % 5), e = u.at(b, c, p / 5, p % 5);
                    vu += a * e, vv += a * a, uu += e * e;
                }
                cos_loss += (1 - vu / std::sqrt(vv * uu)) / 40.0;
            }
        BOOST_TEST_CONTEXT("cosine term " << cosine) {
            BOOST_TEST(r.mse == mse, boost::test_tools::tolerance(1e-13));
            BOOST_TEST(r.cosine == (cosine ? cos_loss : 0.0), boost::test_tools::tolerance(1e-12));
            BOOST_TEST(r.value == mse + (cosine ? cos_loss : 0.0), boost::test_tools::tolerance(1e-12));
            const auto probes = probe_indices(v.numel(), 200);
            const auto numeric = numeric_gradient<double>(v.view(), [&] { return flow_matching_loss(v.view(), u.view(), cfg).value; }, probes, 1e-6);
            const double err = relative_error(gather<double>(r.dv.view(), probes), numeric);
            BOOST_TEST(err < 1e-6, "relative gradient error " << err);
        }
    }
    // In float the same value to float precision.
    const flow_matching_config with_cosine{.cosine_term = true};
    auto vf = random_tensor<float>({2, 3, 4, 5}, 21), uf = random_tensor<float>({2, 3, 4, 5}, 22);
    const auto rf = flow_matching_loss(vf.view(), uf.view(), with_cosine);
    const auto rd = flow_matching_loss(v.view(), u.view(), with_cosine);
    BOOST_TEST(rf.value == rd.value, boost::test_tools::tolerance(1e-5));
    check_close(rf.dv, rd.dv, 1e-4, 1e-6, "float gradient");
    // A prediction along the target has cosine term 0 whatever its length.
    const auto twice = ops::scale(u.view(), 2.0);
    BOOST_TEST(flow_matching_loss(twice.view(), u.view(), {.cosine_term = true}).cosine == 0.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(training_pair_follows_the_path) {
    const auto x1 = random_tensor<double>({4, 2, 3, 3}, 31);
    const philox_generator start{.seed = 9, .stream = 2};
    auto gen = start;
    const auto p = make_training_pair(x1.view(), gen);
    // Draw order: the B times, then the noise.
    auto replay = start;
    const auto t = sample_times<double>(4, replay);
    const auto x0 = ops::normal<double>(x1.shape(), replay);
    BOOST_TEST(bitwise_equal(p.t.view(), t.view()));
    BOOST_TEST(bitwise_equal(p.noise.view(), x0.view()));
    BOOST_TEST(gen.offset == replay.offset);
    for (std::int64_t i = 0; i < x1.numel(); ++i) {
        const double ti = t.data()[i / 18], a = x1.data()[i], n = x0.data()[i];
        BOOST_TEST(p.x_t.data()[i] == ti * a + (1 - ti) * n, boost::test_tools::tolerance(1e-12));
        BOOST_TEST(p.target.data()[i] == a - n);
    }
    for (double ti : t.span()) BOOST_TEST((ti > 0 && ti < 1));
}

BOOST_AUTO_TEST_CASE(time_distributions) {
    // Uniform: inside (0, 1), mean ½ within 4 standard errors (1/√(12n)).
    philox_generator gen{.seed = 4};
    const std::int64_t n = 40001;
    const auto u = sample_times<double>(n, gen);
    double mean = 0;
    for (double t : u.span()) {
        BOOST_TEST_REQUIRE((t > 0 && t < 1));
        mean += t / double(n);
    }
    BOOST_TEST(std::abs(mean - 0.5) < 4 / std::sqrt(12.0 * n));

    // Logit-normal sigmoid(N(0.5, 1)): median sigmoid(0.5). The sample median's standard error is
    // 1/(2·f·√n) with the density f = φ(0)/(s·t(1 − t)) ≈ 1.70 at the median: 0.0015; 4 of them.
    const flow_matching_config logit{.times = time_sampling::logit_normal(0.5, 1.0)};
    auto lt = sample_times<double>(n, gen, logit).to_vector();
    for (double t : lt) BOOST_TEST_REQUIRE((t > 0 && t < 1));
    std::nth_element(lt.begin(), lt.begin() + n / 2, lt.end());
    const double median = lt[n / 2], expected = 1 / (1 + std::exp(-0.5));
    BOOST_TEST(std::abs(median - expected) < 0.006, "median " << median << " vs " << expected);

    // Far in the tails, float times still stay strictly inside (0, 1).
    for (double m : {-40.0, 40.0}) {
        const auto ft = sample_times<float>(64, gen, {.times = time_sampling::logit_normal(m, 1.0)});
        for (float t : ft.span()) BOOST_TEST((t > 0.0f && t < 1.0f), "mean " << m << ": t = " << t);
    }
}

BOOST_AUTO_TEST_CASE(time_shift) {
    for (double s : {0.3, 1.0, 3.0}) {
        BOOST_TEST(shift_time(0.0, s) == 0.0);
        BOOST_TEST(shift_time(1.0, s) == 1.0);
        double previous = 0;
        for (int i = 1; i <= 1000; ++i) {
            const double v = shift_time(i / 1000.0, s);
            BOOST_TEST_REQUIRE(v > previous, "shift " << s << " at " << i / 1000.0);
            previous = v;
        }
    }
    BOOST_TEST(shift_time(0.5, 0.3) == 0.15 / 0.65, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(shift_time(0.5, 3.0) == 0.75, boost::test_tools::tolerance(1e-15));
    BOOST_CHECK_THROW(shift_time(0.5, 0.0), std::invalid_argument);
    // Training times are shifted the same way.
    philox_generator a{.seed = 2}, b{.seed = 2};
    const auto plain = sample_times<double>(16, a);
    const auto shifted = sample_times<double>(16, b, {.time_shift = 0.3});
    for (std::int64_t i = 0; i < 16; ++i)
        BOOST_TEST(shifted.data()[i] == shift_time(plain.data()[i], 0.3), boost::test_tools::tolerance(1e-15));
}

BOOST_AUTO_TEST_SUITE_END()

// =============================================================================================
BOOST_AUTO_TEST_SUITE(latent_normalization_suite)

namespace {
/// Latents (N, C, 5, 5) with channel c ~ N(3c − 2, (0.5 + c)²).
template <class T>
tensor<T, cpu> skewed_latents(std::int64_t n, std::int64_t channels, std::uint64_t seed) {
    auto z = random_tensor<T>({n, channels, 5, 5}, seed);
    for (std::int64_t i = 0; i < z.numel(); ++i) {
        const auto c = (i / 25) % channels;
        z.data()[i] = T(double(z.data()[i]) * (0.5 + double(c)) + 3.0 * double(c) - 2.0);
    }
    return z;
}
} // namespace

// (g) Statistics in double against a direct computation; normalized latents have per-channel
// mean 0 and unbiased std 1; denormalize inverts normalize; batching does not change the result.
BOOST_AUTO_TEST_CASE(statistics_and_round_trip) {
    const auto z = skewed_latents<double>(12, 4, 5);
    const auto norm = latent_normalization<double>::fit(z.view());
    const auto direct = stats_per_channel(z.view());
    for (std::int64_t c = 0; c < 4; ++c) {
        BOOST_TEST(norm.mean().at(c) == direct.mean[c], boost::test_tools::tolerance(1e-13));
        BOOST_TEST(norm.stddev().at(c) == std::sqrt(direct.var[c]), boost::test_tools::tolerance(1e-13));
    }
    const auto zn = norm.normalize(z.view());
    const auto st = stats_per_channel(zn.view());
    for (std::size_t c = 0; c < 4; ++c) {
        BOOST_TEST(std::abs(st.mean[c]) < 1e-13);
        BOOST_TEST(st.var[c] == 1.0, boost::test_tools::tolerance(1e-12));
    }
    check_close(norm.denormalize(zn.view()), z, 1e-13, 1e-13, "denormalize(normalize(z))");

    // Three uneven batches give the statistics of the whole set.
    latent_moments m;
    m.add(z.slice(0, 5));
    m.add(z.slice(5, 6));
    m.add(z.slice(6, 12));
    const latent_normalization<double> batched(m);
    check_close(batched.mean(), norm.mean(), 1e-13, 1e-13, "batched mean");
    check_close(batched.stddev(), norm.stddev(), 1e-13, 1e-13, "batched std");

    // Rebuilt from its saved tensors, by the names it saves them under.
    std::vector<std::string> names;
    norm.for_each_tensor([&](const std::string& name, const tensor<double, cpu>&) { names.push_back(name); });
    BOOST_TEST(names == (std::vector<std::string>{"latent_mean", "latent_std"}), boost::test_tools::per_element());
    const latent_normalization<double> restored(norm.mean().view(), norm.stddev().view());
    BOOST_TEST(bitwise_equal(restored.normalize(z.view()).view(), zn.view()));
}

// SD's scalar scaling: the pooled std of all elements (about the overall mean, unbiased) from the
// channel statistics equals a direct computation; scaled latents have std 1 overall and are not
// shifted (z_n = z / σ exactly).
BOOST_AUTO_TEST_CASE(scalar_scaling_is_sd_scaling_factor) {
    const auto z = skewed_latents<double>(12, 4, 7);
    const auto norm = latent_normalization<double>::fit(z.view());
    double mean = 0;
    for (std::int64_t i = 0; i < z.numel(); ++i) mean += z.data()[i] / double(z.numel());
    double squares = 0;
    for (std::int64_t i = 0; i < z.numel(); ++i) squares += (z.data()[i] - mean) * (z.data()[i] - mean);
    const double direct = std::sqrt(squares / double(z.numel() - 1));
    const auto m = norm.mean().to_vector(), sd = norm.stddev().to_vector();
    BOOST_TEST(pooled_stddev(m, sd, 12 * 25) == direct, boost::test_tools::tolerance(1e-12));
    const auto [smean, sstd] = scaling_statistics(latent_scaling::scalar, m, sd, 12 * 25);
    BOOST_TEST(smean == std::vector<double>(4, 0.0), boost::test_tools::per_element());
    BOOST_TEST(sstd == std::vector<double>(4, direct), boost::test_tools::tolerance(1e-12) << boost::test_tools::per_element());
    const latent_normalization<double> scalar(smean, sstd);
    const auto zn = scalar.normalize(z.view());
    for (std::int64_t i = 0; i < z.numel(); i += 37) BOOST_TEST(zn.data()[i] == z.data()[i] / direct, boost::test_tools::tolerance(1e-13));
    const auto [cmean, cstd] = scaling_statistics(latent_scaling::channel, m, sd, 12 * 25);
    BOOST_TEST(cmean == m, boost::test_tools::per_element());
    BOOST_TEST(cstd == sd, boost::test_tools::per_element());
    BOOST_CHECK_THROW((void)parse_latent_scaling("sd"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(float_round_trip) {
    const auto z = skewed_latents<float>(6, 3, 8);
    const auto norm = latent_normalization<float>::fit(z.view());
    check_close(norm.denormalize(norm.normalize(z.view()).view()), z, 1e-5, 1e-5, "float round trip");
    const auto st = stats_per_channel(norm.normalize(z.view()).view());
    for (std::size_t c = 0; c < 3; ++c) {
        BOOST_TEST(std::abs(st.mean[c]) < 1e-5);
        BOOST_TEST(std::abs(st.var[c] - 1) < 1e-5);
    }
}

BOOST_AUTO_TEST_CASE(channel_mismatch_names_both_shapes) {
    const auto norm = latent_normalization<float>::fit(skewed_latents<float>(2, 4, 1).view());
    const auto wrong = tensor<float, cpu>::zeros({2, 3, 5, 5});
    for (const auto& msg : {shape_error_message([&] { norm.normalize(wrong.view()); }),
                            shape_error_message([&] { norm.denormalize(wrong.view()); })}) {
        BOOST_TEST(contains(msg, "(2, 3, 5, 5)"), msg);
        BOOST_TEST(contains(msg, "(4)"), msg);
    }
    latent_moments m;
    m.add(skewed_latents<float>(2, 4, 1).view());
    BOOST_TEST(contains(shape_error_message([&] { m.add(wrong.view()); }), "(2, 3, 5, 5)"));
    BOOST_CHECK_THROW(latent_normalization<float>::fit(tensor<float, cpu>::zeros({4, 2, 2, 2}).view()), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
