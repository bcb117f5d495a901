#define BOOST_TEST_MODULE sensitivity
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "support/threads.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/decoder_sensitivity.hpp"
#include "vediff/metrics/sensitivity_equilibrium.hpp"
#include "vediff/models/autoencoder.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

/// x = W z per sample, z flattened to m values, x to p = W.rows(); its vjp is v ↦ Wᵀv.
struct linear_decoder {
    tensor<double> w;  // (p, m)

    std::int64_t p() const { return w.dim(0); }
    std::int64_t m() const { return w.dim(1); }

    tensor<double> vjp(const tensor_view<double>& z, const tensor_view<double>& v) const {
        auto u = tensor<double>::zeros(z.shape());
        for (std::int64_t n = 0; n < z.dim(0); ++n)
            for (std::int64_t j = 0; j < p(); ++j)
                for (std::int64_t k = 0; k < m(); ++k) u.data()[n * m() + k] += w.at(j, k) * v.data()[n * p() + j];
        return u;
    }
    /// T_k = Σ_j W_jk², the exact sensitivity of latent element k.
    double column_norm2(std::int64_t k) const {
        double s = 0;
        for (std::int64_t j = 0; j < p(); ++j) s += w.at(j, k) * w.at(j, k);
        return s;
    }
    /// Σ_j W_jk⁴ (enters the variance of the Rademacher estimate).
    double column_fourth(std::int64_t k) const {
        double s = 0;
        for (std::int64_t j = 0; j < p(); ++j) s += std::pow(w.at(j, k), 4);
        return s;
    }
};

auto vjp_of(const linear_decoder& dec) {
    return [&dec](const tensor_view<double>& z, const tensor_view<double>& v) { return dec.vjp(z, v); };
}

/// Checks each estimate against the exact T_k within 5 standard errors of the mean of `probes`
/// squared products, for the variance the probe distribution gives.
void check_against_exact(const tensor<double>& estimate, const linear_decoder& dec, std::int64_t probes, metrics::probe_distribution kind) {
    double worst = 0;
    for (std::int64_t i = 0; i < estimate.numel(); ++i) {
        const std::int64_t k = i % dec.m();
        const double t = dec.column_norm2(k);
        const double variance = kind == metrics::probe_distribution::rademacher ? 2 * (t * t - dec.column_fourth(k)) : 2 * t * t;
        const double z_score = std::abs(estimate.data()[i] - t) / std::sqrt(variance / double(probes));
        worst = std::max(worst, z_score);
    }
    BOOST_TEST_MESSAGE("largest deviation from the exact column norms: " << worst << " standard errors");
    BOOST_TEST(worst < 5.0, "largest deviation " << worst << " standard errors");
}

// The tiny autoencoder of test_autoencoder's gradient checks: 1×8×8 images, 2×4×4 latents.
models::autoencoder_config tiny_config() {
    return {.in_channels = 1, .out_channels = 1, .ch = 8, .ch_mult = {1, 2}, .num_res_blocks = 1, .z_channels = 2,
            .embed_dim = 2, .resolution = 8, .attn_resolutions = {4}, .norm_groups = 4};
}

} // namespace

BOOST_AUTO_TEST_SUITE(hutchinson)

BOOST_AUTO_TEST_CASE(linear_decoder_column_norms) {
    // p = 20 pixels, m = 12 latent elements (2, 2, 3); many probes for three latents.
    const linear_decoder dec{random_tensor<double>({20, 12}, 1)};
    const auto z = random_tensor<double>({3, 2, 2, 3}, 2);
    for (auto kind : {metrics::probe_distribution::rademacher, metrics::probe_distribution::normal}) {
        BOOST_TEST_CONTEXT((kind == metrics::probe_distribution::rademacher ? "rademacher" : "normal")) {
            philox_generator gen{.seed = 3};
            const std::int64_t probes = 3000;
            const auto t = metrics::decoder_sensitivity(vjp_of(dec), z.view(), {4, 5}, gen, {.probes = probes, .probe = kind});
            BOOST_REQUIRE(t.shape() == z.shape());
            check_against_exact(t, dec, probes, kind);
        }
    }
}

