// The bootstrap spread of a Fréchet distance: it must estimate how much the FD of N samples varies
// from one set of N samples to another, which the test measures directly by drawing many
// independent sets from the same distribution.
#define BOOST_TEST_MODULE frechet_bootstrap
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/frechet_bootstrap.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

constexpr std::int64_t features = 6;

/// (n, F) rows of N(shift, diag(scale²)) with per-feature scales 0.5..1.5, from Philox (seed, stream).
tensor<float> gaussian_rows(std::int64_t n, std::uint64_t seed, std::uint64_t stream, float shift) {
    auto x = random_tensor<float>({n, features}, seed, stream);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < features; ++j) x.at(i, j) = shift + x.at(i, j) * (0.5f + float(j) / float(features - 1));
    return x;
}

double sd_of(const std::vector<double>& v) {
    double mean = 0;
    for (double d : v) mean += d / double(v.size());
    double squares = 0;
    for (double d : v) squares += (d - mean) * (d - mean);
    return std::sqrt(squares / double(v.size() - 1));
}

} // namespace

BOOST_AUTO_TEST_CASE(spread_matches_the_spread_over_independent_sample_sets) {
    // The reference: a large set of the unshifted distribution; the "generator": shifted by 0.3.
    metrics::feature_statistics reference;
    reference.add(gaussian_rows(20000, 1, 0, 0.0f).view());
    constexpr std::int64_t n = 300;
    std::vector<double> independent;
    for (std::uint64_t set = 0; set < 60; ++set) {
        metrics::feature_statistics s;
        s.add(gaussian_rows(n, 2, set, 0.3f).view());
        independent.push_back(metrics::frechet_distance(s, reference));
    }
    const double true_sd = sd_of(independent);
    BOOST_TEST_MESSAGE("sd of the FD over 60 independent sets of " << n << ": " << true_sd);
    BOOST_REQUIRE(true_sd > 0);
    // The bootstrap of single sets, averaged over a few of them (one set's estimate is itself noisy).
    double bootstrap_sd = 0;
    constexpr int sets = 8;
    for (std::uint64_t set = 0; set < sets; ++set) {
        const auto x = gaussian_rows(n, 2, 100 + set, 0.3f);
        const auto r = metrics::frechet_bootstrap(x.view(), reference, 100, 7, set);
        BOOST_TEST(r.distances.size() == 100u);
        bootstrap_sd += r.sd / sets;
    }
    BOOST_TEST_MESSAGE("mean bootstrap sd: " << bootstrap_sd);
    BOOST_TEST(bootstrap_sd > 0.7 * true_sd);
    BOOST_TEST(bootstrap_sd < 1.4 * true_sd);
}

BOOST_AUTO_TEST_CASE(resamples_with_replacement_from_the_seed) {
    metrics::feature_statistics reference;
    reference.add(gaussian_rows(2000, 1, 0, 0.0f).view());
    const auto x = gaussian_rows(200, 3, 0, 0.2f);
    const auto a = metrics::frechet_bootstrap(x.view(), reference, 10, 5, 0);
    const auto b = metrics::frechet_bootstrap(x.view(), reference, 10, 5, 0);
    const auto c = metrics::frechet_bootstrap(x.view(), reference, 10, 6, 0);
    BOOST_TEST(a.distances == b.distances);
    BOOST_TEST(a.distances != c.distances);
    // Resampling with replacement changes the set, so the distances differ from the set's own FD
    // and from each other (a permutation of the rows would give the same FD every time).
    metrics::feature_statistics own;
    own.add(x.view());
    const double fd = metrics::frechet_distance(own, reference);
    for (double d : a.distances) BOOST_TEST(std::abs(d - fd) > 1e-9);
    BOOST_TEST(a.sd > 0);
    double mean = 0;
    for (double d : a.distances) mean += d / 10;
    BOOST_TEST(a.mean == mean, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(bad_input_is_named) {
    metrics::feature_statistics reference;
    reference.add(gaussian_rows(100, 1, 0, 0.0f).view());
    const auto x = gaussian_rows(50, 3, 0, 0.0f);
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { metrics::frechet_bootstrap(x.view(), reference, 1, 0, 0); }),
                        "1 resamples"));
    const auto one = gaussian_rows(1, 3, 0, 0.0f);
    BOOST_TEST(contains(shape_error_message([&] { metrics::frechet_bootstrap(one.view(), reference, 5, 0, 0); }), "N >= 2"));
}
