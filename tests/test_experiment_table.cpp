// The experiment's summary tables: configurations grouped across seeds with t intervals, VE − KL
// paired by seed (never by row order), verdicts read from the interval, and the gFD's seed spread
// next to its sampling spread.
#define BOOST_TEST_MODULE experiment_table
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "support/errors.hpp"
#include "vediff/jobs/experiment_table.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

nlohmann::json run(const char* loss, double weight, std::uint64_t seed, double gfd_sde, double psnr, double bootstrap_sd = 1.0) {
    nlohmann::json sde = {{"gfd", gfd_sde}, {"precision", 0.5}, {"recall", 0.4}, {"classifier_accuracy", 0.9}, {"gfd_bootstrap_sd", bootstrap_sd}};
    nlohmann::json ode = {{"gfd", gfd_sde - 10}, {"precision", 0.5}, {"recall", 0.4}, {"classifier_accuracy", 0.9}};
    return {{"loss", loss},
            {"weight", weight},
            {"seed", seed},
            {"eval",
             {{"tokenizer", {{"psnr", psnr}, {"rfd", 3.0}, {"robustness", {{{"scale", 0.2}, {"psnr", 20.0 + double(seed)}}}}}},
              {"samples", {{"samples_sde", sde}, {"samples_ode", ode}}}}}};
}

const jobs::experiment_metric& metric(const std::string& key) {
    for (const auto& m : jobs::experiment_quality_metrics())
        if (m.key == key) return m;
    throw std::logic_error("no metric " + key);
}

// t quantile at 0.975 with 2 degrees of freedom.
constexpr double t975_2 = 4.302652729911275;

} // namespace

BOOST_AUTO_TEST_CASE(rows_are_grouped_by_loss_and_weight_and_ordered_by_seed) {
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("ve", 0.1, 0, 90, 24), run("kl", 1e-6, 2, 80, 25),
                                 run("kl", 1e-6, 1, 90, 25), run("kl", 1e-2, 0, 95, 24)};
    const auto configs = jobs::group_by_configuration(rows);
    BOOST_REQUIRE_EQUAL(configs.size(), 3u);
    BOOST_TEST(configs[0].label() == "KL 1e-06");
    BOOST_TEST(configs[0].seeds() == (std::vector<std::uint64_t>{0, 1, 2}), tt::per_element());
    BOOST_TEST(configs[1].label() == "VE 0.1");
    BOOST_TEST(configs[2].label() == "KL 0.01");
    // The baseline is the KL configuration with the most seeds.
    BOOST_TEST(jobs::kl_baseline(configs)->label() == "KL 1e-06");
}

BOOST_AUTO_TEST_CASE(across_seeds_the_mean_has_a_student_t_interval) {
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("kl", 1e-6, 1, 90, 25), run("kl", 1e-6, 2, 80, 25)};
    const auto summary = jobs::experiment_summary_json(rows);
    const auto& gfd = summary["configurations"][0]["metrics"]["gfd_sde"];
    BOOST_TEST(gfd["mean"].get<double>() == 90.0, tt::tolerance(1e-12));
    // sd 10, standard error 10/√3.
    BOOST_TEST(gfd["half_width_95"].get<double>() == t975_2 * 10 / std::sqrt(3.0), tt::tolerance(1e-9));
    BOOST_TEST(gfd["n"].get<int>() == 3);
    const auto md = jobs::experiment_summary_markdown(rows);
    BOOST_TEST(contains(md, fmt::format("| KL 1e-06 | 3 | 25.00 ± 0.00 | 3.00 ± 0.00 | 90.00 ± {:.2f} |", t975_2 * 10 / std::sqrt(3.0))));
}

BOOST_AUTO_TEST_CASE(one_seed_has_no_interval_and_no_verdict) {
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("ve", 0.1, 0, 80, 24)};
    const auto summary = jobs::experiment_summary_json(rows);
    BOOST_TEST(summary["configurations"][0]["metrics"]["gfd_sde"]["half_width_95"].is_null());
    bool seen = false;
    for (const auto& p : summary["paired"])
        if (p["metric"] == "gfd_sde") {
            seen = true;
            BOOST_TEST(p["verdict"].get<std::string>() == "one seed: no interval");
            BOOST_TEST(p["difference"].get<double>() == -20.0, tt::tolerance(1e-12));
        }
    BOOST_TEST(seen);
    BOOST_TEST(contains(jobs::experiment_summary_markdown(rows), "| VE 0.1 | gFD (SDE) | 1 | -20.00 | one seed: no interval |"));
}