BOOST_AUTO_TEST_CASE(rademacher_trace_is_exact_for_orthogonal_rows) {
    // Rows of W with disjoint supports: W Wᵀ is diagonal, so vᵀ W Wᵀ v = tr(W Wᵀ) for every ±1
    // probe — one probe gives the trace exactly. A Gaussian probe does not.
    auto w = tensor<double>::zeros({6, 12});
    for (std::int64_t j = 0; j < 6; ++j) {
        w.at(j, 2 * j) = 0.5 + double(j);
        w.at(j, 2 * j + 1) = -1.0 + 0.25 * double(j);
    }
    const linear_decoder dec{std::move(w)};
    double trace = 0;
    for (std::int64_t k = 0; k < 12; ++k) trace += dec.column_norm2(k);
    const auto z = random_tensor<double>({4, 12}, 4);
    philox_generator gen{.seed = 5};
    const auto rademacher = metrics::decoder_sensitivity(vjp_of(dec), z.view(), {6}, gen, {.probes = 1});
    for (double total : metrics::sensitivity_trace_per_sample(rademacher.view())) BOOST_TEST(total == trace, tt::tolerance(1e-13));
    const auto normal = metrics::decoder_sensitivity(vjp_of(dec), z.view(), {6}, gen, {.probes = 1, .probe = metrics::probe_distribution::normal});
    double spread = 0;
    for (double total : metrics::sensitivity_trace_per_sample(normal.view())) spread = std::max(spread, std::abs(total - trace) / trace);
    BOOST_TEST(spread > 0.05);
}

BOOST_AUTO_TEST_CASE(rademacher_trace_is_unbiased) {
    // A dense W: the per-probe trace estimate vᵀ W Wᵀ v has mean tr(W Wᵀ) and variance
    // 2·Σ_{j≠l} (W Wᵀ)_jl²; the mean over 64 latents × 50 probes lies within 5 standard errors.
    const linear_decoder dec{random_tensor<double>({10, 8}, 6)};
    double trace = 0, off_diagonal = 0;
    for (std::int64_t k = 0; k < 8; ++k) trace += dec.column_norm2(k);
    for (std::int64_t j = 0; j < 10; ++j)
        for (std::int64_t l = 0; l < 10; ++l) {
            if (j == l) continue;
            double g = 0;
            for (std::int64_t k = 0; k < 8; ++k) g += dec.w.at(j, k) * dec.w.at(l, k);
            off_diagonal += g * g;
        }
    const auto z = random_tensor<double>({64, 8}, 7);
    philox_generator gen{.seed = 8};
    const std::int64_t probes = 50;
    const auto t = metrics::decoder_sensitivity(vjp_of(dec), z.view(), {10}, gen, {.probes = probes});
    double mean = 0;
    for (double total : metrics::sensitivity_trace_per_sample(t.view())) mean += total / 64.0;
    const double standard_error = std::sqrt(2 * off_diagonal / double(probes * 64));
    BOOST_TEST(std::abs(mean - trace) < 5 * standard_error, "mean " << mean << ", trace " << trace << ", standard error " << standard_error);
    BOOST_TEST(standard_error < 0.05 * trace);  // the check above is a sharp one
}

BOOST_AUTO_TEST_CASE(same_for_any_batch_size) {
    // 5 pixels per image: probes of a batch filled at once would split Philox blocks across latents.
    const linear_decoder dec{random_tensor<double>({5, 6}, 9)};
    const auto z = random_tensor<double>({7, 6}, 10);
    std::vector<tensor<double>> results;
    for (std::int64_t batch : {1, 3, 7}) {
        philox_generator gen{.seed = 11};
        results.push_back(metrics::decoder_sensitivity(vjp_of(dec), z.view(), {5}, gen, {.probes = 4, .batch_size = batch}));
    }
    for (std::size_t i = 1; i < results.size(); ++i) BOOST_TEST(results[i].to_vector() == results[0].to_vector(), tt::per_element());
}

