#pragma once
// `vediff experiment`: the paper's central comparison end to end at this machine's scale. For
// every tokenizer row of the preset (experiment_preset.hpp): train the tokenizer, encode the
// training set, train a DiT on the normalized latents (the same budget for every row), sample
// with the SDE and the ODE sampler (the same seeds and classes), evaluate (evaluate.hpp); then
// write table.md / table.json and the figures, and run the 2-D toy.
//
// Outputs under OUT (default runs/experiment-<preset>):
//   preset.json                   the preset the directory belongs to (a different one is refused)
//   <row>/tokenizer/              checkpoint, log.jsonl, metrics.json, reconstructions.png
//   <row>/latents.safetensors     the latent cache
//   <row>/dit/                    checkpoint (model + EMA), log.jsonl, train.json
//   <row>/samples_sde/, samples_ode/   samples.png (one row per class), samples.safetensors, metrics.json
//   <row>/eval/                   eval.json, sensitivity.safetensors
//   table.md                      per run, across seeds (mean ± 95% interval), VE − KL paired by
//                                 seed with its verdict, the gFD's seed and sampling spread
//                                 (experiment_table.hpp)
//   table.json, summary.json      the rows; the summary's numbers
//   figures/*.png (+ .csv, .gp), toy/
//
// Resuming: run the same command again. A stage whose output is complete is reused (tokenizer:
// metrics.json; latents: the cache file, written atomically; DiT: train.json saying finished;
// samples and eval: their json); a training stage cut short continues from its last checkpoint. A
// row whose eval/eval.json exists is reused whole, so finished rows can be carried to another
// machine (and --rows run elsewhere) as their eval/ directories alone.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <algorithm>
#include <map>
#include <fstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/io/atomic_file.hpp"
#include "vediff/io/plot.hpp"
#include "vediff/jobs/classifier.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/encode_latents.hpp"
#include "vediff/jobs/evaluate.hpp"
#include "vediff/jobs/experiment_preset.hpp"
#include "vediff/jobs/experiment_table.hpp"
#include "vediff/jobs/sample.hpp"
#include "vediff/jobs/toy.hpp"
#include "vediff/jobs/train_dit.hpp"
#include "vediff/jobs/train_tokenizer.hpp"
#include "vediff/train/checkpoint.hpp"

