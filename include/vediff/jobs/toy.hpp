#pragma once
// The toy experiment of the VE paper's Figure 1, end to end on 2-D points:
//
//   data       points on a spiral (data/toy2d.hpp), a fresh batch every step;
//   tokenizer  a VAE with a 2-D latent (models/toy_tokenizer.hpp), trained twice with the same
//              seeds and budget: reconstruction (l2) + KL(β = 1e-6), and reconstruction + VE +
//              magnitude (loss/*.hpp, per_image_sum: summed over a point's 2 coordinates);
//   generator  a flow-matching MLP (models/toy_velocity.hpp) on each tokenizer's normalized
//              posterior samples (diffusion/latent_normalization.hpp), sampled with SiT's SDE
//              (diffusion::sample, sampler_kind::euler_maruyama), denormalized and decoded;
//   measure    the fraction of decoded samples farther than `threshold` from the spiral, the mean
//              posterior σ², and how far decoded posterior means (reconstructions) lie from it.
//
// The paper's claim in miniature: under KL(1e-6) the posterior variance collapses, the latent
// manifold is a thin curve, the decoder is trained on that curve only, and the small errors a
// sampler makes in latent space decode to points off the data curve; VE keeps σ² up, so the
// decoder learns to map a band around the latent curve back onto the data.
//
// Two choices decide whether that shows, both measured with these defaults (seeds 0 and 1):
//   * The generator's target. Trained on posterior means (flow_on_means, the default) both
//     generators learn an equally thin curve and only the decoders differ: off the curve KL 4.8% /
//     2.9%, VE 0.9% / 0.8%. Trained on posterior samples (LightningDiT's latent cache), the VE
//     generator must learn the σ-wide band, strays between the latent spiral's arms, and VE loses:
//     KL 4.8%, VE 14% (λ1 = 1e-4), 18% (λ1 = 1e-3); at λ1 = 1e-2 and 9000 flow steps KL 2.1%, VE 30%.
//   * λ1. The posterior is diagonal while the latent curve turns, so σ also blurs along the curve;
//     at λ1 = 1e-2 (σ² ≈ 0.57) the posteriors of neighbouring stretches overlap, the decoder
//     averages them to points inside the curve, and even means-trained VE is 8% off.
// The generator's budget moves KL most: 4000 / 5000 / 6000 flow steps give KL 42% / 11% / 4.8%
// and VE 6.5% / 1.6% / 0.9% off the curve.
//
// run_toy(config) returns the numbers and the points; write_toy(result, dir) writes toy.json and
// the figure toy.png (with toy.csv and toy.gp, io/plot.hpp); run_toy_job and toy_main are the
// `vediff toy` command (jobs/command.hpp's pattern).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/random.hpp"
#include "vediff/data/toy2d.hpp"
#include "vediff/diffusion/flow_matching.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/io/plot.hpp"
#include "vediff/loss/kl.hpp"
#include "vediff/loss/latent_stats.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/toy_tokenizer.hpp"
#include "vediff/models/toy_velocity.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/optim/adamw.hpp"
#include "vediff/optim/schedule.hpp"
#include "vediff/train/loop.hpp"

namespace vediff::jobs {

struct toy_config {
    // Data.
    data::spiral curve{};
    double data_noise = 0.0;  // per coordinate, added to training points (evaluation uses the curve itself)
    // Tokenizers (both get these).
    models::toy_tokenizer_config tokenizer{};
    std::int64_t tokenizer_steps = 3000, tokenizer_batch = 256;
    double tokenizer_lr = 2e-3;
    double kl_weight = 1e-6;                        // β of the KL tokenizer
    double ve_weight = 1e-3, ve_delta = 1e-6;       // λ1, δ of the VE tokenizer
    double magnitude_weight = 1e-3, magnitude_tau = 1.0;  // λ2, τ of the VE tokenizer
    // Flow-matching generator (one per tokenizer, same seeds).
    models::toy_velocity_config velocity{};
    // The generator learns the posterior means μ of the data (true) or posterior samples μ + σ·ε (false,
    // LightningDiT's cache). Means give both tokenizers the same thin target, so the comparison
    // isolates how each decoder treats the sampler's errors (the top of this file has both results).
    bool flow_on_means = true;
    std::int64_t flow_steps = 6000, flow_batch = 256;
    double flow_lr = 2e-3;
    diffusion::sampler_kind sampler = diffusion::sampler_kind::euler_maruyama;  // the paper's point: the SDE
    int sampler_steps = 100;  // calls of the velocity model (Heun: twice as many)
    // Evaluation.
    std::int64_t samples = 2000;       // decoded generator samples per tokenizer
    std::int64_t eval_points = 2000;   // data points for σ², reconstructions and the figure
    double threshold = 0.05;           // off the curve: farther than this (arm gap 0.44)
    std::int64_t polyline_segments = 4000;
    std::int64_t normalization_points = 8192;  // posterior samples the latent mean/std are fitted on
    std::uint64_t seed = 0;

