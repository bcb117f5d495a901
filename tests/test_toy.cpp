#define BOOST_TEST_MODULE toy
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "support/threads.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/toy2d.hpp"
#include "vediff/jobs/toy.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/toy_mlp.hpp"
#include "vediff/models/toy_tokenizer.hpp"
#include "vediff/models/toy_velocity.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

/// The unit normal of the spiral at position s (its tangent d/dθ (θ cos θ, θ sin θ), turned 90°).
data::point2 spiral_normal(const data::spiral& c, double s) {
    const double theta = c.theta_begin + s * (c.theta_end - c.theta_begin);
    const double tx = std::cos(theta) - theta * std::sin(theta), ty = std::sin(theta) + theta * std::cos(theta);
    const double n = std::hypot(tx, ty);
    return {-ty / n, tx / n};
}

/// toy_velocity at fixed times, as a one-input layer for check_layer_gradients.
struct velocity_at_fixed_times {
    using value_type = double;
    using device_type = cpu;
    models::toy_velocity<double> model;
    tensor<double> t;  // (B)

    tensor<double> forward(tensor<double>&&) = delete;
    tensor<double> forward(const tensor_view<double>& x) { return model.forward(x, t); }
    tensor<double> backward(const tensor_view<double>& dy) { return model.backward(dy); }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        model.for_each_parameter(f, prefix);
    }
};

/// A run small enough for a unit test (a second or two).
jobs::toy_config tiny_config() {
    jobs::toy_config cfg;
    cfg.tokenizer.hidden = 16;
    cfg.tokenizer_steps = 40;
    cfg.tokenizer_batch = 64;
    cfg.velocity.hidden = 16;
    cfg.velocity.hidden_layers = 2;
    cfg.flow_steps = 40;
    cfg.flow_batch = 64;
    cfg.sampler_steps = 8;
    cfg.samples = 100;
    cfg.eval_points = 100;
    cfg.normalization_points = 256;
    cfg.polyline_segments = 500;
    return cfg;
}

} // namespace

static_assert(nn::layer<models::toy_mlp<double>>);
static_assert(nn::layer<velocity_at_fixed_times>);