namespace vediff::jobs {

struct experiment_job {
    std::string preset = "quick";
    std::filesystem::path out;         // default runs/experiment-<preset>
    std::filesystem::path classifier;  // default: runs/classifier/classifier.safetensors (smoke: OUT/classifier/...)
    std::string data = data::fashion_mnist_default_dir.string();
    std::int64_t stop_after = 0;       // > 0: each training stage stops after this many steps of this run (tests of resuming)
    std::string device = "cpu";        // where the tokenizers and DiTs train, sample and are evaluated
    std::filesystem::path inception_weights;  // given: the evaluation adds the FID Inception's metrics (eval --features inception)
    std::vector<std::string> rows;     // non-empty: run and tabulate only these rows of the preset (by name), in the preset's order
    double comm_timeout_s = 600;       // under mpirun: the longest wait for another rank inside a training stage
};

namespace experiment_detail {
namespace fs = std::filesystem;

inline nlohmann::json read_json(const fs::path& path) {
    std::ifstream in(path);
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw io_error(fmt::format("{}: not valid JSON ({}); delete it to redo its stage", path.string(), e.what()));
    }
}

/// The preset's rows that `--rows` selects (all when it names none), in the preset's order; an
/// unknown name is an error that lists the preset's rows.
inline std::vector<tokenizer_row> selected_rows(const experiment_preset& preset, const std::vector<std::string>& names) {
    if (names.empty()) return preset.rows;
    for (const auto& name : names) {
        const bool known = std::any_of(preset.rows.begin(), preset.rows.end(), [&](const tokenizer_row& r) { return r.name == name; });
        if (!known) {
            std::string available;
            for (const auto& r : preset.rows) available += (available.empty() ? "" : ", ") + r.name;
            throw usage_error(fmt::format("--rows: the {} preset has no row '{}' (its rows: {})", preset.name, name, available));
        }
    }
    std::vector<tokenizer_row> rows;
    for (const auto& r : preset.rows)
        if (std::find(names.begin(), names.end(), r.name) != names.end()) rows.push_back(r);
    return rows;
}

inline void stage(const std::string& row, const std::string& what, bool reused) {
    fmt::print("== {}: {}{}\n", row, what, reused ? " (reused)" : "");
}

/// Under mpirun the other ranks wait while rank 0 runs a one-process stage (the classifier, the
/// latent cache, sampling, evaluation): as long as that takes, not the communicator's timeout,
/// which bounds waits inside a training stage. A rank 0 that fails ends the job (mpirun).
template <class Comm>
void wait_for_rank0(Comm& comm, std::string_view what) {
    if constexpr (Comm::is_distributed) {
        const double bound = comm.timeout_s();
        comm.set_timeout(7 * 24 * 3600.0);
        comm.barrier(what);
        comm.set_timeout(bound);
    }
}

/// What run_experiment returns when --stop-after cut a training stage short.
inline nlohmann::json stopped(const std::string& row, const std::string& what) {
    fmt::print("== {}: the {} stopped early (--stop-after); run the same command again to continue\n", row, what);
    return {{"stopped", row + "/" + what}};
}

/// The table of the comparison in Markdown.
inline std::string table_markdown(const experiment_preset& p, const nlohmann::json& rows) {
    // The FID Inception's columns when the evaluation had its weights (experiment --inception-weights).
    const bool inception = std::any_of(rows.begin(), rows.end(), [](const nlohmann::json& r) {
        return r["eval"]["samples"]["samples_sde"].contains("inception");
    });
    std::string md = fmt::format(
        "| tokenizer | σ² | σ² / Var(z) | PSNR (dB) | rFD | gFD (SDE) | gFD (ODE) | precision | recall | class accuracy | "
        "robustness PSNR (s = 0.2) | corr(log σ, ¼ log(λ1/T)) |{}\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|{}\n",
        inception ? " Inception FID (SDE) | sFID (SDE) | IS (SDE) | rFID |" : "", inception ? "---|---|---|---|" : "");
    for (const auto& r : rows) {
        const auto& t = r["eval"]["tokenizer"];
        const auto& sde = r["eval"]["samples"]["samples_sde"];
        const auto& ode = r["eval"]["samples"]["samples_ode"];
        double rob = NAN;
        for (const auto& e : t["robustness"])
            if (std::abs(e["scale"].get<double>() - 0.2) < 1e-12) rob = e["psnr"].get<double>();
        md += fmt::format("| {} | {:.3g} | {:.3g} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.3f} | {:.3f} | {:.3f} | {:.2f} | {:.3f} |",
                          r["label"].get<std::string>(), t["sigma2_mean"].get<double>(), t["sigma2_relative"].get<double>(),
                          t["psnr"].get<double>(), t["rfd"].get<double>(), sde["gfd"].get<double>(), ode["gfd"].get<double>(),
                          sde["precision"].get<double>(), sde["recall"].get<double>(), sde["classifier_accuracy"].get<double>(), rob,
                          t["equilibrium"]["correlation"].get<double>());
        if (inception) {
            if (sde.contains("inception") && t.contains("inception"))
                md += fmt::format(" {:.2f} | {:.2f} | {:.2f} | {:.2f} |", sde["inception"]["fid"].get<double>(),
                                  sde["inception"]["sfid"].get<double>(), sde["inception"]["inception_score"].get<double>(),
                                  t["inception"]["rfid"].get<double>());
            else
                md += " – | – | – | – |";
        }
        md += "\n";
    }
    md += fmt::format("\nPreset `{}`: {} tokenizer steps, {} DiT steps (batch {}), {} samples per sampler ({} steps, CFG {}), "
                      "{} test images. Precision, recall and class accuracy are of the SDE samples (k = 3). rFD, gFD, precision "
                      "and recall are on the Fashion-MNIST classifier's features{}; every sample is scored as an 8-bit image.\n",
                      p.name, p.tokenizer.steps, p.dit.steps, p.dit.batch, p.per_class * 10, p.sde_steps, p.cfg_scale, p.eval_images,
                      inception ? "; the Inception columns on the FID Inception (FID and rFID: pool3; sFID: Mixed_6d's channels 0–6; "
                                  "IS: its 1008 logits)"
                                : "");
    md += "\nSample grids (one row per class, the same noise and classes for every tokenizer): ";
    for (std::size_t i = 0; i < rows.size(); ++i)
        md += fmt::format("{}[{}]({}/samples_sde/samples.png)", i ? ", " : "", rows[i]["label"].get<std::string>(),
                          rows[i]["name"].get<std::string>());
    md += ".\n";
    return md;
}

inline void note_figure(const io::figure_files& f) {
    if (f.rendered) fmt::print("figure {}\n", f.png.string());
    else fmt::print("{}\n", f.note);
}

/// gFD (SDE) against the KL weight: one series per seed, its points in increasing β (the seed-0
/// series a line, the others points), each gFD kept with its own row's β.
inline std::vector<io::plot_series> kl_gfd_series(const nlohmann::json& rows) {
    std::map<std::uint64_t, std::vector<std::pair<double, double>>> by_seed;
    for (const auto& r : rows)
        if (r["loss"] == "kl")
            by_seed[r["seed"].get<std::uint64_t>()].emplace_back(r["weight"].get<double>(),
                                                                 r["eval"]["samples"]["samples_sde"]["gfd"].get<double>());
    std::vector<io::plot_series> series;
    for (auto& [seed, points] : by_seed) {
        std::sort(points.begin(), points.end());
        io::plot_series s{.name = seed == 0 ? std::string("KL") : fmt::format("KL (seed {})", seed),
                          .style = seed == 0 ? io::plot_style::linespoints : io::plot_style::points, .point_size = 1.2};
        for (const auto& [beta, gfd] : points) {
            s.x.push_back(beta);
            s.y.push_back(gfd);
        }
        series.push_back(std::move(s));
    }
    return series;
}

/// One colour per configuration (loss and weight), shared by all its seeds, in the order the
/// configurations first appear: a figure of 13 seeded rows reads as 7 families, where gnuplot's
/// cycle of 8 colours gave two unrelated rows the same one.
inline std::vector<std::string> configuration_colors(const nlohmann::json& rows) {
    static constexpr const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                              "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    std::vector<std::pair<std::string, double>> configurations;
    std::vector<std::string> colors;
    for (const auto& r : rows) {
        const std::pair<std::string, double> key{r["loss"].get<std::string>(), r["weight"].get<double>()};
        auto at = std::find(configurations.begin(), configurations.end(), key);
        if (at == configurations.end()) at = configurations.insert(configurations.end(), key);
        colors.emplace_back(palette[std::size_t(at - configurations.begin()) % std::size(palette)]);
    }
    return colors;
}

/// Robustness curves, σ² histograms, σ² against T(μ) with the predicted line, gFD against KL weight.
inline void write_figures(const fs::path& out, const nlohmann::json& rows) {
    const fs::path dir = out / "figures";
    // The legends go below the plot: with a dozen seeded rows they would cover the curves.
    io::plot_panel robustness{.title = "decode(z) vs decode(z + s·ε·std)", .x_label = "noise scale s", .y_label = "PSNR (dB)",
                              .key_position = "below"};
    io::plot_panel histogram{.title = "posterior variance per latent element", .x_label = "σ²", .y_label = "fraction of elements",
                             .log_x = true, .key_position = "below"};
    std::vector<io::plot_panel> equilibrium;
    const auto colors = configuration_colors(rows);
    std::size_t index = 0;
    io::plot_panel gfd{.title = "gFD against KL weight", .x_label = "KL weight β", .y_label = "gFD (SDE samples)", .log_x = true};
    for (const auto& r : rows) {
        const auto label = r["label"].get<std::string>();
        const auto& t = r["eval"]["tokenizer"];
        const std::string& color = colors[index++];
        io::plot_series curve{.name = label, .style = io::plot_style::linespoints, .point_size = 1.0, .color = color};
        for (const auto& e : t["robustness"]) {
            curve.x.push_back(e["scale"].get<double>());
            curve.y.push_back(e["psnr"].get<double>());
        }
        robustness.series.push_back(curve);

        const io::safetensors_file sens(fs::path(r["dir"].get<std::string>()) / "eval" / "sensitivity.safetensors");
        const auto sigma2 = sens.get<float>("sigma2").to_vector();
        const auto t_mu = sens.get<float>("sensitivity").to_vector();
        const std::vector<double> s2(sigma2.begin(), sigma2.end());
        histogram.series.push_back(io::histogram_series(label, s2, 40, true, std::nullopt, true));
        histogram.series.back().color = color;
        if (r["loss"] == "ve") {
            const double lambda1 = r["weight"].get<double>();
            io::plot_panel scatter{.title = label + ": σ² against T(μ)", .x_label = "T(μ) = ‖∂x/∂z_i‖²", .y_label = "σ²",
                                   .log_x = true, .log_y = true};
            io::plot_series points{.name = "latent elements", .point_size = 0.3};
            double lo = INFINITY, hi = 0;
            for (std::size_t i = 0; i < s2.size(); ++i)
                if (t_mu[i] > 0) {
                    points.x.push_back(t_mu[i]);
                    points.y.push_back(s2[i]);
                    lo = std::min(lo, double(t_mu[i]));
                    hi = std::max(hi, double(t_mu[i]));
                }
            io::plot_series predicted{.name = "σ² = (λ1/T)^½ (Eq. 14)", .style = io::plot_style::lines, .color = "black"};
            for (int k = 0; k <= 20 && hi > 0; ++k) {
                const double x = lo * std::pow(hi / lo, k / 20.0);
                predicted.x.push_back(x);
                predicted.y.push_back(std::sqrt(lambda1 / x));
            }
            scatter.series = {points, predicted};
            equilibrium.push_back(scatter);
        }
    }
    note_figure(io::write_figure({.title = "sampling robustness", .panels = {robustness}}, dir / "robustness.png"));
    note_figure(io::write_figure({.title = "latent variance", .panels = {histogram}}, dir / "sigma2_histogram.png"));
    if (!equilibrium.empty())
        note_figure(io::write_figure({.title = "the equilibrium of the VE loss", .panels = equilibrium}, dir / "equilibrium.png"));
    // VE rows are drawn as horizontal lines across the KL weights (VE has no KL weight).
    gfd.series = kl_gfd_series(rows);
    if (!gfd.series.empty()) {
        double lo = gfd.series.front().x.front(), hi = lo;
        for (const auto& s : gfd.series) {
            lo = std::min(lo, s.x.front());
            hi = std::max(hi, s.x.back());
        }
        lo /= 2;
        hi *= 2;
        for (const auto& r : rows)
            if (r["loss"] == "ve") {
                const double g = r["eval"]["samples"]["samples_sde"]["gfd"].get<double>();
                gfd.series.push_back({.name = r["label"].get<std::string>(), .x = {lo, hi}, .y = {g, g}, .style = io::plot_style::lines});
            }
        note_figure(io::write_figure({.title = "generation quality", .panels = {gfd}}, dir / "gfd_vs_kl_weight.png"));
    }
}

} // namespace experiment_detail

