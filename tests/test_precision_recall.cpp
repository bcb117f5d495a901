#define BOOST_TEST_MODULE precision_recall
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/precision_recall.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

tensor<double> column(std::vector<double> values, double shift = 0) {
    for (auto& v : values) v += shift;
    return tensor<double>::from_host({static_cast<std::int64_t>(values.size()), 1}, std::span<const double>(values));
}

/// `per_cluster` points N(center, 0.3²) around each of the given cluster centres (3-D, 20 apart).
tensor<double> clusters(const std::vector<int>& which, std::int64_t per_cluster, std::uint64_t seed) {
    const double centers[4][3] = {{0, 0, 0}, {20, 0, 0}, {0, 20, 0}, {0, 0, 20}};
    auto x = random_tensor<double>({static_cast<std::int64_t>(which.size()) * per_cluster, 3}, seed, 0, 0.3);
    for (std::size_t c = 0; c < which.size(); ++c)
        for (std::int64_t i = 0; i < per_cluster; ++i)
            for (int d = 0; d < 3; ++d) x.at(static_cast<std::int64_t>(c) * per_cluster + i, d) += centers[which[c]][d];
    return x;
}

void expect_radii(const std::vector<double>& got, const std::vector<double>& expected) {
    BOOST_REQUIRE_EQUAL(got.size(), expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) BOOST_TEST(std::abs(got[i] - expected[i]) < 1e-12, "radius " << i << ": " << got[i] << " vs " << expected[i]);
}

} // namespace

BOOST_AUTO_TEST_SUITE(radii)