BOOST_AUTO_TEST_CASE(through_the_autoencoder_backward) {
    // T_i of a tiny AutoencoderKL in double from its full Jacobian by central differences
    // ((decode(z + h·e_i) − decode(z − h·e_i)) / 2h), against the estimate through
    // decode/decode_backward with 400 Rademacher probes (within 5 standard errors per element).
    // One thread: the tiny model runs ~1,000 passes of small parallel regions, which a loaded
    // 2-core machine turns from a second into minutes; the numbers do not depend on it.
    with_threads(1, [] {
        models::autoencoder_kl<double> ae(tiny_config(), 3);
        randomize_parameters(ae, 4, 0.3);
        const auto z = random_tensor<double>({2, 2, 4, 4}, 5);
        const std::int64_t per_sample = 32, pixels = 64, probes = 400;
        const double h = 1e-5;
        std::vector<double> exact(64), variance(64);
        auto probe = z.clone();
        for (std::int64_t i = 0; i < z.numel(); ++i) {
            const double saved = probe.data()[i];
            probe.data()[i] = saved + h;
            const auto up = ae.decode(probe.view());
            probe.data()[i] = saved - h;
            const auto down = ae.decode(probe.view());
            probe.data()[i] = saved;
            const std::int64_t n = i / per_sample;
            double t = 0, fourth = 0;
            for (std::int64_t j = 0; j < pixels; ++j) {
                const double d = (up.data()[n * pixels + j] - down.data()[n * pixels + j]) / (2 * h);
                t += d * d;
                fourth += d * d * d * d;
            }
            exact[static_cast<std::size_t>(i)] = t;
            variance[static_cast<std::size_t>(i)] = 2 * (t * t - fourth);
        }
        philox_generator gen{.seed = 6};
        const auto estimate = metrics::decoder_sensitivity(ae, z.view(), gen, {.probes = probes});
        BOOST_REQUIRE(estimate.shape() == z.shape());
        double worst = 0, smallest = 1e300;
        for (std::size_t i = 0; i < exact.size(); ++i) {
            worst = std::max(worst, std::abs(estimate.data()[i] - exact[i]) / std::sqrt(variance[i] / double(probes)));
            smallest = std::min(smallest, exact[i]);
        }
        BOOST_TEST_MESSAGE("autoencoder: largest deviation from the finite-difference T_i: " << worst << " standard errors");
        BOOST_TEST(smallest > 0.0);
        BOOST_TEST(worst < 5.0, "largest deviation " << worst << " standard errors");

        // The generic vjp callable, written as decode + decode_backward, draws the same probes and
        // gets the same estimates.
        philox_generator object_gen{.seed = 7}, generic_gen{.seed = 7};
        const auto by_object = metrics::decoder_sensitivity(ae, z.view(), object_gen, {.probes = 8});
        auto vjp = [&ae](const tensor_view<double>& latents, const tensor_view<double>& v) {
            (void)ae.decode(latents);
            return ae.decode_backward(v);
        };
        const auto generic = metrics::decoder_sensitivity(vjp, z.view(), {1, 8, 8}, generic_gen, {.probes = 8});
        check_close(generic, by_object, 1e-12, 0.0, "vjp callable against decoder object");
        BOOST_TEST(generic_gen.offset == object_gen.offset);
        return 0;
    });
}