BOOST_AUTO_TEST_CASE(spiral_ends_and_arm_gap) {
    const data::spiral c;
    const auto a = c.at(0), b = c.at(1);
    BOOST_TEST(std::hypot(a[0], a[1]) == c.radius * c.theta_begin / c.theta_end, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(std::hypot(b[0], b[1]) == c.radius, boost::test_tools::tolerance(1e-12));
    // Along a ray the arms are one turn apart: r(θ + 2π) − r(θ) = radius·2π/θ1.
    const double s1 = 0.2, s2 = s1 + 2 * std::numbers::pi / (c.theta_end - c.theta_begin);
    const auto p = c.at(s1), q = c.at(s2);
    BOOST_TEST(std::hypot(q[0], q[1]) - std::hypot(p[0], p[1]) == c.arm_gap(), boost::test_tools::tolerance(1e-12));
    BOOST_CHECK_THROW((data::spiral{.theta_begin = 2, .theta_end = 1}.validate()), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(segment_distance_of_simple_cases) {
    const data::point2 a{-1, 0}, b{1, 0};
    BOOST_TEST(data::segment_distance({0, 1}, a, b) == 1.0);
    BOOST_TEST(data::segment_distance({0.5, -0.25}, a, b) == 0.25);
    BOOST_TEST(data::segment_distance({4, 4}, a, b) == 5.0);  // beyond the end: to the end point
    BOOST_TEST(data::segment_distance({1, 1}, a, a) == std::sqrt(5.0));  // a degenerate segment is a point
}

BOOST_AUTO_TEST_CASE(curve_distance_on_and_off_the_curve) {
    const data::spiral c;
    const auto line = data::spiral_polyline(c, 4000);
    // Positions between the polyline's vertices, on the curve: distance ≈ 0 (the sagitta, < 1e-6).
    std::vector<data::point2> on;
    for (double s : {0.0, 0.0123, 0.25, 0.5001, 0.777, 1.0}) on.push_back(c.at(s));
    for (double d : data::polyline_distances(std::span<const data::point2>(on), line)) BOOST_TEST(d < 1e-6);

    // Moved along the normal by less than half the arm gap (0.22), on either side: that distance.
    std::vector<data::point2> off;
    std::vector<double> expected;
    for (double s : {0.1, 0.4, 0.6, 0.9})
        for (double offset : {0.05, -0.05, 0.15}) {
            const auto p = c.at(s);
            const auto n = spiral_normal(c, s);
            off.push_back({p[0] + offset * n[0], p[1] + offset * n[1]});
            expected.push_back(std::abs(offset));
        }
    const auto d = data::polyline_distances(std::span<const data::point2>(off), line);
    for (std::size_t i = 0; i < d.size(); ++i) BOOST_TEST(d[i] == expected[i], boost::test_tools::tolerance(1e-5));

    // The tensor overload agrees, and a non-finite point is infinitely far.
    const auto t = tensor<float>::from_host({2, 2}, {float(off[0][0]), float(off[0][1]), std::numeric_limits<float>::quiet_NaN(), 0.f});
    const auto dt = data::polyline_distances(t.view(), line);
    BOOST_TEST(dt[0] == expected[0], boost::test_tools::tolerance(1e-4));
    BOOST_TEST(std::isinf(dt[1]));
    BOOST_TEST(contains(shape_error_message([&] { (void)data::to_points(tensor<float>::zeros({3, 3}).view()); }), "(N, 2)"));
}

BOOST_AUTO_TEST_CASE(off_curve_fraction_of_a_constructed_case) {
    // 10 points: 6 on the curve, 3 at 0.1 from it, 1 at 0.03; threshold 0.05 → 3 off.
    const data::spiral c;
    const auto line = data::spiral_polyline(c, 4000);
    std::vector<data::point2> pts;
    for (int i = 0; i < 10; ++i) {
        const double s = 0.05 + 0.09 * i;
        const double offset = i < 6 ? 0.0 : i < 9 ? 0.1 : 0.03;
        const auto p = c.at(s);
        const auto n = spiral_normal(c, s);
        pts.push_back({p[0] + offset * n[0], p[1] + offset * n[1]});
    }
    const auto d = data::polyline_distances(std::span<const data::point2>(pts), line);
    BOOST_TEST(data::off_curve_fraction(d, 0.05) == 0.3);
    BOOST_TEST(data::off_curve_fraction(d, 0.2) == 0.0);
    BOOST_TEST(data::off_curve_fraction(d, 0.02) == 0.4);
    // NaN and infinite distances count as off.
    const std::vector<double> odd{0.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), 0.01};
    BOOST_TEST(data::off_curve_fraction(odd, 0.05) == 0.5);
    BOOST_CHECK_THROW(data::off_curve_fraction(std::vector<double>{}, 0.05), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(spiral_samples_lie_on_the_curve) {
    const data::spiral c;
    const auto a = data::sample_spiral<float>(c, 500, 3);
    const auto b = data::sample_spiral<float>(c, 500, 3);
    BOOST_TEST(a.points.shape() == (tensor_shape{500, 2}));
    BOOST_TEST(a.points.to_vector() == b.points.to_vector(), boost::test_tools::per_element());
    for (double s : a.position) BOOST_TEST((s > 0 && s < 1));
    const auto d = data::polyline_distances(a.points.view(), data::spiral_polyline(c, 4000));
    for (double x : d) BOOST_TEST(x < 1e-5);  // float rounding of the coordinates
    const auto noisy = data::sample_spiral<float>(c, 500, 3, 0, 0.05);
    const auto dn = data::polyline_distances(noisy.points.view(), data::spiral_polyline(c, 4000));
    BOOST_TEST(data::off_curve_fraction(dn, 1e-3) > 0.9);
}

BOOST_AUTO_TEST_CASE(toy_mlp_gradients_and_names) {
    models::toy_mlp<double> mlp({.in_features = 3, .hidden = 8, .hidden_layers = 2, .out_features = 4}, 5);
    check_layer_gradients("toy_mlp", mlp, {6, 3});
    std::vector<std::string> names;
    for (auto& [name, p] : nn::named_parameters(mlp)) names.push_back(name);
    BOOST_TEST(names == (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}),
               boost::test_tools::per_element());
    BOOST_TEST(contains(shape_error_message([&] {
                            const auto x = tensor<double>::zeros({2, 5});
                            (void)mlp.forward(x);
                        }),
                        "toy_mlp::forward: input (2, 5) must be (B, 3)"));
}

BOOST_AUTO_TEST_CASE(toy_velocity_gradients) {
    velocity_at_fixed_times v{models::toy_velocity<double>({.dim = 2, .time_dim = 8, .hidden = 8, .hidden_layers = 2}, 9),
                              tensor<double>::from_host({5}, {0.0, 0.1, 0.5, 0.9, 0.99})};
    check_layer_gradients("toy_velocity", v, {5, 2});
    BOOST_TEST(contains(shape_error_message([&] {
                            const auto x = tensor<double>::zeros({5, 2});
                            (void)v.model.forward(x, tensor<double>::zeros({4}));
                        }),
                        "t (4) must be (B)"));
}

BOOST_AUTO_TEST_CASE(toy_tokenizer_feeds_the_gaussian_posterior) {
    models::toy_tokenizer<float> tok({.hidden = 8}, 1);
    const auto x = data::sample_spiral<float>(data::spiral{}, 4, 0).points;
    auto post = models::gaussian_posterior<float>::from_moments(tok.encode(x));
    BOOST_TEST(post.mean.shape() == (tensor_shape{4, 2}));
    BOOST_TEST(post.logvar.shape() == (tensor_shape{4, 2}));
    BOOST_TEST(tok.decode(post.mean).shape() == (tensor_shape{4, 2}));
    const auto names = nn::named_parameters(tok);
    BOOST_TEST(names.front().first == "encoder.0.weight");
    BOOST_TEST(names.back().first == "decoder.4.bias");
}

BOOST_AUTO_TEST_CASE(toy_run_end_to_end_at_a_small_budget) {
    const auto cfg = tiny_config();
    const auto r = with_threads(2, [&] { return jobs::run_toy(cfg); });
    BOOST_REQUIRE_EQUAL(r.runs.size(), 2u);
    BOOST_TEST(r.runs[0].name == "KL");
    BOOST_TEST(r.runs[1].name == "VE");
    for (const auto& run : r.runs) {
        BOOST_TEST_CONTEXT(run.name) {
            BOOST_TEST((run.off_curve_fraction >= 0 && run.off_curve_fraction <= 1));
            BOOST_TEST((std::isfinite(run.sigma2_mean) && run.sigma2_mean > 0));
            BOOST_TEST(std::isfinite(run.reconstruction_distance));
            BOOST_TEST(std::isfinite(run.tokenizer_loss));
            BOOST_TEST(std::isfinite(run.flow_mse));
            BOOST_TEST(run.decoded_samples.size() == std::size_t(cfg.samples));
            BOOST_TEST(run.latent_means.size() == std::size_t(cfg.eval_points));
        }
    }
    BOOST_TEST(r.data.size() == std::size_t(cfg.eval_points));

    // The same config gives the same numbers (every draw is Philox, keyed by the seed).
    const auto again = with_threads(2, [&] { return jobs::run_toy(cfg); });
    for (std::size_t k = 0; k < 2; ++k) {
        BOOST_TEST(again.runs[k].off_curve_fraction == r.runs[k].off_curve_fraction);
        BOOST_TEST(again.runs[k].sigma2_mean == r.runs[k].sigma2_mean);
        BOOST_TEST(again.runs[k].sample_distances == r.runs[k].sample_distances, boost::test_tools::per_element());
    }

    temp_dir dir("toy");
    const auto files = jobs::write_toy(r, dir.path);
    BOOST_TEST(fs::exists(dir / "toy.json"));
    BOOST_TEST(fs::exists(files.csv));
    BOOST_TEST(fs::exists(files.script));
    BOOST_TEST(files.rendered == io::find_program("gnuplot").has_value());
    const auto json = nlohmann::json::parse(std::ifstream(dir / "toy.json"));
    BOOST_TEST(json["runs"][1]["name"] == "VE");
    BOOST_TEST(json["config"]["threshold"] == cfg.threshold);
}

// The effect the toy exists to show: with the same data, seed and steps, KL(1e-6) lets the
// posterior variance collapse and VE holds it up. 40 tokenizer steps barely move σ² from its
// start (0.98 against 0.99); 600 separate the two.
BOOST_AUTO_TEST_CASE(kl_collapses_the_posterior_variance_and_ve_holds_it) {
    auto cfg = tiny_config();
    cfg.tokenizer_steps = 600;
    const auto r = with_threads(2, [&] { return jobs::run_toy(cfg); });
    BOOST_TEST_MESSAGE("σ² mean after 600 steps: KL " << r.runs[0].sigma2_mean << ", VE " << r.runs[1].sigma2_mean);
    BOOST_TEST(r.runs[1].sigma2_mean > 2 * r.runs[0].sigma2_mean);
}

BOOST_AUTO_TEST_CASE(invalid_configs_are_rejected) {
    auto cfg = tiny_config();
    cfg.sampler_steps = 1;
    BOOST_CHECK_THROW(jobs::run_toy(cfg), std::invalid_argument);
    cfg = tiny_config();
    cfg.velocity.dim = 3;
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { (void)jobs::run_toy(cfg); }), "differs from the latent dim 2"));
}