/// Runs (or resumes) the experiment, its models on job.device (one of Devices); returns the table as
/// JSON (also written to OUT/table.json), or {"stopped": "<row>/<stage>"} when job.stop_after cut a
/// training stage short. A run may resume on another device than it started on.
///
/// Under `mpirun -np N` (comm of N ranks) the tokenizer and DiT stages train data-parallel on
/// every rank; rank 0 alone runs the others (classifier, latent cache, samples, evaluation,
/// tables) while the other ranks wait, and every choice of which stage to run or reuse is rank
/// 0's view of the files, handed to all ranks. The ranks share the output directory's file
/// system. Only rank 0's return value holds the table.
template <class Devices = cpu_only, class Comm>
nlohmann::json run_experiment(const experiment_job& job, Comm& comm) {
    require_device<Devices>(job.device);
    namespace fs = std::filesystem;
    using namespace experiment_detail;
    const bool root = comm.rank() == 0;
    const auto decided = [&](bool value, std::string_view what) { return comm.decide(value ? 1 : 0, what) != 0; };
    const auto stage_note = [&](const std::string& row, const std::string& what, bool reused) {
        if (root) stage(row, what, reused);
    };
    const auto preset = make_preset(job.preset);
    const fs::path out = job.out.empty() ? fs::path("runs") / ("experiment-" + job.preset) : job.out;
    const auto preset_json = preset.to_json();
    if (root) {
        fs::create_directories(out);
        if (fs::exists(out / "preset.json")) {
            if (read_json(out / "preset.json") != preset_json)
                throw std::invalid_argument(fmt::format("{} holds an experiment of another preset or version (its preset.json differs); "
                                                        "choose another --out or delete it",
                                                        out.string()));
        } else {
            io::write_file_atomically(out / "preset.json", [&](io::atomic_file& f) { f.write(preset_json.dump(2) + "\n"); });
        }
    }

    // The feature network: one cache for all experiments, trained when missing.
    fs::path classifier = job.classifier;
    if (classifier.empty())
        classifier = job.preset == "smoke" ? out / "classifier" / "classifier.safetensors" : fs::path("runs/classifier/classifier.safetensors");
    if (root) {
        stage("classifier", classifier.string(), fs::exists(classifier));
        if (!fs::exists(classifier)) {
            auto c = preset.classifier;
            c.data_dir = job.data;
            c.out_dir = classifier.parent_path();
            c.device = job.device;
            (void)train_classifier<Devices>(c);
        }
    }
    wait_for_rank0(comm, "rank 0's classifier and preset");

    nlohmann::json rows = nlohmann::json::array();
    for (const auto& row : selected_rows(preset, job.rows)) {
        const fs::path dir = out / row.name;
        auto add_row = [&](const nlohmann::json& eval) {
            rows.push_back({{"name", row.name}, {"label", row.label()}, {"loss", row.loss}, {"weight", row.weight}, {"seed", row.seed},
                            {"dir", dir.string()}, {"eval", eval}});
        };
        // The evaluation is a row's last stage: once it exists the row's numbers are final and its
        // earlier stages' files (checkpoints, latents, samples) are not read again, so a finished
        // row can be carried to another machine as its eval/ directory alone.
        if (decided(fs::exists(dir / "eval" / "eval.json"), "whether the row is evaluated")) {
            stage_note(row.name, "evaluated row", true);
            if (root) add_row(read_json(dir / "eval" / "eval.json"));
            continue;
        }
        // Tokenizer.
        tokenizer_job tok = preset.tokenizer;
        tok.data = job.data;
        tok.loss = row.loss;
        if (row.loss == "kl") tok.kl_weight = row.weight;
        else if (row.loss == "ve") tok.ve_weight = row.weight;
        else if (row.loss == "sigma-vae") tok.sigma_vae.scale = row.weight;
        else throw std::invalid_argument(fmt::format("experiment row {}: loss '{}' is not kl, ve or sigma-vae", row.name, row.loss));
        tok.seed = row.seed;
        tok.out = (dir / "tokenizer").string();
        tok.device = job.device;
        tok.comm_timeout_s = job.comm_timeout_s;
        const bool tokenizer_done = decided(fs::exists(dir / "tokenizer" / "metrics.json"), "whether the tokenizer is trained");
        stage_note(row.name, "tokenizer", tokenizer_done);
        if (!tokenizer_done) {
            tok.resume = decided(train::checkpoint_exists(dir / "tokenizer" / "checkpoint"), "whether the tokenizer resumes");
            tok.stop_after = job.stop_after;
            // Every rank trains; rank 0 then evaluates and writes metrics.json while the others wait.
            const bool finished = train_tokenizer<Devices>(tok, comm).value("finished", false);
            wait_for_rank0(comm, "rank 0's tokenizer evaluation");
            if (!finished) return root ? stopped(row.name, "tokenizer") : nlohmann::json{{"stopped", row.name + "/tokenizer"}};
        }
        // Latent cache.
        const fs::path latents = dir / "latents.safetensors";
        if (root) {
            stage(row.name, "latent cache", fs::exists(latents));
            if (!fs::exists(latents))
                (void)encode_latents<Devices>({.tokenizer = dir / "tokenizer", .out = latents, .data = job.data, .split = "train",
                                               .max_images = preset.encode_images, .seed = row.seed, .device = job.device});
        }
        wait_for_rank0(comm, "rank 0's latent cache");
        // DiT.
        const fs::path dit_dir = dir / "dit";
        const bool dit_done = decided(fs::exists(dit_dir / "train.json") && read_json(dit_dir / "train.json").value("finished", false),
                                      "whether the DiT is trained");
        stage_note(row.name, "DiT", dit_done);
        if (!dit_done) {
            auto cfg = preset.dit;
            cfg.latents = latents.string();
            cfg.seed = row.seed;
            dit_run_options run{.out = dit_dir, .resume = decided(train::checkpoint_exists(dit_dir / "checkpoint"), "whether the DiT resumes"),
                                .log_every = 25, .checkpoint_every = std::max<std::int64_t>(1, std::min<std::int64_t>(250, cfg.steps / 4))};
            run.stop_after = job.stop_after;
            run.device = job.device;
            run.comm_timeout_s = job.comm_timeout_s;
            const bool finished = train_dit<Devices>(cfg, run, comm).value("finished", false);
            wait_for_rank0(comm, "rank 0's DiT summary");
            if (!finished) return root ? stopped(row.name, "DiT") : nlohmann::json{{"stopped", row.name + "/DiT"}};
        }
        if (!root) {  // samples and evaluation are rank 0's
            wait_for_rank0(comm, "rank 0's samples and evaluation");
            continue;
        }
        // Samples: the same seed for every row, so the grids show the same noise and classes.
        for (const auto& [name, kind, steps] : {std::tuple{"samples_sde", diffusion::sampler_kind::euler_maruyama, preset.sde_steps},
                                                std::tuple{"samples_ode", diffusion::sampler_kind::euler, preset.ode_steps}}) {
            const bool done = fs::exists(dir / name / "metrics.json");
            stage(row.name, name, done);
            if (done) continue;
            sample_job s;
            s.dit = dit_dir;
            s.classifier = classifier;
            s.out = dir / name;
            s.per_class = preset.per_class;
            s.batch = std::min<std::int64_t>(preset.per_class * 10, 250);
            s.sampler.kind = kind;
            s.sampler.steps = steps;
            s.sampler_name = kind == diffusion::sampler_kind::euler ? "euler" : "sde";
            s.guidance.scale = preset.cfg_scale;
            s.device = job.device;
            (void)sample<Devices>(s);
        }
        // Evaluation.
        const fs::path eval_dir = dir / "eval";
        stage(row.name, "evaluation", false);
        {
            eval_job e;
            e.tokenizer = dir / "tokenizer";
            e.samples = {dir / "samples_sde", dir / "samples_ode"};
            e.classifier = classifier;
            e.out = eval_dir;
            e.data = job.data;
            e.eval_images = preset.eval_images;
            e.robustness_images = preset.robustness_images;
            e.robustness_scales = preset.robustness_scales;
            e.sensitivity_images = preset.sensitivity_images;
            e.sensitivity_probes = preset.sensitivity_probes;
            e.seed = 0;
            e.fd_bootstrap = preset.fd_bootstrap;
            e.reference_cache = out / "reference_cache";
            if (!job.inception_weights.empty()) {
                e.features = "inception";
                e.inception_weights = job.inception_weights;
            }
            e.device = job.device;
            add_row(evaluate<Devices>(e));
        }
        wait_for_rank0(comm, "rank 0's samples and evaluation");
    }
    if (!root) return nlohmann::json::array();  // the table is rank 0's

    const auto md = "### Per run\n\n" + table_markdown(preset, rows) + "\n" + experiment_summary_markdown(rows);
    io::write_file_atomically(out / "table.md", [&](io::atomic_file& f) { f.write(md); });
    io::write_file_atomically(out / "table.json", [&](io::atomic_file& f) { f.write(rows.dump(2) + "\n"); });
    io::write_file_atomically(out / "summary.json", [&](io::atomic_file& f) { f.write(experiment_summary_json(rows).dump(2) + "\n"); });
    write_figures(out, rows);
    if (preset.toy) {
        const bool toy_done = fs::exists(out / "toy" / "toy.json");
        stage("toy", "2-D toy", toy_done);
        if (!toy_done) (void)run_toy_job({.out = out / "toy"});
    }
    fmt::print("\n{}\nwrote {}\n", md, (out / "table.md").string());
    return rows;
}