BOOST_AUTO_TEST_CASE(pairs_are_matched_by_seed_not_by_row_order) {
    // KL's gFD varies a lot across seeds (100, 60, 80); VE is 5 lower than KL for every seed. Paired
    // by seed the difference is exactly −5 every time: better, with a zero-width interval. Paired by
    // row order (VE's rows come in another order) it would mix seeds and not be separable.
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("kl", 1e-6, 1, 60, 25), run("kl", 1e-6, 2, 80, 25),
                                 run("ve", 0.1, 2, 75, 24), run("ve", 0.1, 0, 95, 24), run("ve", 0.1, 1, 55, 24)};
    const auto configs = jobs::group_by_configuration(rows);
    const auto p = jobs::compare_paired(configs[1], configs[0], metric("gfd_sde"));
    BOOST_REQUIRE(p.has_value());
    BOOST_TEST(p->seeds == (std::vector<std::uint64_t>{0, 1, 2}), tt::per_element());
    BOOST_TEST(p->difference.mean == -5.0, tt::tolerance(1e-12));
    BOOST_TEST(p->difference.half_width == 0.0, tt::tolerance(1e-12));
    // A zero-width interval below zero on a lower-is-better metric.
    BOOST_TEST(p->difference.upper() < 0);
    BOOST_TEST(metrics::to_string(p->verdict) == "better");
    // PSNR: VE 1 dB lower for every seed: worse.
    const auto psnr = jobs::compare_paired(configs[1], configs[0], metric("psnr"));
    BOOST_TEST(metrics::to_string(psnr->verdict) == "worse");
}

BOOST_AUTO_TEST_CASE(an_interval_that_contains_zero_is_not_separable) {
    // Differences −10, +8, −4: mean −2, and the interval spans 0.
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("kl", 1e-6, 1, 90, 25), run("kl", 1e-6, 2, 80, 25),
                                 run("ve", 0.1, 0, 90, 25), run("ve", 0.1, 1, 98, 25), run("ve", 0.1, 2, 76, 25)};
    const auto summary = jobs::experiment_summary_json(rows);
    for (const auto& p : summary["paired"])
        if (p["metric"] == "gfd_sde") {
            BOOST_TEST(p["difference"].get<double>() == -2.0, tt::tolerance(1e-12));
            BOOST_TEST(p["verdict"].get<std::string>() == "not separable");
            BOOST_TEST(p["seeds"].size() == 3u);
        }
}

BOOST_AUTO_TEST_CASE(only_seeds_both_configurations_ran_are_paired) {
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("kl", 1e-6, 1, 90, 25), run("ve", 0.1, 1, 85, 24),
                                 run("ve", 0.1, 5, 10, 24)};
    const auto configs = jobs::group_by_configuration(rows);
    const auto p = jobs::compare_paired(configs[1], configs[0], metric("gfd_sde"));
    BOOST_REQUIRE(p.has_value());
    BOOST_TEST(p->seeds == std::vector<std::uint64_t>{1}, tt::per_element());
    BOOST_TEST(p->difference.mean == -5.0, tt::tolerance(1e-12));
    // No common seed: no comparison at all.
    const nlohmann::json apart = {run("kl", 1e-6, 0, 100, 25), run("ve", 0.1, 1, 85, 24)};
    const auto c = jobs::group_by_configuration(apart);
    BOOST_TEST(!jobs::compare_paired(c[1], c[0], metric("gfd_sde")).has_value());
}

BOOST_AUTO_TEST_CASE(gfd_spread_reports_seed_and_sampling_sd) {
    const nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25, 1.0), run("kl", 1e-6, 1, 90, 25, 2.0), run("kl", 1e-6, 2, 80, 25, 3.0)};
    const auto summary = jobs::experiment_summary_json(rows);
    const auto& spread = summary["configurations"][0]["gfd_spread"]["samples_sde"];
    BOOST_TEST(spread["seed_sd"].get<double>() == 10.0, tt::tolerance(1e-12));
    BOOST_TEST(spread["sampling_sd"].get<double>() == 2.0, tt::tolerance(1e-12));
    // The ODE runs carry no bootstrap: the sampling sd is absent, not zero.
    BOOST_TEST(summary["configurations"][0]["gfd_spread"]["samples_ode"]["sampling_sd"].is_null());
    BOOST_TEST(contains(jobs::experiment_summary_markdown(rows), "| KL 1e-06 | 3 | 10.00 | 2.00 | 10.00 | – |"));
}

BOOST_AUTO_TEST_CASE(inception_columns_appear_only_when_measured) {
    nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25)};
    BOOST_TEST(!contains(jobs::experiment_summary_markdown(rows), "Inception FID"));
    rows[0]["eval"]["samples"]["samples_sde"]["inception"] = {{"fid", 12.5}, {"sfid", 7.0}, {"inception_score", 3.2}};
    const auto md = jobs::experiment_summary_markdown(rows);
    BOOST_TEST(contains(md, "Inception FID (SDE)"));
    BOOST_TEST(contains(md, "| 12.50 | 7.00 | 3.20 |"));
}

BOOST_AUTO_TEST_CASE(a_failed_metric_is_counted_out_and_said_so) {
    // A NaN metric (and the null eval.json writes for it) is not averaged, and the cell says how
    // many of the configuration's seeds the mean has.
    for (const nlohmann::json& failed : {nlohmann::json(std::nan("")), nlohmann::json()}) {
        nlohmann::json rows = {run("kl", 1e-6, 0, 100, 25), run("kl", 1e-6, 1, 90, 26)};
        rows[1]["eval"]["tokenizer"]["psnr"] = failed;
        const auto summary = jobs::experiment_summary_json(rows);
        BOOST_TEST(summary["configurations"][0]["metrics"]["psnr"]["n"].get<int>() == 1);
        BOOST_TEST(summary["configurations"][0]["metrics"]["psnr"]["mean"].get<double>() == 25.0);
        BOOST_TEST(contains(jobs::experiment_summary_markdown(rows), "| KL 1e-06 | 2 | 25.00 (1 of 2 seeds) |"));
    }
}
