#pragma once
// The eval job (`vediff eval`): every metric of the comparison, for a tokenizer and for sets of
// class-conditional samples, against Fashion-MNIST's test set. Features are the penultimate
// activations of the Fashion-MNIST classifier (metrics/classifier_score.hpp).
//   tokenizer: PSNR of the reconstructions (posterior mean), rFD (their features against the test
//              set's), σ² (mean over latent elements; also relative to the latents' variance),
//              robustness PSNR(decode(z), decode(z + s·ε·std)) per scale s, and the equilibrium:
//              T(μ) by Hutchinson through the decoder's backward, the correlation of log σ with
//              ¼·log(λ1/T) (Eq. 14), with the (σ², T) pairs saved for the scatter plot.
//   samples:   gFD against the test set with its bootstrap spread over the samples
//              (metrics/frechet_bootstrap.hpp; --fd-bootstrap resamples, stream "fdb"), precision /
//              recall (k = 3) against as many test images, the classifier's accuracy on the
//              conditioning labels.
// Every sample and reconstruction metric is computed on 8-bit images (metrics/eight_bit_images.hpp),
// as the reference protocols score PNGs. Precision / recall compare m = min(samples, reference)
// images of each side: a seeded random subset (metrics/random_subset.hpp; --seed, streams
// "prs"/"prr") of a side that is larger, never its prefix (the samples are ordered by class).
// Inference passes run under nn::no_grad (jobs/inference.hpp); the Hutchinson probes need backward.
//
// Feature networks. gFD, rFD and precision / recall are on the Fashion-MNIST classifier's features
// (eval.json's "feature_network"). --features inception adds the field's standard metrics on the
// FID Inception (models/inception.hpp; --inception-weights, a file of tools/convert_inception.py),
// fed the 28×28 images in [0, 1], replicated to RGB, as pytorch-fid feeds grayscale sets: under
// each result's "inception", FID (pool3), sFID (Mixed_6d's 7 spatial channels), the Inception
// Score (ADM's 5,000-row splits) and precision / recall (k, on pool3) for samples, and rFID for
// the tokenizer. The reference set's features of either network are cached in --reference-cache
// (metrics/feature_cache.hpp), keyed by the network's weights and the images.
//   eval --tokenizer runs/exp/ve_0.1/tokenizer --samples runs/exp/ve_0.1/samples_sde --out runs/exp/ve_0.1/eval
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/data/fashion_mnist.hpp"
#include "vediff/diffusion/latent_normalization.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/core/transfer.hpp"
#include "vediff/jobs/command.hpp"
#include "vediff/jobs/device_choice.hpp"
#include "vediff/jobs/inference.hpp"
#include "vediff/jobs/sample.hpp"
#include "vediff/metrics/classifier_score.hpp"
#include "vediff/metrics/decoder_sensitivity.hpp"
#include "vediff/metrics/eight_bit_images.hpp"
#include "vediff/metrics/frechet.hpp"
#include "vediff/metrics/feature_cache.hpp"
#include "vediff/metrics/frechet_bootstrap.hpp"
#include "vediff/metrics/inception_score.hpp"
#include "vediff/metrics/precision_recall.hpp"
#include "vediff/metrics/psnr.hpp"
#include "vediff/metrics/random_subset.hpp"
#include "vediff/metrics/robustness.hpp"
#include "vediff/metrics/sensitivity_equilibrium.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/models/inception.hpp"
#include "vediff/train/tokenizer_run.hpp"