    std::string sampler_name() const {
        return sampler == diffusion::sampler_kind::euler ? "euler" : sampler == diffusion::sampler_kind::heun ? "heun" : "euler_maruyama";
    }

    void validate() const {
        curve.validate();
        const auto positive = [](const char* what, double v) {
            if (!(v > 0) || !std::isfinite(v)) throw std::invalid_argument(fmt::format("toy_config: {} = {} must be > 0", what, v));
        };
        positive("tokenizer_steps", double(tokenizer_steps));
        positive("tokenizer_batch", double(tokenizer_batch));
        positive("tokenizer_lr", tokenizer_lr);
        positive("flow_steps", double(flow_steps));
        positive("flow_batch", double(flow_batch));
        positive("flow_lr", flow_lr);
        positive("samples", double(samples));
        positive("eval_points", double(eval_points));
        positive("threshold", threshold);
        positive("polyline_segments", double(polyline_segments));
        positive("ve_weight", ve_weight);
        if (sampler_steps < 2) throw std::invalid_argument(fmt::format("toy_config: sampler_steps = {} must be >= 2", sampler_steps));
        if (normalization_points < 2)
            throw std::invalid_argument(fmt::format("toy_config: normalization_points = {} must be >= 2", normalization_points));
        if (!(kl_weight >= 0 && ve_delta >= 0 && magnitude_weight >= 0 && data_noise >= 0))
            throw std::invalid_argument(fmt::format("toy_config: kl_weight {}, ve_delta {}, magnitude_weight {} and data_noise {} "
                                                    "must be >= 0",
                                                    kl_weight, ve_delta, magnitude_weight, data_noise));
    }

    nlohmann::json to_json() const {
        return {{"curve", {{"theta_begin", curve.theta_begin}, {"theta_end", curve.theta_end}, {"radius", curve.radius},
                           {"arm_gap", curve.arm_gap()}}},
                {"data_noise", data_noise}, {"flow_on_means", flow_on_means},
                {"tokenizer", {{"latent_dim", tokenizer.latent_dim}, {"hidden", tokenizer.hidden}, {"hidden_layers", tokenizer.hidden_layers},
                               {"steps", tokenizer_steps}, {"batch", tokenizer_batch}, {"lr", tokenizer_lr}}},
                {"kl_weight", kl_weight}, {"ve_weight", ve_weight}, {"ve_delta", ve_delta}, {"magnitude_weight", magnitude_weight},
                {"magnitude_tau", magnitude_tau},
                {"velocity", {{"hidden", velocity.hidden}, {"hidden_layers", velocity.hidden_layers}, {"time_dim", velocity.time_dim},
                              {"time_scale", velocity.time_scale}, {"steps", flow_steps}, {"batch", flow_batch}, {"lr", flow_lr}}},
                {"sampler", {{"kind", sampler_name()}, {"steps", sampler_steps}}},
                {"samples", samples}, {"eval_points", eval_points}, {"threshold", threshold},
                {"polyline_segments", polyline_segments}, {"normalization_points", normalization_points}, {"seed", seed}};
    }
};

/// What one tokenizer (and the generator trained on its latents) gives.
struct toy_tokenizer_result {
    std::string name;                   // "KL" or "VE"
    std::string loss;                   // the loss, in words
    double off_curve_fraction = 0;      // of the decoded samples, distance > threshold
    double sigma2_mean = 0;             // posterior σ² over the evaluation points
    double reconstruction_distance = 0; // mean distance of decode(μ(x)) from the curve
    double sample_distance_mean = 0;    // mean distance of the decoded samples (non-finite ones excluded)
    double sample_distance_median = 0;
    double tokenizer_loss = 0;          // mean of the last 10% of training steps
    double flow_mse = 0;                // likewise
    double seconds = 0;
    std::vector<data::point2> latent_means;      // μ of the evaluation points
    std::vector<data::point2> latent_samples;    // the generator's samples, denormalized (before decoding)
    std::vector<data::point2> decoded_samples;   // … decoded
    std::vector<double> sample_distances;        // … their distances from the curve