BOOST_AUTO_TEST_CASE(errors) {
    const linear_decoder dec{random_tensor<double>({5, 6}, 12)};
    const auto z = random_tensor<double>({3, 6}, 13);
    philox_generator gen;
    auto wrong = [](const tensor_view<double>&, const tensor_view<double>& v) { return tensor<double>::zeros({v.dim(0), 7}); };
    const auto msg = shape_error_message([&] { metrics::decoder_sensitivity(wrong, z.view(), {5}, gen); });
    BOOST_TEST(contains(msg, "(3, 7)"), msg);
    BOOST_TEST(contains(msg, "(3, 6)"), msg);
    BOOST_CHECK_THROW(metrics::decoder_sensitivity(vjp_of(dec), z.view(), {5}, gen, {.probes = 0}), std::invalid_argument);
    const auto flat = random_tensor<double>({6}, 14);
    BOOST_TEST(contains(shape_error_message([&] { metrics::decoder_sensitivity(vjp_of(dec), flat.view(), {5}, gen); }), "(6)"));
    BOOST_TEST(contains(shape_error_message([&] { metrics::sensitivity_trace_per_sample(tensor<double>{}.view()); }), "sensitivity_trace"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(equilibrium)

namespace {
/// T log-uniform over four decades, and logvar at the equilibrium σ = (λ1/T)^¼ (logvar = ½·log(λ1/T)).
std::pair<tensor<double>, tensor<double>> equilibrium_data(double lambda1, std::int64_t n = 2048) {
    auto t = random_tensor<double>({n / 64, 4, 4, 4}, 20);
    auto logvar = tensor<double>::empty(t.shape());
    for (std::int64_t i = 0; i < t.numel(); ++i) {
        t.data()[i] = std::pow(10.0, 2 * std::tanh(t.data()[i]));
        logvar.data()[i] = 0.5 * std::log(lambda1 / t.data()[i]);
    }
    return {std::move(logvar), std::move(t)};
}
} // namespace

BOOST_AUTO_TEST_CASE(exact_equilibrium_fits_a_unit_line) {
    const auto [logvar, t] = equilibrium_data(0.1);
    const auto fit = metrics::sensitivity_equilibrium(logvar.view(), t.view(), 0.1);
    BOOST_TEST(fit.correlation == 1.0, tt::tolerance(1e-12));
    BOOST_TEST(fit.slope == 1.0, tt::tolerance(1e-12));
    BOOST_TEST(std::abs(fit.intercept) < 1e-12);
    BOOST_TEST(fit.count == 2048);
    BOOST_TEST(fit.skipped == 0);
    // Another λ1 moves only the intercept, by ¼·log(λ1/λ1').
    const auto other = metrics::sensitivity_equilibrium(logvar.view(), t.view(), 1.0);
    BOOST_TEST(other.correlation == 1.0, tt::tolerance(1e-12));
    BOOST_TEST(other.slope == 1.0, tt::tolerance(1e-12));
    BOOST_TEST(other.intercept == 0.25 * std::log(0.1), tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(half_the_predicted_exponent) {
    // σ ∝ T^(−1/8) instead of T^(−1/4): perfectly correlated, slope ½.
    auto [logvar, t] = equilibrium_data(0.1);
    for (std::int64_t i = 0; i < t.numel(); ++i) logvar.data()[i] = 0.25 * std::log(0.1 / t.data()[i]) + 0.3;
    const auto fit = metrics::sensitivity_equilibrium(logvar.view(), t.view(), 0.1);
    BOOST_TEST(fit.correlation == 1.0, tt::tolerance(1e-12));
    BOOST_TEST(fit.slope == 0.5, tt::tolerance(1e-12));
    BOOST_TEST(fit.intercept == 0.15, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(independent_data_is_uncorrelated) {
    const auto logvar = random_tensor<double>({64, 4, 4, 4}, 21);
    auto t = random_tensor<double>({64, 4, 4, 4}, 22);
    for (auto& v : t.span()) v = std::exp(v);
    const auto fit = metrics::sensitivity_equilibrium(logvar.view(), t.view(), 0.1);
    // n = 4096: the correlation of independent data scatters by 1/√n ≈ 0.016.
    BOOST_TEST(std::abs(fit.correlation) < 0.06, "correlation " << fit.correlation);
    BOOST_TEST(std::abs(fit.slope) < 0.25, "slope " << fit.slope);
}

BOOST_AUTO_TEST_CASE(unusable_elements_are_skipped) {
    auto [logvar, t] = equilibrium_data(0.1);
    t.data()[0] = 0.0;
    t.data()[1] = -1.0;
    logvar.data()[2] = std::numeric_limits<double>::quiet_NaN();
    const auto fit = metrics::sensitivity_equilibrium(logvar.view(), t.view(), 0.1);
    BOOST_TEST(fit.skipped == 3);
    BOOST_TEST(fit.count == 2045);
    BOOST_TEST(fit.correlation == 1.0, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(errors) {
    const auto [logvar, t] = equilibrium_data(0.1);
    const auto other = tensor<double>::full({2, 4}, 1.0);
    const auto msg = shape_error_message([&] { metrics::sensitivity_equilibrium(logvar.view(), other.view(), 0.1); });
    BOOST_TEST(contains(msg, "(32, 4, 4, 4)"), msg);
    BOOST_TEST(contains(msg, "(2, 4)"), msg);
    BOOST_CHECK_THROW(metrics::sensitivity_equilibrium(logvar.view(), t.view(), 0.0), std::invalid_argument);
    const auto zeros = tensor<double>::zeros({2, 4});
    BOOST_CHECK_THROW(metrics::sensitivity_equilibrium(other.view(), zeros.view(), 0.1), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(scatter_pairs_as_csv) {
    temp_dir dir("equilibrium");
    const auto [logvar, t] = equilibrium_data(0.1, 128);
    metrics::write_equilibrium_pairs(dir / "pairs.csv", logvar.view(), t.view());
    std::ifstream in(dir / "pairs.csv");
    std::string line;
    std::getline(in, line);
    BOOST_TEST(line == "sigma2,sensitivity");
    std::int64_t rows = 0;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        double sigma2 = 0, sensitivity = 0;
        char comma = 0;
        fields >> sigma2 >> comma >> sensitivity;
        BOOST_TEST(sigma2 == std::exp(logvar.data()[rows]), tt::tolerance(1e-8));
        BOOST_TEST(sensitivity == t.data()[rows], tt::tolerance(1e-8));
        // At equilibrium σ² = √(λ1/T).
        BOOST_TEST(sigma2 == std::sqrt(0.1 / sensitivity), tt::tolerance(1e-7));
        ++rows;
    }
    BOOST_TEST(rows == 128);
}

BOOST_AUTO_TEST_SUITE_END()
