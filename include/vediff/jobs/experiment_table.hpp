#pragma once
// The experiment's tables (table.md, table.json's summary), from the rows run_experiment collects:
// each row {"name", "label", "loss", "weight", "seed", "eval": eval.json}.
//   per run        one line per row, every metric (runs_table_markdown)
//   across seeds   one line per configuration (loss, weight): each metric's mean over the seeds
//                  with its 95% Student-t interval (metrics/seed_statistics.hpp)
//   VE − KL        each VE configuration against the KL baseline, paired by seed: the interval of
//                  the mean difference and the verdict it supports (better / worse / not separable),
//                  never a verdict from point estimates
//   gFD spread     the spread of a gFD over seeds next to its spread over samples (the bootstrap
//                  of evaluate_samples), so that a reader sees which of the two dominates
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/metrics/seed_statistics.hpp"

namespace vediff::jobs {

/// A metric of the tables: how to read it from a row's eval.json, and which direction is better.
struct experiment_metric {
    std::string key;    // table.json's name
    std::string title;  // the column's heading
    bool lower_is_better = false;
    int decimals = 2;
    std::function<std::optional<double>(const nlohmann::json& eval)> read;
};

namespace experiment_table_detail {

inline std::optional<double> at_path(const nlohmann::json& j, std::initializer_list<const char*> path) {
    const nlohmann::json* node = &j;
    for (const char* key : path) {
        if (!node->is_object() || !node->contains(key)) return std::nullopt;
        node = &(*node)[key];
    }
    if (!node->is_number()) return std::nullopt;
    return node->get<double>();
}

inline std::optional<double> robustness_at(const nlohmann::json& eval, double scale) {
    if (!eval.contains("tokenizer") || !eval["tokenizer"].contains("robustness")) return std::nullopt;
    for (const auto& e : eval["tokenizer"]["robustness"])
        if (std::abs(e["scale"].get<double>() - scale) < 1e-12) return e["psnr"].get<double>();
    return std::nullopt;
}

inline std::string format_value(double v, int decimals) {
    if (!std::isfinite(v)) return "–";
    return fmt::format("{:.{}f}", v, decimals);
}

inline std::string format_interval(const metrics::seed_interval& i, int decimals) {
    if (i.n == 0) return "–";
    if (!i.has_spread()) return format_value(i.mean, decimals);
    return fmt::format("{:.{}f} ± {:.{}f}", i.mean, decimals, i.half_width, decimals);
}

inline double sample_sd(const std::vector<double>& v) {
    if (v.size() < 2) return NAN;
    double mean = 0;
    for (double x : v) mean += x / double(v.size());
    double squares = 0;
    for (double x : v) squares += (x - mean) * (x - mean);
    return std::sqrt(squares / double(v.size() - 1));
}

} // namespace experiment_table_detail

/// The metrics of the seed summary and of the paired comparison (quality metrics with a direction).
inline const std::vector<experiment_metric>& experiment_quality_metrics() {
    using experiment_table_detail::at_path;
    static const std::vector<experiment_metric> m = {
        {"psnr", "PSNR (dB)", false, 2, [](const nlohmann::json& e) { return at_path(e, {"tokenizer", "psnr"}); }},
        {"rfd", "rFD", true, 2, [](const nlohmann::json& e) { return at_path(e, {"tokenizer", "rfd"}); }},
        {"gfd_sde", "gFD (SDE)", true, 2, [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "gfd"}); }},
        {"gfd_ode", "gFD (ODE)", true, 2, [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_ode", "gfd"}); }},
        {"precision", "precision", false, 3, [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "precision"}); }},
        {"recall", "recall", false, 3, [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "recall"}); }},
        {"class_accuracy", "class accuracy", false, 3,
         [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "classifier_accuracy"}); }},
        {"robustness_0.2", "robustness PSNR (s = 0.2)", false, 2,
         [](const nlohmann::json& e) { return experiment_table_detail::robustness_at(e, 0.2); }},
        // The FID Inception's columns, present when the evaluation was given its weights.
        {"fid_inception_sde", "Inception FID (SDE)", true, 2,
         [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "inception", "fid"}); }},
        {"sfid_inception_sde", "Inception sFID (SDE)", true, 2,
         [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "inception", "sfid"}); }},
        {"is_inception_sde", "Inception IS (SDE)", false, 2,
         [](const nlohmann::json& e) { return at_path(e, {"samples", "samples_sde", "inception", "inception_score"}); }},
    };
    return m;
}

/// "KL 1e-06", "VE 0.1", "σ-VAE 2.5": a configuration's name in tables and figures.
inline std::string configuration_label(const std::string& loss, double weight) {
    return fmt::format("{} {:g}", loss == "kl" ? "KL" : loss == "ve" ? "VE" : loss == "sigma-vae" ? "σ-VAE" : loss, weight);
}

/// One configuration of the experiment (a loss and its weight) and the rows of its seeds.
struct experiment_configuration {
    std::string loss;
    double weight = 0;
    std::vector<const nlohmann::json*> runs;  // in seed order