/// The same in the communicator this process was launched for (one process, or a rank of mpirun).
template <class Devices = cpu_only>
nlohmann::json run_experiment(const experiment_job& job) {
    return distributed::with_launch_communicator(job.comm_timeout_s, [&](auto& comm) { return run_experiment<Devices>(job, comm); });
}

template <class Devices = cpu_only>
void add_experiment_options(cxxopts::Options& options) {
    const experiment_job d;
    // clang-format off
    options.add_options()
        ("preset", "smoke (seconds, for tests) | quick (<= 20 min on 2 cores) | paper (the paper's sweep, 3 seeds of the compared rows; about 4 hours)",
         cxxopts::value<std::string>()->default_value(d.preset))
        ("out", "output directory (default runs/experiment-<preset>)", cxxopts::value<std::string>()->default_value(""))
        ("classifier", "classifier weights (trained there when missing; default runs/classifier/classifier.safetensors)",
         cxxopts::value<std::string>()->default_value(""))
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(d.data))
        ("stop-after", "stop each training stage after this many steps of this run (to test resuming)",
         cxxopts::value<std::int64_t>()->default_value("0"))
        ("inception-weights", "the FID Inception's weights (tools/convert_inception.py): the table gains Inception FID, sFID and IS "
         "(rows evaluated before keep theirs; delete a row's eval/ to redo it)", cxxopts::value<std::string>()->default_value(""))
        ("rows", "run and tabulate only these rows of the preset, comma-separated names such as kl_1e-06,ve_0.1 (default: all); "
         "the others can run later into the same --out", cxxopts::value<std::vector<std::string>>())
        ("comm-timeout", "under mpirun: seconds to wait for another rank inside a training stage before ending the job",
         cxxopts::value<double>()->default_value("600"));
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
int experiment_main(int argc, char** argv, const std::string& program = "vediff experiment") {
    cxxopts::Options options(program, "KL against VE tokenizers end to end: train, sample, evaluate, tabulate, plot (resumable)");
    add_experiment_options<Devices>(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)run_experiment<Devices>({.preset = a["preset"].as<std::string>(), .out = a["out"].as<std::string>(),
                                       .classifier = a["classifier"].as<std::string>(), .data = a["data"].as<std::string>(),
                                       .stop_after = a["stop-after"].as<std::int64_t>(), .device = read_device<Devices>(a),
                                       .inception_weights = a["inception-weights"].as<std::string>(),
                                       .rows = a.count("rows") ? a["rows"].as<std::vector<std::string>>() : std::vector<std::string>{},
                                       .comm_timeout_s = a["comm-timeout"].as<double>()});
        return 0;
    },
                       {{"classifier", flag_kind::output_file}});  // trained there when missing
}

} // namespace vediff::jobs
