#define BOOST_TEST_MODULE seed_statistics
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "vediff/metrics/seed_statistics.hpp"

using namespace vediff;
namespace tt = boost::test_tools;

// Reference values: scipy.stats.t.ppf and numpy (std with ddof = 1), computed once by hand; Boost.Math
// quantiles agree to ~4e-11 relative, hence the 1e-9 tolerance:
//   t.ppf(0.975, 2) = 4.302652729911275, t.ppf(0.975, 4) = 2.7764451051977987, t.ppf(0.95, 9) = 1.8331129326536335

BOOST_AUTO_TEST_CASE(student_t_quantiles_match_scipy) {
    BOOST_TEST(metrics::student_t_quantile(0.975, 2) == 4.302652729911275, tt::tolerance(1e-9));
    BOOST_TEST(metrics::student_t_quantile(0.975, 4) == 2.7764451051977987, tt::tolerance(1e-9));
    BOOST_TEST(metrics::student_t_quantile(0.95, 9) == 1.8331129326536335, tt::tolerance(1e-9));
    BOOST_CHECK_THROW(metrics::student_t_quantile(0.975, 0), std::invalid_argument);
    BOOST_CHECK_THROW(metrics::student_t_quantile(1.0, 3), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(mean_interval_uses_the_t_distribution_over_n_minus_1) {
    const std::vector<double> x{1.0, 2.0, 3.0};
    const auto r = metrics::mean_interval(x);
    BOOST_TEST(r.n == 3);
    BOOST_TEST(r.mean == 2.0, tt::tolerance(1e-15));
    // t(0.975, 2) · s / √n with s = 1: a normal quantile (1.96) or the population deviation would differ.
    BOOST_TEST(r.half_width == 2.484137711843753, tt::tolerance(1e-9));
    BOOST_TEST(r.lower() == 2.0 - 2.484137711843753, tt::tolerance(1e-9));
    // 90% is narrower than 95%.
    BOOST_TEST(metrics::mean_interval(x, 0.90).half_width < r.half_width);
}

BOOST_AUTO_TEST_CASE(one_value_has_no_spread_and_non_finite_values_are_refused) {
    const std::vector<double> one{5.0};
    const auto r = metrics::mean_interval(one);
    BOOST_TEST(r.mean == 5.0);
    BOOST_TEST(!r.has_spread());
    BOOST_TEST(std::isnan(r.half_width));
    const std::vector<double> bad{1.0, std::numeric_limits<double>::quiet_NaN()};
    BOOST_CHECK_THROW(metrics::mean_interval(bad), std::invalid_argument);
    BOOST_CHECK_THROW(metrics::mean_interval(one, 1.5), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(paired_difference_removes_what_the_seeds_share) {
    // Seed effects (10, 12, 11, 13) far larger than the effect (≈ 1.4): unpaired intervals overlap,
    // the paired one excludes 0.
    const std::vector<double> a{10.0, 12.0, 11.0, 13.0}, b{9.0, 10.5, 10.0, 11.0};
    const auto d = metrics::paired_difference(a, b);
    BOOST_TEST(d.mean == 1.375, tt::tolerance(1e-14));
    BOOST_TEST(d.half_width == 0.761740090414539, tt::tolerance(1e-9));
    const auto ia = metrics::mean_interval(a), ib = metrics::mean_interval(b);
    BOOST_TEST(ia.lower() < ib.upper());  // unpaired: the intervals overlap
    BOOST_TEST(d.lower() > 0);
    BOOST_CHECK_THROW(metrics::paired_difference(a, std::vector<double>{1.0}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(verdicts_follow_the_interval_and_the_metric_direction) {
    using metrics::verdict;
    const metrics::seed_interval above{.mean = 2.0, .half_width = 1.0, .n = 3};   // [1, 3]
    const metrics::seed_interval across{.mean = 0.5, .half_width = 1.0, .n = 3};  // [−0.5, 1.5]
    const metrics::seed_interval below{.mean = -2.0, .half_width = 1.0, .n = 3};  // [−3, −1]
    // Difference = candidate − baseline. For gFD (lower is better) a positive difference is worse.
    BOOST_TEST((metrics::compare(above, true) == verdict::worse));
    BOOST_TEST((metrics::compare(below, true) == verdict::better));
    BOOST_TEST((metrics::compare(above, false) == verdict::better));
    BOOST_TEST((metrics::compare(below, false) == verdict::worse));
    BOOST_TEST((metrics::compare(across, true) == verdict::not_separable));
    BOOST_TEST((metrics::compare(metrics::seed_interval{.mean = 5.0, .n = 1}, true) == verdict::one_seed));
    BOOST_TEST(metrics::to_string(verdict::not_separable) == "not separable");
}