    std::string label() const { return configuration_label(loss, weight); }
    std::vector<std::uint64_t> seeds() const {
        std::vector<std::uint64_t> s;
        for (const auto* r : runs) s.push_back((*r)["seed"].get<std::uint64_t>());
        return s;
    }
    /// The metric of every run that has a finite value of it, with its seed. A run whose metric is
    /// NaN (eval.json writes it as null) drops out here; the tables then say "n of N seeds".
    std::vector<std::pair<std::uint64_t, double>> values(const experiment_metric& m) const {
        std::vector<std::pair<std::uint64_t, double>> v;
        for (const auto* r : runs)
            if (const auto x = m.read((*r)["eval"]); x && std::isfinite(*x)) v.emplace_back((*r)["seed"].get<std::uint64_t>(), *x);
        return v;
    }
};

/// The rows grouped by (loss, weight), in the order each configuration first appears; runs by seed.
inline std::vector<experiment_configuration> group_by_configuration(const nlohmann::json& rows) {
    std::vector<experiment_configuration> configs;
    for (const auto& r : rows) {
        const auto loss = r["loss"].get<std::string>();
        const double weight = r["weight"].get<double>();
        auto it = std::find_if(configs.begin(), configs.end(), [&](const auto& c) { return c.loss == loss && c.weight == weight; });
        if (it == configs.end()) it = configs.insert(configs.end(), {loss, weight, {}});
        it->runs.push_back(&r);
    }
    for (auto& c : configs)
        std::stable_sort(c.runs.begin(), c.runs.end(),
                         [](const nlohmann::json* a, const nlohmann::json* b) {
                             return (*a)["seed"].get<std::uint64_t>() < (*b)["seed"].get<std::uint64_t>();
                         });
    return configs;
}

/// The KL baseline of the paired comparison: the KL configuration with the most seeds, the smallest
/// weight among those (the paper's baseline, β = 1e-6, in the paper preset); nullptr without KL rows.
inline const experiment_configuration* kl_baseline(const std::vector<experiment_configuration>& configs) {
    const experiment_configuration* best = nullptr;
    for (const auto& c : configs)
        if (c.loss == "kl" && (!best || c.runs.size() > best->runs.size() || (c.runs.size() == best->runs.size() && c.weight < best->weight)))
            best = &c;
    return best;
}

/// candidate − baseline on one metric, over the seeds both configurations ran.
struct paired_comparison {
    std::string metric;
    std::vector<std::uint64_t> seeds;
    metrics::seed_interval difference;
    metrics::verdict verdict = metrics::verdict::one_seed;
};

inline std::optional<paired_comparison> compare_paired(const experiment_configuration& candidate, const experiment_configuration& baseline,
                                                       const experiment_metric& m) {
    const auto a = candidate.values(m), b = baseline.values(m);
    paired_comparison p;
    p.metric = m.key;
    std::vector<double> va, vb;
    for (const auto& [seed, value] : a)
        for (const auto& [seed_b, value_b] : b)
            if (seed == seed_b) {
                p.seeds.push_back(seed);
                va.push_back(value);
                vb.push_back(value_b);
            }
    if (p.seeds.empty()) return std::nullopt;
    p.difference = metrics::paired_difference(va, vb);
    p.verdict = metrics::compare(p.difference, m.lower_is_better);
    return p;
}

/// The spread of a configuration's gFD with one sampler: over its seeds, and over resamples of
/// each run's samples (the mean of the runs' bootstrap sd); NaN where there is none.
struct gfd_spread {
    double seed_sd = NAN;
    double sampling_sd = NAN;
};

inline gfd_spread gfd_spread_of(const experiment_configuration& c, const char* sampler) {
    std::vector<double> gfd, sampling_sd;
    for (const auto* r : c.runs) {
        const auto& s = (*r)["eval"]["samples"][sampler];
        gfd.push_back(s["gfd"].get<double>());
        if (s.contains("gfd_bootstrap_sd")) sampling_sd.push_back(s["gfd_bootstrap_sd"].get<double>());
    }
    gfd_spread g{.seed_sd = experiment_table_detail::sample_sd(gfd)};
    if (!sampling_sd.empty()) {
        g.sampling_sd = 0;
        for (double x : sampling_sd) g.sampling_sd += x / double(sampling_sd.size());
    }
    return g;
}