    nlohmann::json to_json() const {
        return {{"name", name}, {"loss", loss}, {"off_curve_fraction", off_curve_fraction}, {"sigma2_mean", sigma2_mean},
                {"reconstruction_distance", reconstruction_distance}, {"sample_distance_mean", sample_distance_mean},
                {"sample_distance_median", sample_distance_median}, {"tokenizer_loss", tokenizer_loss}, {"flow_mse", flow_mse},
                {"seconds", seconds}};
    }
};

struct toy_result {
    toy_config config;
    std::vector<data::point2> data;    // the evaluation points
    std::vector<double> data_position; // their positions s ∈ [0, 1] on the curve
    std::vector<toy_tokenizer_result> runs;  // KL, then VE
    double seconds = 0;

    nlohmann::json to_json() const {
        nlohmann::json r = {{"config", config.to_json()}, {"seconds", seconds}, {"runs", nlohmann::json::array()}};
        for (const auto& run : runs) r["runs"].push_back(run.to_json());
        return r;
    }
};

namespace detail {

using toy_progress = std::function<void(const std::string&)>;

inline double tail_mean(const std::vector<double>& v) {
    const std::size_t n = std::max<std::size_t>(1, v.size() / 10);
    return std::accumulate(v.end() - static_cast<std::ptrdiff_t>(n), v.end(), 0.0) / double(n);
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
    std::nth_element(v.begin(), mid, v.end());
    return *mid;
}

/// The shared training loop (train/loop.hpp) for the toy's in-memory runs: one process, no log
/// file, no checkpoints (a toy run takes seconds), progress through the job's own callback.
template <class Step>
void run_quietly(std::int64_t steps, Step&& step_fn) {
    distributed::single_process one;
    std::int64_t step = 0;
    const train::loop_options options{.steps = steps, .progress = {.label = "toy", .style = util::progress_style::silent}};
    (void)train::run_training_loop(step, options, one, {}, false, step_fn, [] {});
}

/// Trains tok with `loss_fn` on fresh spiral batches; returns the tail mean of the loss.
template <class Loss>
double train_toy_tokenizer(models::toy_tokenizer<float>& tok, const Loss& loss_fn, const toy_config& cfg, const toy_progress& log,
                           const std::string& name) {
    optim::adamw opt(tok, {.lr = cfg.tokenizer_lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0});
    const auto schedule = optim::cosine_with_warmup(cfg.tokenizer_lr, std::min<std::int64_t>(100, cfg.tokenizer_steps / 10),
                                                    cfg.tokenizer_steps, cfg.tokenizer_lr / 20);
    philox_generator posterior_gen{nn::parameter_key(cfg.seed, "toy.posterior"), 0, 0};
    const std::uint64_t data_seed = nn::parameter_key(cfg.seed, "toy.tokenizer_data");
    std::vector<double> losses;
    const auto train_step = [&](std::int64_t step) {
        const auto batch = data::sample_spiral<float>(cfg.curve, cfg.tokenizer_batch, data_seed, std::uint64_t(step), cfg.data_noise);
        const auto& x = batch.points;
        auto moments = tok.encode(x);
        auto post = models::gaussian_posterior<float>::from_moments(moments);
        auto z = post.sample(posterior_gen);
        auto x_hat = tok.decode(z);
        auto r = loss_fn.evaluate(x.view(), x_hat.view(), post.mean.view(), post.logvar.view(), z.view());
        if (!r.finite())
            throw numeric_error(fmt::format("run_toy: the {} tokenizer's loss term '{}' is not finite at step {}", name,
                                            *r.first_nonfinite_term(), step));
        losses.push_back(r.total);
        auto dz = tok.decode_backward(r.gradients.dx_hat);
        ops::axpy(dz.view(), r.gradients.dz.view());
        post.sample_backward(dz, r.gradients.dmean, r.gradients.dlogvar);
        auto dmoments = post.moments_backward(r.gradients.dmean, r.gradients.dlogvar);
        (void)tok.encode_backward(dmoments);
        opt.set_lr(schedule(step));
        opt.step();
        opt.zero_grad();
        if (log && (step + 1) % 1000 == 0)
            log(fmt::format("{} tokenizer: step {}/{}, loss {:.4g}, σ² {:.3g}", name, step + 1, cfg.tokenizer_steps, r.total,
                            r.latent.sigma2_mean));
        train::step_report report;
        report.loss = r.total;
        return report;
    };
    run_quietly(cfg.tokenizer_steps, train_step);
    return tail_mean(losses);
}

/// Posterior samples z of n fresh curve points (the latents a generator is trained on).
inline tensor<float> toy_latents(models::toy_tokenizer<float>& tok, const toy_config& cfg, std::int64_t n, std::uint64_t data_seed,
                                 std::uint64_t stream, philox_generator& gen) {
    const auto batch = data::sample_spiral<float>(cfg.curve, n, data_seed, stream, cfg.data_noise);
    auto post = models::gaussian_posterior<float>::from_moments(tok.encode(batch.points));
    auto z = post.sample(gen);  // drawn either way, so both choices consume gen alike
    return cfg.flow_on_means ? std::move(post.mean) : std::move(z);
}

/// Trains a flow-matching model on the tokenizer's normalized latents; returns the tail-mean MSE.
inline double train_toy_flow(models::toy_velocity<float>& model, models::toy_tokenizer<float>& tok,
                             const diffusion::latent_normalization<float>& norm, const toy_config& cfg, const toy_progress& log,
                             const std::string& name) {
    optim::adamw opt(model, {.lr = cfg.flow_lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0});
    const auto schedule =
        optim::cosine_with_warmup(cfg.flow_lr, std::min<std::int64_t>(100, cfg.flow_steps / 10), cfg.flow_steps, cfg.flow_lr / 20);
    philox_generator latent_gen{nn::parameter_key(cfg.seed, "toy.flow_posterior"), 0, 0};
    philox_generator flow_gen{nn::parameter_key(cfg.seed, "toy.flow"), 0, 0};
    const std::uint64_t data_seed = nn::parameter_key(cfg.seed, "toy.flow_data");
    std::vector<double> losses;
    const auto train_step = [&](std::int64_t step) {
        const auto z = toy_latents(tok, cfg, cfg.flow_batch, data_seed, std::uint64_t(step), latent_gen);
        const auto x1 = norm.normalize(z);
        auto pair = diffusion::make_training_pair(x1.view(), flow_gen);
        auto v = model.forward(pair.x_t, pair.t);
        auto r = diffusion::flow_matching_loss(v.view(), pair.target.view());
        if (!std::isfinite(r.value))
            throw numeric_error(fmt::format("run_toy: the flow model on the {} latents has a non-finite loss at step {}", name, step));
        losses.push_back(r.value);
        (void)model.backward(r.dv);
        opt.set_lr(schedule(step));
        opt.step();
        opt.zero_grad();
        if (log && (step + 1) % 1000 == 0)
            log(fmt::format("{} flow: step {}/{}, mse {:.4g}", name, step + 1, cfg.flow_steps, r.value));
        train::step_report report;
        report.loss = r.value;
        return report;
    };
    run_quietly(cfg.flow_steps, train_step);
    return tail_mean(losses);
}

/// One tokenizer, its generator, and their measurements.
template <class Loss>
toy_tokenizer_result run_one(const std::string& name, const std::string& loss_words, const Loss& loss_fn, const toy_config& cfg,
                             const data::curve_sample<float>& eval, std::span<const data::point2> polyline, const toy_progress& log) {
    const auto start = std::chrono::steady_clock::now();
    toy_tokenizer_result r;
    r.name = name;
    r.loss = loss_words;
    // Same seeds for both tokenizers (and both generators): only the loss differs.
    models::toy_tokenizer<float> tok(cfg.tokenizer, nn::parameter_key(cfg.seed, "toy.tokenizer"));
    r.tokenizer_loss = train_toy_tokenizer(tok, loss_fn, cfg, log, name);

    {
        auto post = models::gaussian_posterior<float>::from_moments(tok.encode(eval.points));
        r.sigma2_mean = loss::summarize_latents(post.logvar.view(), post.mean.view()).sigma2_mean;
        r.latent_means = data::to_points(post.mean.view());
        const auto recon = tok.decode(post.mean);
        const auto d = data::polyline_distances(recon.view(), polyline);
        r.reconstruction_distance = std::accumulate(d.begin(), d.end(), 0.0) / double(d.size());
    }

    philox_generator norm_gen{nn::parameter_key(cfg.seed, "toy.normalization_posterior"), 0, 0};
    const auto fit_latents = toy_latents(tok, cfg, cfg.normalization_points, nn::parameter_key(cfg.seed, "toy.normalization_data"),
                                         0, norm_gen);
    const auto norm = diffusion::latent_normalization<float>::fit(fit_latents);

    models::toy_velocity<float> model(cfg.velocity, nn::parameter_key(cfg.seed, "toy.velocity"));
    r.flow_mse = train_toy_flow(model, tok, norm, cfg, log, name);

    philox_generator sample_gen{nn::parameter_key(cfg.seed, "toy.sampler"), 0, 0};
    auto x0 = tensor<float>(tensor_shape{cfg.samples, cfg.tokenizer.latent_dim});
    ops::fill_normal(x0.view(), sample_gen);
    const auto velocity = [&model](const tensor_view<float>& x, const tensor_view<float>& t) { return model.forward(x, t); };
    const auto normalized = diffusion::sample(velocity, x0.view(),
                                              {.kind = cfg.sampler, .steps = cfg.sampler_steps}, sample_gen);
    const auto latents = norm.denormalize(normalized);
    const auto decoded = tok.decode(latents);
    r.latent_samples = data::to_points(latents.view());
    r.decoded_samples = data::to_points(decoded.view());
    r.sample_distances = data::polyline_distances(std::span<const data::point2>(r.decoded_samples), polyline);
    r.off_curve_fraction = data::off_curve_fraction(r.sample_distances, cfg.threshold);
    std::vector<double> finite;
    for (double d : r.sample_distances)
        if (std::isfinite(d)) finite.push_back(d);
    r.sample_distance_mean = finite.empty() ? std::numeric_limits<double>::infinity() : std::accumulate(finite.begin(), finite.end(), 0.0) / double(finite.size());
    r.sample_distance_median = median(r.sample_distances);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (log)
        log(fmt::format("{}: off-curve fraction {:.4f} (threshold {}), σ² {:.3g}, reconstruction distance {:.4f}, {:.1f} s", name,
                        r.off_curve_fraction, cfg.threshold, r.sigma2_mean, r.reconstruction_distance, r.seconds));
    return r;
}

} // namespace detail

/// Trains and measures the KL and the VE tokenizer (see the top of this file). `log`, when given,
/// receives a line of progress now and then.
inline toy_result run_toy(const toy_config& cfg, const std::function<void(const std::string&)>& log = {}) {
    cfg.validate();
    if (cfg.tokenizer.data_dim != 2)
        throw std::invalid_argument(fmt::format("run_toy: the toy data is 2-D, tokenizer data_dim is {}", cfg.tokenizer.data_dim));
    if (cfg.velocity.dim != cfg.tokenizer.latent_dim)
        throw std::invalid_argument(fmt::format("run_toy: the velocity model's dim {} differs from the latent dim {}", cfg.velocity.dim,
                                                cfg.tokenizer.latent_dim));
    const auto start = std::chrono::steady_clock::now();
    toy_result result;
    result.config = cfg;
    const auto eval = data::sample_spiral<float>(cfg.curve, cfg.eval_points, nn::parameter_key(cfg.seed, "toy.eval_data"), 0);
    result.data = data::to_points(eval.points.view());
    result.data_position = eval.position;
    const auto polyline = data::spiral_polyline(cfg.curve, cfg.polyline_segments);

    using reconstruction = loss::reconstruction<loss::l2>;
    loss::tokenizer_loss<reconstruction, loss::kl_divergence> kl;
    kl.term<loss::kl_divergence>().cfg.weight = cfg.kl_weight;
    result.runs.push_back(detail::run_one("KL", fmt::format("rec_l2 + {:g}·KL", cfg.kl_weight), kl, cfg, eval, polyline, log));

    loss::tokenizer_loss<reconstruction, loss::variance_expansion, loss::magnitude_regularizer> ve;
    ve.term<loss::variance_expansion>().cfg = {.weight = cfg.ve_weight, .delta = cfg.ve_delta};
    ve.term<loss::magnitude_regularizer>().cfg = {.weight = cfg.magnitude_weight, .tau = cfg.magnitude_tau};
    result.runs.push_back(detail::run_one("VE",
                                          fmt::format("rec_l2 + {:g}/(σ² + {:g}) + {:g}·exp(|z| − {:g})", cfg.ve_weight, cfg.ve_delta,
                                                      cfg.magnitude_weight, cfg.magnitude_tau),
                                          ve, cfg, eval, polyline, log));
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
}

/// The figure: one row per tokenizer, with the data (coloured by curve position), the posterior
/// means of the data and the generator's latent samples, and the decoded samples against the curve.
inline io::plot_figure toy_figure(const toy_result& result) {
    const auto xs = [](const std::vector<data::point2>& p) {
        std::vector<double> v(p.size());
        for (std::size_t i = 0; i < p.size(); ++i) v[i] = p[i][0];
        return v;
    };
    const auto ys = [](const std::vector<data::point2>& p) {
        std::vector<double> v(p.size());
        for (std::size_t i = 0; i < p.size(); ++i) v[i] = p[i][1];
        return v;
    };
    const auto polyline = data::spiral_polyline(result.config.curve, 1000);
    io::plot_series curve{.name = "curve", .x = xs(polyline), .y = ys(polyline), .style = io::plot_style::lines, .line_width = 1,
                          .color = "#888888"};

    io::plot_figure fig;
    fig.title = fmt::format("Toy spiral: decoded SDE samples off the curve (distance > {:g})", result.config.threshold);
    fig.columns = 3;
    for (const auto& run : result.runs) {
        io::plot_panel data_panel{.title = fmt::format("{}: data", run.name), .x_label = "x", .y_label = "y", .equal_aspect = true,
                                  .value_label = "curve position", .key = false};
        data_panel.series.push_back({.name = "data", .x = xs(result.data), .y = ys(result.data), .value = result.data_position,
                                     .point_size = 0.4});

        io::plot_panel latent_panel{.title = fmt::format("{} latents (σ² = {:.3g})", run.name, run.sigma2_mean), .x_label = "z1",
                                    .y_label = "z2", .equal_aspect = true, .value_label = "curve position", .key_position = "below"};
        latent_panel.series.push_back({.name = "generated z", .x = xs(run.latent_samples), .y = ys(run.latent_samples),
                                       .point_size = 0.3, .color = "#bbbbbb"});
        latent_panel.series.push_back({.name = "posterior mean of data", .x = xs(run.latent_means), .y = ys(run.latent_means),
                                       .value = result.data_position, .point_size = 0.4});

        io::plot_panel sample_panel{.title = fmt::format("{} decoded samples: {:.1f}% off the curve", run.name,
                                                         100 * run.off_curve_fraction),
                                    .x_label = "x", .y_label = "y", .equal_aspect = true, .key_position = "below"};
        io::plot_series on{.name = "on the curve", .point_size = 0.4, .color = "#1f77b4"};
        io::plot_series off{.name = "off the curve", .point_size = 0.4, .color = "#d62728"};
        for (std::size_t i = 0; i < run.decoded_samples.size(); ++i) {
            const auto& p = run.decoded_samples[i];
            if (!std::isfinite(p[0]) || !std::isfinite(p[1])) continue;
            auto& s = run.sample_distances[i] > result.config.threshold ? off : on;
            s.x.push_back(p[0]);
            s.y.push_back(p[1]);
        }
        sample_panel.series.push_back(curve);
        sample_panel.series.push_back(std::move(on));
        sample_panel.series.push_back(std::move(off));
        const double lim = 1.3 * result.config.curve.radius;
        sample_panel.x_range = std::array<double, 2>{-lim, lim};
        sample_panel.y_range = std::array<double, 2>{-lim, lim};
        data_panel.x_range = sample_panel.x_range;
        data_panel.y_range = sample_panel.y_range;

        fig.panels.push_back(std::move(data_panel));
        fig.panels.push_back(std::move(latent_panel));
        fig.panels.push_back(std::move(sample_panel));
    }
    return fig;
}

/// Writes dir/toy.json (config and numbers) and the figure dir/toy.png with its toy.csv and
/// toy.gp; the figure's note says why there is no PNG when gnuplot is missing.
inline io::figure_files write_toy(const toy_result& result, const std::filesystem::path& dir, const io::plot_options& plot = {}) {
    std::filesystem::create_directories(dir);
    io::write_file_atomically(dir / "toy.json", [&](io::atomic_file& f) { f.write(result.to_json().dump(2) + "\n"); });
    return io::write_figure(toy_figure(result), dir / "toy.png", plot);
}

/// The `vediff toy` job: the experiment with a config, written to `out`.
struct toy_job {
    std::filesystem::path out = "runs/toy";
    toy_config config{};
};

/// Runs the toy, writes out/toy.json and out/toy.png (+ .csv, .gp), prints the numbers; returns toy.json's content.
inline nlohmann::json run_toy_job(const toy_job& job) {
    const auto result = run_toy(job.config, [](const std::string& line) { fmt::print("toy: {}\n", line); });
    const auto files = write_toy(result, job.out);
    for (const auto& run : result.runs)
        fmt::print("toy: {}: {:.2f}% of decoded samples farther than {:g} from the curve, σ² {:.3g}\n", run.name,
                   100 * run.off_curve_fraction, job.config.threshold, run.sigma2_mean);
    fmt::print("toy: {:.1f} s; wrote {} and {}\n", result.seconds, (job.out / "toy.json").string(),
               files.rendered ? files.png.string() : files.csv.string());
    if (!files.rendered) fmt::print("toy: {}\n", files.note);
    return result.to_json();
}

inline void add_toy_options(cxxopts::Options& options) {
    const toy_job d;
    const auto& c = d.config;
    const auto value = [](auto v) { return fmt::format("{}", v); };
    // clang-format off
    options.add_options()
        ("out", "output directory", cxxopts::value<std::string>()->default_value(d.out.string()))
        ("seed", "seed of every draw (data, initialization, posterior, noise)", cxxopts::value<std::uint64_t>()->default_value(value(c.seed)))
        ("tokenizer-steps", "training steps of each tokenizer", cxxopts::value<std::int64_t>()->default_value(value(c.tokenizer_steps)))
        ("flow-steps", "training steps of each flow-matching model", cxxopts::value<std::int64_t>()->default_value(value(c.flow_steps)))
        ("hidden", "width of the tokenizer's MLPs", cxxopts::value<std::int64_t>()->default_value(value(c.tokenizer.hidden)))
        ("velocity-hidden", "width of the velocity MLP", cxxopts::value<std::int64_t>()->default_value(value(c.velocity.hidden)))
        ("kl-weight", "β of the KL tokenizer", cxxopts::value<double>()->default_value(value(c.kl_weight)))
        ("ve-weight", "λ1 of the VE tokenizer", cxxopts::value<double>()->default_value(value(c.ve_weight)))
        ("magnitude-weight", "λ2 of the VE tokenizer", cxxopts::value<double>()->default_value(value(c.magnitude_weight)))
        ("tau", "τ of the magnitude term", cxxopts::value<double>()->default_value(value(c.magnitude_tau)))
        ("sampler-steps", "steps of the SDE sampler", cxxopts::value<int>()->default_value(value(c.sampler_steps)))
        ("samples", "decoded samples per tokenizer", cxxopts::value<std::int64_t>()->default_value(value(c.samples)))
        ("threshold", "distance from the curve beyond which a sample is off it", cxxopts::value<double>()->default_value(value(c.threshold)));
    // clang-format on
}

inline toy_job read_toy_options(const cxxopts::ParseResult& a) {
    toy_job job;
    job.out = a["out"].as<std::string>();
    auto& c = job.config;
    c.seed = a["seed"].as<std::uint64_t>();
    c.tokenizer_steps = a["tokenizer-steps"].as<std::int64_t>();
    c.flow_steps = a["flow-steps"].as<std::int64_t>();
    c.tokenizer.hidden = a["hidden"].as<std::int64_t>();
    c.velocity.hidden = a["velocity-hidden"].as<std::int64_t>();
    c.kl_weight = a["kl-weight"].as<double>();
    c.ve_weight = a["ve-weight"].as<double>();
    c.magnitude_weight = a["magnitude-weight"].as<double>();
    c.magnitude_tau = a["tau"].as<double>();
    c.sampler_steps = a["sampler-steps"].as<int>();
    c.samples = a["samples"].as<std::int64_t>();
    c.threshold = a["threshold"].as<double>();
    return job;
}

/// `vediff toy` as a command line.
inline int toy_main(int argc, char** argv, const std::string& program = "vediff toy") {
    cxxopts::Options options(program, "The 2-D toy of the VE paper's Figure 1: KL against VE tokenizers on a spiral");
    add_toy_options(options);
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)run_toy_job(read_toy_options(a));
        return 0;
    });
}

} // namespace vediff::jobs
