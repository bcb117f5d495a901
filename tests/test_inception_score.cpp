#define BOOST_TEST_MODULE inception_score
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/inception_score.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

const fixture& reference() {
    static const fixture f = load_fixture("inception_score.txt");
    return f;
}

/// (n, k) probabilities: row i is one-hot on class i mod k.
tensor<double> one_hot_rows(std::int64_t n, std::int64_t k) {
    auto p = tensor<double>::zeros({n, k});
    for (std::int64_t i = 0; i < n; ++i) p.at(i, i % k) = 1.0;
    return p;
}

} // namespace

BOOST_AUTO_TEST_SUITE(reference_values)

BOOST_AUTO_TEST_CASE(adm_splits_match_numpy) {
    // tests/fixtures/make_inception_score.py: ADM's compute_inception_score with split_size 50 on
    // 230 rows: four splits of 50 and a last one of 30.
    const auto logits = reference().get("logits");
    const auto expected = reference().get("adm.split_scores");
    const auto r = metrics::inception_score_from_logits(logits.view(), metrics::inception_score_splits::of_size(50));
    BOOST_TEST_REQUIRE(r.split_scores.size() == 5u);
    for (std::size_t s = 0; s < 5; ++s) BOOST_TEST(r.split_scores[s] == expected.data()[s], tt::tolerance(1e-12));
    BOOST_TEST(r.mean == reference().scalar("adm.mean"), tt::tolerance(1e-12));
    // The default is ADM's 5000-row splits: one split here, a different value.
    const auto whole = metrics::inception_score_from_logits(logits.view());
    BOOST_TEST(whole.split_scores.size() == 1u);
    BOOST_TEST(whole.std == 0.0);
    BOOST_TEST(std::abs(whole.mean - r.mean) > 1e-3);
}

BOOST_AUTO_TEST_CASE(ten_splits_match_improved_gan) {
    const auto logits = reference().get("logits");
    const auto expected = reference().get("ten.split_scores");
    const auto r = metrics::inception_score_from_logits(logits.view(), metrics::inception_score_splits::count(10));
    BOOST_TEST_REQUIRE(r.split_scores.size() == 10u);
    for (std::size_t s = 0; s < 10; ++s) BOOST_TEST(r.split_scores[s] == expected.data()[s], tt::tolerance(1e-12));
    BOOST_TEST(r.mean == reference().scalar("ten.mean"), tt::tolerance(1e-12));
    BOOST_TEST(r.std == reference().scalar("ten.std"), tt::tolerance(1e-10));
}