/// The seed summary, the paired comparison and the gFD spread as JSON (table.json's "summary").
inline nlohmann::json experiment_summary_json(const nlohmann::json& rows) {
    const auto configs = group_by_configuration(rows);
    nlohmann::json out = {{"configurations", nlohmann::json::array()}, {"paired", nlohmann::json::array()}};
    for (const auto& c : configs) {
        nlohmann::json cj = {{"label", c.label()}, {"loss", c.loss}, {"weight", c.weight}, {"seeds", c.seeds()}};
        for (const auto& m : experiment_quality_metrics()) {
            std::vector<double> v;
            for (const auto& [seed, x] : c.values(m)) v.push_back(x);
            if (v.empty()) continue;
            const auto i = metrics::mean_interval(v);
            cj["metrics"][m.key] = {{"mean", i.mean}, {"half_width_95", i.has_spread() ? nlohmann::json(i.half_width) : nlohmann::json()},
                                    {"n", i.n}, {"values", v}};
        }
        const auto or_null = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
        for (const auto* sampler : {"samples_sde", "samples_ode"}) {
            const auto g = gfd_spread_of(c, sampler);
            cj["gfd_spread"][sampler] = {{"seed_sd", or_null(g.seed_sd)}, {"sampling_sd", or_null(g.sampling_sd)}};
        }
        out["configurations"].push_back(cj);
    }
    if (const auto* base = kl_baseline(configs)) {
        out["baseline"] = base->label();
        for (const auto& c : configs) {
            if (c.loss != "ve") continue;
            for (const auto& m : experiment_quality_metrics())
                if (const auto p = compare_paired(c, *base, m))
                    out["paired"].push_back({{"candidate", c.label()}, {"baseline", base->label()}, {"metric", m.key}, {"seeds", p->seeds},
                                             {"difference", p->difference.mean},
                                             {"half_width_95", p->difference.has_spread() ? nlohmann::json(p->difference.half_width) : nlohmann::json()},
                                             {"verdict", std::string(metrics::to_string(p->verdict))}});
        }
    }
    return out;
}

/// The seed summary, the paired comparison and the gFD spread in Markdown.
inline std::string experiment_summary_markdown(const nlohmann::json& rows) {
    using namespace experiment_table_detail;
    const auto configs = group_by_configuration(rows);
    // Only the metrics some row has (the Inception columns need its weights).
    std::vector<const experiment_metric*> shown;
    for (const auto& m : experiment_quality_metrics())
        if (std::any_of(configs.begin(), configs.end(), [&](const auto& c) { return !c.values(m).empty(); })) shown.push_back(&m);

    std::string md = "### Across seeds\n\nMean over the seeds of each configuration, ± the half-width of its 95% interval "
                     "(Student t, n − 1 degrees of freedom); a configuration of one seed has no interval.\n\n| tokenizer | seeds |";
    std::string rule = "|---|---|";
    for (const auto* m : shown) {
        md += fmt::format(" {} |", m->title);
        rule += "---|";
    }
    md += "\n" + rule + "\n";
    for (const auto& c : configs) {
        md += fmt::format("| {} | {} |", c.label(), c.runs.size());
        for (const auto* m : shown) {
            std::vector<double> v;
            for (const auto& [seed, x] : c.values(*m)) v.push_back(x);
            std::string cell = v.empty() ? std::string("–") : format_interval(metrics::mean_interval(v), m->decimals);
            if (!v.empty() && v.size() < c.runs.size()) cell += fmt::format(" ({} of {} seeds)", v.size(), c.runs.size());
            md += fmt::format(" {} |", cell);
        }
        md += "\n";
    }

    if (const auto* base = kl_baseline(configs)) {
        md += fmt::format("\n### VE − {}, paired by seed\n\nThe difference of each VE configuration from {} over the seeds both ran "
                          "(the same seed drives both rows' data order and noise), ± its 95% interval, and what the interval "
                          "says: better or worse when it excludes 0, not separable when it contains 0.\n\n"
                          "| VE configuration | metric | seeds | VE − KL | verdict |\n|---|---|---|---|---|\n",
                          base->label(), base->label());
        for (const auto& c : configs) {
            if (c.loss != "ve") continue;
            for (const auto* m : shown)
                if (const auto p = compare_paired(c, *base, *m))
                    md += fmt::format("| {} | {} | {} | {} | {} |\n", c.label(), m->title, p->seeds.size(),
                                      format_interval(p->difference, m->decimals), metrics::to_string(p->verdict));
        }
    }

    md += "\n### Where the gFD spread comes from\n\nseed sd: the standard deviation of a configuration's gFD over its seeds; "
          "sampling sd: the bootstrap standard deviation of one run's gFD over resamples of its samples (the mean over the "
          "configuration's runs). A seed sd well above the sampling sd means the training runs differ more than the sample "
          "sets do: more seeds, not more samples, narrow the interval.\n\n"
          "| tokenizer | seeds | gFD (SDE) seed sd | gFD (SDE) sampling sd | gFD (ODE) seed sd | gFD (ODE) sampling sd |\n"
          "|---|---|---|---|---|---|\n";
    for (const auto& c : configs) {
        md += fmt::format("| {} | {} |", c.label(), c.runs.size());
        for (const auto* sampler : {"samples_sde", "samples_ode"}) {
            const auto g = gfd_spread_of(c, sampler);
            md += fmt::format(" {} | {} |", format_value(g.seed_sd, 2), format_value(g.sampling_sd, 2));
        }
        md += "\n";
    }
    return md;
}

} // namespace vediff::jobs
