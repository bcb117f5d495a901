// The experiment's figure data: gFD against the KL weight keeps each gFD with its own row's β and
// seed (a sort of the β values alone once paired the paper preset's seed-1 row with β = 8).
#define BOOST_TEST_MODULE experiment_figures
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include "vediff/backend/cpu.hpp"
#include "vediff/jobs/experiment.hpp"

using namespace vediff;

namespace {
nlohmann::json row(const char* loss, double weight, std::uint64_t seed, double gfd) {
    return {{"loss", loss}, {"weight", weight}, {"seed", seed}, {"eval", {{"samples", {{"samples_sde", {{"gfd", gfd}}}}}}}};
}
} // namespace

BOOST_AUTO_TEST_CASE(kl_gfd_points_keep_their_weight_and_seed) {
    // The paper preset's order: the sweep (increasing β), VE rows, then the seed-1 rows.
    const nlohmann::json rows = {row("kl", 1e-6, 0, 100.5), row("kl", 1e-2, 0, 89.2), row("kl", 1.0, 0, 137.7), row("kl", 8.0, 0, 370.6),
                                 row("ve", 0.1, 0, 94.7), row("kl", 1e-6, 1, 81.8), row("ve", 0.1, 1, 87.7)};
    const auto series = jobs::experiment_detail::kl_gfd_series(rows);
    BOOST_REQUIRE_EQUAL(series.size(), 2u);
    BOOST_TEST(series[0].name == "KL");
    BOOST_TEST(series[0].x == (std::vector<double>{1e-6, 1e-2, 1.0, 8.0}), boost::test_tools::per_element());
    BOOST_TEST(series[0].y == (std::vector<double>{100.5, 89.2, 137.7, 370.6}), boost::test_tools::per_element());
    BOOST_TEST(series[1].name == "KL (seed 1)");
    BOOST_TEST(series[1].x == std::vector<double>{1e-6}, boost::test_tools::per_element());
    BOOST_TEST(series[1].y == std::vector<double>{81.8}, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(rows_out_of_order_are_sorted_as_pairs) {
    const nlohmann::json rows = {row("kl", 1.0, 0, 3.0), row("kl", 1e-6, 0, 1.0), row("kl", 1e-2, 0, 2.0)};
    const auto series = jobs::experiment_detail::kl_gfd_series(rows);
    BOOST_REQUIRE_EQUAL(series.size(), 1u);
    BOOST_TEST(series[0].x == (std::vector<double>{1e-6, 1e-2, 1.0}), boost::test_tools::per_element());
    BOOST_TEST(series[0].y == (std::vector<double>{1.0, 2.0, 3.0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(seeds_of_one_configuration_share_a_colour_and_configurations_differ) {
    // Eleven configurations: more than the palette's ten, so the colours wrap once.
    nlohmann::json rows = {row("kl", 1e-6, 0, 1), row("ve", 0.1, 0, 1), row("kl", 1e-6, 1, 1), row("ve", 0.1, 1, 1),
                           row("ve", 0.01, 0, 1)};
    for (int k = 0; k < 8; ++k) rows.push_back(row("kl", 1.0 + k, 0, 1));
    const auto colors = jobs::experiment_detail::configuration_colors(rows);
    BOOST_REQUIRE_EQUAL(colors.size(), rows.size());
    BOOST_TEST(colors[0] == colors[2]);  // KL 1e-6, seeds 0 and 1
    BOOST_TEST(colors[1] == colors[3]);  // VE 0.1, seeds 0 and 1
    BOOST_TEST(colors[0] != colors[1]);
    BOOST_TEST(colors[4] != colors[0]);
    BOOST_TEST(colors[4] != colors[1]);
    for (std::size_t i = 4; i < 12; ++i)  // the first ten configurations all differ
        for (std::size_t j = i + 1; j < 12; ++j) BOOST_TEST(colors[i] != colors[j]);
    BOOST_TEST(colors[12] == colors[0]);  // the eleventh configuration wraps to the first colour
}
