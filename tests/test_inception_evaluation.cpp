// The evaluation's FID-Inception metrics: the network sees the 28×28 images in [0, 1] (as
// pytorch-fid feeds grayscale sets), and FID, sFID, the Inception Score and precision / recall
// equal the metrics computed directly from the network's outputs; the reference features come
// from the cache on a second run. (Release half only: 299×299 forward passes.)
#define BOOST_TEST_MODULE inception_evaluation
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/jobs/evaluate.hpp"
#include "vediff/metrics/eight_bit_images.hpp"
#include "vediff/ops/random.hpp"
#include "support/scratch_dir.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;
namespace tt = boost::test_tools;

namespace {

tensor<float> random_8bit_images(std::int64_t n, std::uint64_t seed) {
    philox_generator gen{.seed = seed};
    auto u = ops::uniform<float>({n, 1, 32, 32}, gen);
    for (std::int64_t i = 0; i < u.numel(); ++i) u.data()[i] = 2 * u.data()[i] - 1;
    return metrics::as_8bit_images(u.view());
}

/// (N, 1, 28, 28) in [0, 1]: the centre of tokenizer-format images, computed here independently.
tensor<float> centre_in_unit_range(const tensor<float>& x) {
    auto out = tensor<float>::empty({x.dim(0), 1, 28, 28});
    for (std::int64_t i = 0; i < x.dim(0); ++i)
        for (std::int64_t r = 0; r < 28; ++r)
            for (std::int64_t c = 0; c < 28; ++c) out.at(i, 0, r, c) = (x.at(i, 0, r + 2, c + 2) + 1) / 2;
    return out;
}

metrics::feature_statistics stats_of(const tensor<float>& f) {
    metrics::feature_statistics s;
    s.add(f.view());
    return s;
}

} // namespace

BOOST_AUTO_TEST_CASE(sample_metrics_equal_those_of_the_network_outputs) {
    vediff::testing::scratch_dir dir("test_inception_eval_samples");
    // A network with its default initialization, saved and loaded as a user's converted weights.
    {
        models::fid_inception_v3<float> net;
        io::save_state_dict(dir.path / "inception.safetensors", net);
    }
    const auto net = jobs::load_fid_inception(dir.path / "inception.safetensors");

    models::fashion_classifier<float> classifier(models::fashion_classifier_config{.width = 8, .groups = 4, .feature_dim = 16}, 3);
    jobs::reference_set ref;
    ref.images.images = random_8bit_images(12, 1);
    ref.images.labels.assign(12, 0);
    ref.features = metrics::classifier_features(classifier, ref.images.images.view());
    ref.statistics.add(ref.features.view());

    const std::int64_t n = 10;
    const auto samples = random_8bit_images(n, 2);
    {
        fs::create_directories(dir.path / "s");
        io::safetensors_writer w;
        w.add("images", samples.view());
        std::vector<std::int32_t> labels(n, 1);
        w.add("labels", tensor<std::int32_t>::from_host({n}, std::span<const std::int32_t>(labels)).view());
        w.write(dir.path / "s" / "samples.safetensors");
    }
    // Batches of 4 (3 batches, the last short) against one direct forward of all images.
    const auto batched = jobs::inception_features_of(*net, samples.view(), 4);
    const auto direct = net->forward(centre_in_unit_range(samples).view());
    const auto b = batched.pool3.to_vector(), d = direct.pool3.to_vector();
    double worst = 0, largest = 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
        worst = std::max(worst, double(std::abs(b[i] - d[i])));
        largest = std::max(largest, double(std::abs(d[i])));
    }
    BOOST_TEST(largest > 0);
    BOOST_TEST(worst <= 1e-5 * largest, "batched against direct pool3: " << worst << " of " << largest);

    const auto inception = jobs::make_inception_reference(*net, ref, dir.path / "inception.safetensors", dir.path / "cache");
    const auto result = jobs::evaluate_samples(dir.path / "s", 3, classifier, ref, 7, 0, &inception);
    BOOST_REQUIRE(result.contains("inception"));
    const auto& got = result["inception"];
    const auto ref_direct = net->forward(centre_in_unit_range(ref.images.images).view());
    const double fid = metrics::frechet_distance(stats_of(direct.pool3), stats_of(ref_direct.pool3));
    const double sfid = metrics::frechet_distance(stats_of(direct.spatial), stats_of(ref_direct.spatial));
    BOOST_TEST(fid > 0);
    BOOST_TEST(got["fid"].get<double>() == fid, tt::tolerance(1e-4));
    BOOST_TEST(got["sfid"].get<double>() == sfid, tt::tolerance(1e-4));
    BOOST_TEST(got["inception_score"].get<double>() == metrics::inception_score_from_logits(direct.logits.view()).mean, tt::tolerance(1e-5));
    // Precision / recall on pool3 over the same seeded subsets as the classifier's (10 of 12 reference rows).
    const auto ref_rows = metrics::random_subset(12, 10, 7, jobs::pr_reference_stream);
    const auto sample_rows = metrics::random_subset(10, 10, 7, jobs::pr_samples_stream);
    const auto pr = metrics::precision_recall(metrics::select_rows(ref_direct.pool3.view(), ref_rows).view(),
                                              metrics::select_rows(direct.pool3.view(), sample_rows).view());
    BOOST_TEST(got["precision"].get<double>() == pr.precision);
    BOOST_TEST(got["recall"].get<double>() == pr.recall);

    // The second reference comes from the cache, with the same features.
    const auto key = metrics::feature_cache_key("fid_inception", dir.path / "inception.safetensors", ref.images.images.view());
    BOOST_TEST(fs::exists(dir.path / "cache" / (key + ".safetensors")));
    const auto again = jobs::make_inception_reference(*net, ref, dir.path / "inception.safetensors", dir.path / "cache");
    BOOST_TEST(again.pool3.to_vector() == inception.pool3.to_vector());
}

BOOST_AUTO_TEST_CASE(weights_with_a_missing_tensor_are_refused_by_name) {
    vediff::testing::scratch_dir dir("test_inception_eval_missing");
    models::fid_inception_v3<float> net;
    io::safetensors_writer w;
    for (auto& [name, p] : nn::named_parameters(net))
        if (name != "fc.bias") w.add(name, p->value.view());
    w.write(dir.path / "partial.safetensors");
    BOOST_TEST(contains(error_message<io_error>([&] { jobs::load_fid_inception(dir.path / "partial.safetensors"); }), "fc.bias"));
    BOOST_TEST(contains(error_message<io_error>([&] { jobs::load_fid_inception(dir.path / "absent.safetensors"); }),
                        "inception-weights"));
}