BOOST_AUTO_TEST_CASE(probabilities_give_the_logits_score) {
    const auto logits = reference().get("logits");
    auto p = tensor<float>::empty(logits.shape());
    for (std::int64_t i = 0; i < logits.dim(0); ++i) {
        double sum = 0;
        for (std::int64_t j = 0; j < logits.dim(1); ++j) sum += std::exp(logits.at(i, j));
        for (std::int64_t j = 0; j < logits.dim(1); ++j) p.at(i, j) = float(std::exp(logits.at(i, j)) / sum);
    }
    const auto from_p = metrics::inception_score_from_probabilities(p.view(), metrics::inception_score_splits::of_size(50));
    // float32 probabilities: the score to float precision.
    BOOST_TEST(from_p.mean == reference().scalar("adm.mean"), tt::tolerance(1e-5));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(closed_forms)

BOOST_AUTO_TEST_CASE(identical_rows_score_one) {
    auto logits = tensor<double>::empty({40, 7});
    for (std::int64_t i = 0; i < 40; ++i)
        for (std::int64_t j = 0; j < 7; ++j) logits.at(i, j) = 0.3 * double(j * j) - 2.0;
    const auto r = metrics::inception_score_from_logits(logits.view(), metrics::inception_score_splits::count(4));
    for (double s : r.split_scores) BOOST_TEST(s == 1.0, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(one_hot_over_k_equally_used_classes_scores_k) {
    // Exact zeros in the probabilities: 0·log 0 counts as 0.
    for (std::int64_t k : {1, 2, 5, 10}) {
        const auto r = metrics::inception_score_from_probabilities(one_hot_rows(10 * k, k).view(), metrics::inception_score_splits::count(2));
        for (double s : r.split_scores) BOOST_TEST(s == double(k), tt::tolerance(1e-12));
        BOOST_TEST(r.std == 0.0, tt::tolerance(1e-12));
    }
    // Logits with a margin of 2000: probabilities underflow to 0, log-softmax does not.
    auto logits = tensor<float>::full({60, 6}, -1000.0f);
    for (std::int64_t i = 0; i < 60; ++i) logits.at(i, i % 6) = 1000.0f;
    BOOST_TEST(metrics::inception_score_from_logits(logits.view()).mean == 6.0, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(splits_are_scored_apart) {
    // Split 0: one-hot over 2 classes (IS 2); split 1: one-hot over 4 (IS 4) → mean 3, std 1.
    auto p = tensor<double>::zeros({16, 4});
    for (std::int64_t i = 0; i < 8; ++i) p.at(i, i % 2) = 1.0;
    for (std::int64_t i = 8; i < 16; ++i) p.at(i, i % 4) = 1.0;
    for (auto splits : {metrics::inception_score_splits::count(2), metrics::inception_score_splits::of_size(8)}) {
        const auto r = metrics::inception_score_from_probabilities(p.view(), splits);
        BOOST_TEST_REQUIRE(r.split_scores.size() == 2u);
        BOOST_TEST(r.split_scores[0] == 2.0, tt::tolerance(1e-12));
        BOOST_TEST(r.split_scores[1] == 4.0, tt::tolerance(1e-12));
        BOOST_TEST(r.mean == 3.0, tt::tolerance(1e-12));
        BOOST_TEST(r.std == 1.0, tt::tolerance(1e-12));
    }
    // All 16 rows as one split: classes 0, 1 used 6 times each, 2, 3 twice: exp(H(p(y))).
    const double h = -2 * (6.0 / 16) * std::log(6.0 / 16) - 2 * (2.0 / 16) * std::log(2.0 / 16);
    BOOST_TEST(metrics::inception_score_from_probabilities(p.view()).mean == std::exp(h), tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(bad_inputs_are_named) {
    BOOST_TEST(contains(shape_error_message([] { metrics::inception_score_from_logits(tensor<float>::zeros({5}).view()); }), "(5)"));
    BOOST_TEST(contains(shape_error_message([] { metrics::inception_score_from_logits(tensor<float>::zeros({0, 3}).view()); }), "(0, 3)"));
    auto logits = tensor<float>::zeros({4, 3});
    logits.at(2, 1) = std::numeric_limits<float>::quiet_NaN();
    const auto nan = error_message<numeric_error>([&] { metrics::inception_score_from_logits(logits.view()); });
    BOOST_TEST(contains(nan, "row 2, class 1"), nan);
    auto p = one_hot_rows(4, 2);
    p.at(3, 0) = 0.5;  // row 3 sums to 1.5
    const auto sum = error_message<std::invalid_argument>([&] { metrics::inception_score_from_probabilities(p.view()); });
    BOOST_TEST(contains(sum, "row 3 sums to 1.5"), sum);
    auto negative = one_hot_rows(4, 2);
    negative.at(1, 0) = -0.25;
    negative.at(1, 1) = 1.25;
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { metrics::inception_score_from_probabilities(negative.view()); }), "row 1, class 0"));
    const auto ok = one_hot_rows(4, 2);
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] {
                            metrics::inception_score_from_probabilities(ok.view(), metrics::inception_score_splits::count(5));
                        }),
                        "5 splits of 4 samples"));
    BOOST_CHECK_THROW(metrics::inception_score_from_probabilities(ok.view(), metrics::inception_score_splits::of_size(0)), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