BOOST_AUTO_TEST_CASE(kth_nearest_other_point) {
    // 1-D points 0, 1, 2, 3, 10: nearest others at 1, 1, 1, 1, 7; second nearest 2, 1, 1, 2, 8.
    const auto x = column({0, 1, 2, 3, 10});
    const std::vector<double> k1{1, 1, 1, 1, 7}, k2{2, 1, 1, 2, 8};
    expect_radii(metrics::kth_neighbour_radii(x.view(), 1), k1);
    expect_radii(metrics::kth_neighbour_radii(x.view(), 2), k2);
    // A duplicate is an other point at distance 0; the point itself is not.
    const auto dup = column({5, 5, 8});
    const std::vector<double> d1{0, 0, 3};
    expect_radii(metrics::kth_neighbour_radii(dup.view(), 1), d1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(precision_and_recall)

BOOST_AUTO_TEST_CASE(hand_computed_one_dimensional) {
    // Real 0, 1, 2, 3, 10 (k = 1 radii 1, 1, 1, 1, 7); generated 0.5, 4.5, 20, 16 (radii 4 each).
    // Precision: 0.5 (ball of 0), 4.5 (ball of 10: 5.5 ≤ 7), 16 (6 ≤ 7) are in, 20 is not: 3/4.
    // Recall: 0..3 lie within 4 of 0.5 or 4.5; 10 is 5.5 from 4.5 and 6 from 16: 4/5.
    // Shifted by 1e9 the answer is the same: without the centring, ‖a‖² + ‖b‖² − 2ab would lose
    // every digit of these distances to rounding at 1e18 (one ulp there is 128).
    for (double shift : {0.0, 1e9}) {
        BOOST_TEST_CONTEXT("shift " << shift) {
            const auto real = column({0, 1, 2, 3, 10}, shift), generated = column({0.5, 4.5, 20, 16}, shift);
            const auto k1 = metrics::precision_recall(real.view(), generated.view(), {.k = 1});
            BOOST_TEST(k1.precision == 0.75);
            BOOST_TEST(k1.recall == 0.8);
            // k = 2: real radii 2, 1, 1, 2, 8 (20 still out: 10 > 8); generated radii 15.5, 11.5, 11.5, 15.5 cover 10.
            const auto k2 = metrics::precision_recall(real.view(), generated.view(), {.k = 2});
            BOOST_TEST(k2.precision == 0.75);
            BOOST_TEST(k2.recall == 1.0);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_point_on_the_sphere_is_inside) {
    // Real 0, 1 with k = 1: both radii 1. Generated 2 lies exactly at distance 1 from 1 (exact in
    // binary), 2.5 outside: precision 1/2 (an open ball would give 0).
    const auto real = column({0, 1}), generated = column({2, 2.5});
    BOOST_TEST(metrics::precision_recall(real.view(), generated.view(), {.k = 1}).precision == 0.5);
}

BOOST_AUTO_TEST_CASE(identical_sets) {
    const auto x = random_tensor<double>({200, 5}, 3);
    const auto r = metrics::precision_recall(x.view(), x.view());
    BOOST_TEST(r.precision == 1.0);
    BOOST_TEST(r.recall == 1.0);
}

BOOST_AUTO_TEST_CASE(far_away_sets) {
    const auto real = random_tensor<double>({100, 4}, 5);
    auto generated = random_tensor<double>({120, 4}, 6);
    for (std::int64_t i = 0; i < generated.numel(); ++i) generated.data()[i] += 100.0;
    const auto r = metrics::precision_recall(real.view(), generated.view());
    BOOST_TEST(r.precision == 0.0);
    BOOST_TEST(r.recall == 0.0);
}

BOOST_AUTO_TEST_CASE(half_of_the_clusters) {
    // Real data in four well-separated clusters; a generator that only produces two of them is
    // precise (everything it makes is realistic) but recalls half of the data.
    const auto real = clusters({0, 1, 2, 3}, 40, 11);
    // Copies of the real points of clusters 0 and 1: exactly precision 1, recall 1/2.
    const auto copies = real.slice(0, 80);
    const auto exact = metrics::precision_recall(real.view(), copies);
    BOOST_TEST(exact.precision == 1.0);
    BOOST_TEST(exact.recall == 0.5);
    // Fresh samples of clusters 0 and 1: nearly all inside, recall near (and never above) 1/2.
    const auto fresh = clusters({0, 1}, 40, 12);
    const auto r = metrics::precision_recall(real.view(), fresh.view());
    BOOST_TEST_MESSAGE("two of four clusters, fresh samples: precision " << r.precision << ", recall " << r.recall);
    BOOST_TEST(r.precision >= 0.85, "precision " << r.precision);
    BOOST_TEST(r.recall <= 0.5);
    BOOST_TEST(r.recall >= 0.4, "recall " << r.recall);
}

BOOST_AUTO_TEST_CASE(swapping_the_sets_swaps_the_scores) {
    const auto a = clusters({0, 1, 2}, 30, 21), b = clusters({1, 2, 3}, 25, 22);
    const auto ab = metrics::precision_recall(a.view(), b.view()), ba = metrics::precision_recall(b.view(), a.view());
    BOOST_TEST(ab.precision == ba.recall);
    BOOST_TEST(ab.recall == ba.precision);
    BOOST_TEST(ab.precision != ab.recall);  // the sets differ, so the check above is not vacuous
}

BOOST_AUTO_TEST_CASE(blocks_do_not_change_the_result) {
    const auto real = random_tensor<double>({300, 6}, 31);
    const auto generated = random_tensor<double>({250, 6}, 32, 0, 1.3);
    const auto whole = metrics::precision_recall(real.view(), generated.view());
    BOOST_TEST(whole.precision > 0.0);
    BOOST_TEST(whole.precision < 1.0);
    for (std::int64_t block : {1, 299, 5000}) {
        const auto r = metrics::precision_recall(real.view(), generated.view(), {.k = 3, .block_elements = block});
        BOOST_TEST(r.precision == whole.precision, "block " << block);
        BOOST_TEST(r.recall == whole.recall, "block " << block);
    }
}

// Float features far from the origin (a large common offset, as a network's unnormalized
// activations can have) give what a brute-force count of direct differences gives on the same
// float values: the metric's centering and its ‖a‖² + ‖b‖² − 2·a·b in double lose nothing that
// decides a neighbour. (The spread is large against float's spacing at the offset, so no two
// distances tie exactly: a tie would be decided by rounding either way.)
BOOST_AUTO_TEST_CASE(float_features_far_from_the_origin_match_a_direct_count) {
    constexpr std::int64_t n_real = 120, n_gen = 100, f = 4;
    const auto real_noise = random_tensor<double>({n_real, f}, 51, 0, 1.0);
    const auto gen_noise = random_tensor<double>({n_gen, f}, 52, 0, 1.3);
    auto real = tensor<float>::empty({n_real, f}), generated = tensor<float>::empty({n_gen, f});
    for (std::int64_t i = 0; i < real.numel(); ++i) real.data()[i] = static_cast<float>(1e3 + real_noise.data()[i]);
    for (std::int64_t i = 0; i < generated.numel(); ++i) generated.data()[i] = static_cast<float>(1e3 + 0.5 + gen_noise.data()[i]);
    // The direct count on the same float values: distances of differences, k-th nearest other point.
    const auto squared = [](const tensor<float>& a, std::int64_t i, const tensor<float>& b, std::int64_t j) {
        double s = 0;
        for (std::int64_t d = 0; d < f; ++d) {
            const double diff = double(a.at(i, d)) - double(b.at(j, d));
            s += diff * diff;
        }
        return s;
    };
    const auto radii = [&](const tensor<float>& x) {
        std::vector<double> r;
        for (std::int64_t i = 0; i < x.dim(0); ++i) {
            std::vector<double> d;
            for (std::int64_t j = 0; j < x.dim(0); ++j)
                if (j != i) d.push_back(squared(x, i, x, j));
            std::nth_element(d.begin(), d.begin() + 2, d.end());
            r.push_back(d[2]);
        }
        return r;
    };
    const auto coverage = [&](const tensor<float>& manifold, const std::vector<double>& r, const tensor<float>& queries) {
        std::int64_t inside = 0;
        for (std::int64_t q = 0; q < queries.dim(0); ++q)
            for (std::int64_t m = 0; m < manifold.dim(0); ++m)
                if (squared(queries, q, manifold, m) <= r[std::size_t(m)]) {
                    ++inside;
                    break;
                }
        return double(inside) / double(queries.dim(0));
    };
    const double precision = coverage(real, radii(real), generated), recall = coverage(generated, radii(generated), real);
    BOOST_TEST_MESSAGE("direct count: precision " << precision << ", recall " << recall);
    BOOST_REQUIRE(precision > 0.05);  // neither 0 nor 1, so the comparison can tell a wrong answer
    BOOST_REQUIRE(precision < 0.95);
    const auto r = metrics::precision_recall(real.view(), generated.view());
    BOOST_TEST(r.precision == precision);
    BOOST_TEST(r.recall == recall);
}

BOOST_AUTO_TEST_CASE(errors) {
    const auto three = random_tensor<double>({3, 2}, 41), ten = random_tensor<double>({10, 2}, 42);
    auto msg = error_message<std::invalid_argument>([&] { metrics::precision_recall(three.view(), ten.view()); });
    BOOST_TEST(contains(msg, "k = 3"), msg);
    BOOST_TEST(contains(msg, "real features"), msg);
    BOOST_TEST(contains(msg, "(3, 2)"), msg);
    msg = error_message<std::invalid_argument>([&] { metrics::precision_recall(ten.view(), three.view()); });
    BOOST_TEST(contains(msg, "generated features"), msg);
    BOOST_CHECK_THROW(metrics::precision_recall(ten.view(), ten.view(), {.k = 0}), std::invalid_argument);
    BOOST_CHECK_THROW(metrics::kth_neighbour_radii(three.view(), 3), std::invalid_argument);
    const auto wide = random_tensor<double>({10, 3}, 43);
    msg = shape_error_message([&] { metrics::precision_recall(ten.view(), wide.view()); });
    BOOST_TEST(contains(msg, "(10, 2)"), msg);
    BOOST_TEST(contains(msg, "(10, 3)"), msg);
    const auto flat = random_tensor<double>({10}, 44);
    BOOST_TEST(contains(shape_error_message([&] { metrics::precision_recall(flat.view(), ten.view()); }), "(N, F)"));
}

BOOST_AUTO_TEST_SUITE_END()