namespace vediff::jobs {

struct eval_job {
    std::filesystem::path tokenizer;             // a train-tokenizer directory (optional)
    std::vector<std::filesystem::path> samples;  // sample directories (optional)
    std::filesystem::path classifier = "runs/classifier/classifier.safetensors";
    std::filesystem::path out = "runs/eval";     // eval.json, sensitivity.safetensors
    std::string data = data::fashion_mnist_default_dir.string();
    std::int64_t eval_images = 10000;
    std::int64_t robustness_images = 1000;
    std::vector<double> robustness_scales = {0.05, 0.1, 0.2, 0.5};
    std::int64_t sensitivity_images = 64;
    std::int64_t sensitivity_probes = 16;
    std::int64_t k = 3;  // precision / recall neighbours
    std::int64_t fd_bootstrap = 20;  // resamples of the gFD's bootstrap spread (0: none)
    std::uint64_t seed = 0;
    std::string device = "cpu";  // where the tokenizer runs; features and statistics are computed on the host
    std::string features = "classifier";          // "classifier", or "inception" to add the FID Inception's metrics
    std::filesystem::path inception_weights;      // with features == "inception"
    std::filesystem::path reference_cache = "runs/reference_cache";  // the reference features' cache ("" for none)
};

/// The FID Inception's features of tokenizer-format images (N, 1, S, S) in [−1, 1]: the 28×28
/// image in [0, 1] (to_classifier_format), replicated to RGB and resized by the network itself.
struct inception_outputs {
    tensor<float> pool3;    // (N, 2048)
    tensor<float> spatial;  // (N, 2023)
    tensor<float> logits;   // (N, 1008)
};

inline inception_outputs inception_features_of(const models::fid_inception_v3<float>& net, const tensor_view<float>& images,
                                               std::int64_t batch = 50) {
    const nn::no_grad inference;
    const auto x = metrics::to_classifier_format(images);
    const std::int64_t n = x.dim(0);
    using network = models::fid_inception_v3<float>;
    inception_outputs out{tensor<float>::empty(tensor_shape{n, network::pool3_features}),
                          tensor<float>::empty(tensor_shape{n, network::spatial_features}),
                          tensor<float>::empty(tensor_shape{n, network::num_classes})};
    for (std::int64_t begin = 0; begin < n; begin += batch) {
        const std::int64_t end = std::min(n, begin + batch);
        const auto f = net.forward(x.slice(begin, end));
        ops::copy(out.pool3.slice(begin, end), f.pool3.view());
        ops::copy(out.spatial.slice(begin, end), f.spatial.view());
        ops::copy(out.logits.slice(begin, end), f.logits.view());
    }
    return out;
}

/// The FID Inception, loaded strictly from a converted state_dict (a missing, extra or mis-shaped
/// tensor is an error naming it).
inline std::unique_ptr<models::fid_inception_v3<float>> load_fid_inception(const std::filesystem::path& weights) {
    require_path(weights, "inception-weights", "convert pytorch-fid's pt_inception-2015-12-05 weights with tools/convert_inception.py");
    auto net = std::make_unique<models::fid_inception_v3<float>>();
    io::load_state_dict(weights, *net, /*strict=*/true);
    return net;
}

/// The reference side under the FID Inception: pool3 features (for precision / recall) and the
/// pool3 and spatial statistics.
struct inception_reference {
    const models::fid_inception_v3<float>* net = nullptr;
    tensor<float> pool3;
    metrics::feature_statistics pool3_statistics, spatial_statistics;
};

/// The reference side of every comparison: the first N test images and their classifier features.
struct reference_set {
    data::labeled_images<float> images;  // tokenizer format (N, 1, 32, 32), [−1, 1]
    tensor<float> features;              // (N, F)
    metrics::feature_statistics statistics;
};

/// The first n test images, with their classifier features cached in cache_dir (keyed by the
/// classifier's weights file and the images; "" for no cache).
inline reference_set make_reference_set(models::fashion_classifier<float>& net, const std::string& data_dir, std::int64_t n,
                                        const std::filesystem::path& cache_dir = {}, const std::filesystem::path& classifier_weights = {}) {
    auto test = data::load_fashion_mnist<float>(data::split::test, data::fashion_mnist_tokenizer_format(data_dir));
    n = std::min(n, test.size());
    if (n < 2) throw std::invalid_argument(fmt::format("eval: {} test images; the metrics need at least 2", n));
    reference_set ref;
    ref.images.images = tensor<float>::copy_of(test.images.slice(0, n));
    ref.images.labels.assign(test.labels.begin(), test.labels.begin() + n);
    const auto compute = [&] {
        std::map<std::string, tensor<float>> m;
        m.emplace("features", metrics::classifier_features(net, ref.images.images.view()));
        return m;
    };
    const bool cached = !cache_dir.empty() && !classifier_weights.empty();
    auto features = metrics::cached_features(cached ? cache_dir : std::filesystem::path(),
                                             cached ? metrics::feature_cache_key("classifier", classifier_weights, ref.images.images.view()) : "",
                                             compute);
    ref.features = std::move(features.at("features"));
    ref.statistics.add(ref.features.view());
    return ref;
}

/// The reference images' FID-Inception features, cached like the classifier's.
inline inception_reference make_inception_reference(const models::fid_inception_v3<float>& net, const reference_set& ref,
                                                    const std::filesystem::path& weights, const std::filesystem::path& cache_dir) {
    const auto compute = [&] {
        auto f = inception_features_of(net, ref.images.images.view());
        std::map<std::string, tensor<float>> m;
        m.emplace("pool3", std::move(f.pool3));
        m.emplace("spatial", std::move(f.spatial));
        return m;
    };
    auto m = metrics::cached_features(cache_dir, cache_dir.empty() ? "" : metrics::feature_cache_key("fid_inception", weights, ref.images.images.view()),
                                      compute);
    inception_reference r;
    r.net = &net;
    r.pool3 = std::move(m.at("pool3"));
    r.pool3_statistics.add(r.pool3.view());
    r.spatial_statistics.add(m.at("spatial").view());
    return r;
}

/// Tokenizer metrics (see the top of this file), the tokenizer on D; writes OUT/sensitivity.safetensors.
template <device D>
nlohmann::json evaluate_tokenizer(const eval_job& job, models::fashion_classifier<float>& net, const reference_set& ref,
                                  const inception_reference* inception = nullptr) {
    auto tokenizer = train::load_tokenizer_run<D>(job.tokenizer);
    auto& ae = tokenizer.model;
    // The decoder as a host function: latents in, images out (on the cpu, no copies).
    const auto decode_on_host = [&](const tensor_view<float>& z) -> tensor<float> { return decode_to_host(ae, z); };
    const std::int64_t n = ref.images.size(), batch = 100;
    const auto latent = ae.latent_shape(n);
    tensor<float> mean(latent), logvar(latent), reconstructions(ref.images.images.shape());
    diffusion::latent_moments z_moments;
    philox_generator posterior_gen{job.seed, 0x6576616cULL, 0};  // "eval"
    for (std::int64_t begin = 0; begin < n; begin += batch) {
        const std::int64_t end = std::min(n, begin + batch);
        const view_on<float, D> x(ref.images.images.slice(begin, end));
        auto post = tokenizer.posterior(x.view(), job.seed, models::sigma_vae_noise::evaluation_draw, begin);
        const auto z = post.sample(posterior_gen);
        z_moments.add(z.view());
        const view_on<float, cpu> post_mean(post.mean.view()), post_logvar(post.logvar.view());
        ops::copy(mean.slice(begin, end), post_mean.view());
        ops::copy(logvar.slice(begin, end), post_logvar.view());
        const auto x_hat = decode_on_host(post_mean.view());
        ops::copy(reconstructions.slice(begin, end), x_hat.view());
    }
    reconstructions = metrics::as_8bit_images(reconstructions.view());
    const double psnr = metrics::psnr(ref.images.images.view(), reconstructions.view());
    metrics::feature_statistics rec_stats;
    rec_stats.add(metrics::classifier_features(net, reconstructions.view()).view());
    const double rfd = metrics::frechet_distance(rec_stats, ref.statistics);
    nlohmann::json inception_json;
    if (inception) {
        metrics::feature_statistics rec_pool3;
        rec_pool3.add(inception_features_of(*inception->net, reconstructions.view()).pool3.view());
        inception_json = {{"rfid", metrics::frechet_distance(rec_pool3, inception->pool3_statistics)}};
    }

    double sigma2_sum = 0;
    for (float lv : logvar.to_vector()) sigma2_sum += std::exp(double(lv));
    const double sigma2_mean = sigma2_sum / double(logvar.numel());
    const auto channel_std = z_moments.stddev();
    double latent_variance = 0;
    for (double s : channel_std) latent_variance += s * s / double(channel_std.size());

    // Robustness: decode(μ) against decode(μ + s·ε·std), the std per channel of the latents z.
    const std::int64_t n_rob = std::min(job.robustness_images, n);
    philox_generator robustness_gen{job.seed, 0x726f62ULL, 0};  // "rob"
    const auto robustness = metrics::sampling_robustness(decode_on_host, mean.slice(0, n_rob), channel_std, robustness_gen,
                                                         {.scales = job.robustness_scales, .batch_size = batch});
    nlohmann::json robustness_json = nlohmann::json::array();
    for (std::size_t i = 0; i < robustness.size(); ++i)
        robustness_json.push_back({{"scale", job.robustness_scales[i]}, {"psnr", robustness[i]}});

    // The equilibrium of Eq. 14 on the posterior means of the first images.
    const std::int64_t n_sens = std::min(job.sensitivity_images, n);
    philox_generator probe_gen{job.seed, 0x686574ULL, 0};  // "het"
    const auto mu_sens = tensor<float>::copy_of(mean.slice(0, n_sens));
    const auto logvar_sens = tensor<float>::copy_of(logvar.slice(0, n_sens));
    const view_on<float, D> mu_sens_on_device(mu_sens.view());
    const auto sensitivity_on_device = metrics::decoder_sensitivity(ae, mu_sens_on_device.view(), probe_gen, {.probes = job.sensitivity_probes});
    const auto sensitivity = to<cpu>(sensitivity_on_device.view());
    const double lambda1 = tokenizer.config.value("ve_weight", 0.1);
    const auto fit = metrics::sensitivity_equilibrium(logvar_sens.view(), sensitivity.view(), lambda1);
    std::filesystem::create_directories(job.out);
    {
        io::safetensors_writer w;
        auto sigma2 = tensor<float>(logvar_sens.shape());
        const auto lv = logvar_sens.to_vector();
        for (std::int64_t i = 0; i < sigma2.numel(); ++i) sigma2.data()[i] = std::exp(lv[std::size_t(i)]);
        w.add("sigma2", sigma2.view());
        w.add("sensitivity", sensitivity.view());
        w.add_metadata("lambda1", fmt::format("{}", lambda1));
        w.write(job.out / "sensitivity.safetensors");
    }
    nlohmann::json result = {{"tokenizer", job.tokenizer.string()},
            {"loss", tokenizer.config.value("loss", "?")},
            {"psnr", psnr},
            {"rfd", rfd},
            {"sigma2_mean", sigma2_mean},
            {"latent_variance", latent_variance},
            {"sigma2_relative", sigma2_mean / latent_variance},
            {"latent_channel_std", channel_std},
            {"robustness", robustness_json},
            {"equilibrium", {{"lambda1", lambda1}, {"correlation", fit.correlation}, {"slope", fit.slope},
                             {"elements", fit.count}, {"images", n_sens}, {"probes", job.sensitivity_probes}}},
            {"eval_images", n}};
    if (inception) result["inception"] = inception_json;
    return result;
}

/// The precision / recall subsets' Philox streams ("prs", "prr") under the eval seed.
inline constexpr std::uint64_t pr_samples_stream = 0x707273ULL, pr_reference_stream = 0x707272ULL;
/// The gFD bootstrap's Philox stream ("fdb") under the eval seed.
inline constexpr std::uint64_t fd_bootstrap_stream = 0x666462ULL;

/// Sample metrics against the reference set: gFD, precision / recall, classifier accuracy (the
/// samples as 8-bit images: load_samples quantizes).
inline nlohmann::json evaluate_samples(const std::filesystem::path& dir, std::int64_t k, models::fashion_classifier<float>& net,
                                       const reference_set& ref, std::uint64_t seed = 0, std::int64_t fd_bootstrap = 0,
                                       const inception_reference* inception = nullptr) {
    const auto s = load_samples(dir / "samples.safetensors");
    const auto features = metrics::classifier_features(net, s.images.view());
    metrics::feature_statistics stats;
    stats.add(features.view());
    const std::int64_t m = std::min(features.dim(0), ref.features.dim(0));
    const auto sample_rows = metrics::random_subset(features.dim(0), m, seed, pr_samples_stream);
    const auto reference_rows = metrics::random_subset(ref.features.dim(0), m, seed, pr_reference_stream);
    const auto sample_subset = metrics::select_rows(features.view(), sample_rows);
    const auto reference_subset = metrics::select_rows(ref.features.view(), reference_rows);
    const auto pr = metrics::precision_recall(reference_subset.view(), sample_subset.view(), {.k = static_cast<int>(k)});
    nlohmann::json result = {{"samples", dir.string()},
            {"images", s.images.dim(0)},
            {"gfd", metrics::frechet_distance(stats, ref.statistics)},
            {"precision", pr.precision},
            {"recall", pr.recall},
            {"pr_images", m},
            {"pr_seed", seed},
            {"classifier_accuracy", metrics::classifier_accuracy(net, s.images.view(), s.labels)}};
    if (fd_bootstrap > 0) {
        const auto spread = metrics::frechet_bootstrap(features.view(), ref.statistics, fd_bootstrap, seed, fd_bootstrap_stream);
        result["gfd_bootstrap_sd"] = spread.sd;
        result["gfd_bootstrap_mean"] = spread.mean;
        result["gfd_bootstrap_resamples"] = fd_bootstrap;
    }
    if (inception) {
        // The same subsets of rows for precision / recall as with the classifier's features.
        const auto f = inception_features_of(*inception->net, s.images.view());
        metrics::feature_statistics pool3, spatial;
        pool3.add(f.pool3.view());
        spatial.add(f.spatial.view());
        const auto ipr = metrics::precision_recall(metrics::select_rows(inception->pool3.view(), reference_rows).view(),
                                                   metrics::select_rows(f.pool3.view(), sample_rows).view(), {.k = static_cast<int>(k)});
        const auto is = metrics::inception_score_from_logits(f.logits.view());
        result["inception"] = {{"fid", metrics::frechet_distance(pool3, inception->pool3_statistics)},
                               {"sfid", metrics::frechet_distance(spatial, inception->spatial_statistics)},
                               {"inception_score", is.mean},
                               {"inception_score_std", is.std},
                               {"precision", ipr.precision},
                               {"recall", ipr.recall}};
    }
    return result;
}

/// Runs the job (the tokenizer on job.device, one of Devices) and writes OUT/eval.json; returns it.
template <class Devices = cpu_only>
nlohmann::json evaluate(const eval_job& job) {
    if (job.tokenizer.empty() && job.samples.empty()) throw std::invalid_argument("eval: give --tokenizer, --samples or both");
    if (job.features != "classifier" && job.features != "inception")
        throw usage_error(fmt::format("--features {}: expected classifier or inception", job.features));
    if ((job.features == "inception") != !job.inception_weights.empty())
        throw std::invalid_argument(job.features == "inception" ? "--features inception needs --inception-weights FILE"
                                                                : "--inception-weights is used only with --features inception");
    auto net = metrics::load_fashion_classifier(job.classifier);
    const auto ref = make_reference_set(net, job.data, job.eval_images, job.reference_cache, job.classifier);
    nlohmann::json result = {{"classifier", job.classifier.string()},
                             {"reference_images", ref.images.size()},
                             {"feature_network", "Fashion-MNIST classifier (penultimate features): gfd, rfd, precision, recall"}};
    std::unique_ptr<models::fid_inception_v3<float>> inception_net;
    std::optional<inception_reference> inception;
    if (job.features == "inception") {
        inception_net = load_fid_inception(job.inception_weights);
        inception = make_inception_reference(*inception_net, ref, job.inception_weights, job.reference_cache);
        result["inception_weights"] = job.inception_weights.string();
        result["inception_feature_network"] = "FID Inception (pytorch-fid's 2015 graph): fid and rfid on pool3, sfid on Mixed_6d's "
                                              "channels 0-6, inception_score on the 1008 logits, precision and recall on pool3";
    }
    const inception_reference* inc = inception ? &*inception : nullptr;
    if (!job.tokenizer.empty())
        result["tokenizer"] = with_device<Devices>(job.device, [&]<device D>() { return evaluate_tokenizer<D>(job, net, ref, inc); });
    for (const auto& dir : job.samples)
        result["samples"][dir.filename().string()] = evaluate_samples(dir, job.k, net, ref, job.seed, job.fd_bootstrap, inc);
    std::filesystem::create_directories(job.out);
    io::write_file_atomically(job.out / "eval.json", [&](io::atomic_file& f) { f.write(result.dump(2) + "\n"); });
    fmt::print("{}\nwrote {}\n", result.dump(2), (job.out / "eval.json").string());
    return result;
}

template <class Devices = cpu_only>
void add_eval_options(cxxopts::Options& options) {
    const eval_job d;
    const auto dflt = [](auto v) { return fmt::format("{}", v); };
    // clang-format off
    options.add_options()
        ("tokenizer", "train-tokenizer directory to evaluate", cxxopts::value<std::string>()->default_value(""))
        ("samples", "sample directory to evaluate (repeatable)", cxxopts::value<std::vector<std::string>>())
        ("classifier", "Fashion-MNIST classifier weights (the feature network)", cxxopts::value<std::string>()->default_value(d.classifier.string()))
        ("out", "output directory (eval.json)", cxxopts::value<std::string>()->default_value(d.out.string()))
        ("data", "Fashion-MNIST directory", cxxopts::value<std::string>()->default_value(d.data))
        ("eval-images", "test images: reconstructions and the reference features", cxxopts::value<std::int64_t>()->default_value(dflt(d.eval_images)))
        ("robustness-images", "test images whose latents are perturbed", cxxopts::value<std::int64_t>()->default_value(dflt(d.robustness_images)))
        ("sensitivity-images", "test images whose decoder Jacobian is probed", cxxopts::value<std::int64_t>()->default_value(dflt(d.sensitivity_images)))
        ("probes", "Hutchinson probes per image", cxxopts::value<std::int64_t>()->default_value(dflt(d.sensitivity_probes)))
        ("k", "neighbours of precision / recall", cxxopts::value<std::int64_t>()->default_value(dflt(d.k)))
        ("fd-bootstrap", "resamples of the samples for the gFD's spread (0: none)", cxxopts::value<std::int64_t>()->default_value(dflt(d.fd_bootstrap)))
        ("features", "feature networks: classifier (gFD, rFD, precision / recall) or inception (also FID, sFID, IS, rFID on the FID Inception)",
         cxxopts::value<std::string>()->default_value(d.features))
        ("inception-weights", "the FID Inception's weights (tools/convert_inception.py) for --features inception",
         cxxopts::value<std::string>()->default_value(""))
        ("reference-cache", "directory caching the reference images' features (\"\" for none)",
         cxxopts::value<std::string>()->default_value(d.reference_cache.string()))
        ("seed", "random seed (posterior samples, robustness noise, probes, precision / recall subsets)", cxxopts::value<std::uint64_t>()->default_value(dflt(d.seed)));
    // clang-format on
    add_device_option<Devices>(options);
}

template <class Devices = cpu_only>
eval_job read_eval_options(const cxxopts::ParseResult& a) {
    eval_job job;
    job.tokenizer = a["tokenizer"].as<std::string>();
    if (a.count("samples"))
        for (const auto& s : a["samples"].as<std::vector<std::string>>()) {
            require_path(std::filesystem::path(s) / "samples.safetensors", "samples", "make it with `vediff sample`");
            job.samples.emplace_back(s);
        }
    job.classifier = a["classifier"].as<std::string>();
    require_path(job.classifier, "classifier", "train it with `vediff classifier`");
    job.out = a["out"].as<std::string>();
    job.data = a["data"].as<std::string>();
    job.eval_images = a["eval-images"].as<std::int64_t>();
    job.robustness_images = a["robustness-images"].as<std::int64_t>();
    job.sensitivity_images = a["sensitivity-images"].as<std::int64_t>();
    job.sensitivity_probes = a["probes"].as<std::int64_t>();
    job.k = a["k"].as<std::int64_t>();
    job.fd_bootstrap = a["fd-bootstrap"].as<std::int64_t>();
    if (job.fd_bootstrap < 0 || job.fd_bootstrap == 1)
        throw usage_error(fmt::format("--fd-bootstrap {}: expected 0 (none) or at least 2 resamples", job.fd_bootstrap));
    job.seed = a["seed"].as<std::uint64_t>();
    job.device = read_device<Devices>(a);
    job.features = a["features"].as<std::string>();
    job.inception_weights = a["inception-weights"].as<std::string>();
    job.reference_cache = a["reference-cache"].as<std::string>();
    return job;
}

template <class Devices = cpu_only>
int evaluate_main(int argc, char** argv, const std::string& program = "vediff eval") {
    cxxopts::Options options(program, "Tokenizer and sample metrics against the Fashion-MNIST test set");
    add_eval_options<Devices>(options);
    // --samples is a sample directory here (toy's --samples is a count).
    return run_command(options, argc, argv, [](const cxxopts::ParseResult& a) {
        (void)evaluate<Devices>(read_eval_options<Devices>(a));
        return 0;
    }, {{"samples", flag_kind::existing_directory}});
}

} // namespace vediff::jobs
