#define BOOST_TEST_MODULE evaluation
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <set>
#include <span>
#include <stdexcept>
#include <vector>

#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/jobs/evaluate.hpp"
#include "vediff/jobs/inference.hpp"
#include "vediff/metrics/classifier_score.hpp"
#include "vediff/metrics/eight_bit_images.hpp"
#include "vediff/metrics/random_subset.hpp"
#include "vediff/ops/random.hpp"
#include "support/scratch_dir.hpp"

using namespace vediff;
namespace fs = std::filesystem;

namespace {

void write_samples(const fs::path& dir, const tensor<float>& images, const std::vector<std::int32_t>& labels) {
    fs::create_directories(dir);
    io::safetensors_writer w;
    w.add("images", images.view());
    w.add("labels", tensor<std::int32_t>::from_host({std::int64_t(labels.size())}, std::span<const std::int32_t>(labels)).view());
    w.write(dir / "samples.safetensors");
}

/// Random images (N, 1, 32, 32) in [−1, 1] on 8-bit levels, the tokenizer format of the test set.
tensor<float> random_8bit_images(std::int64_t n, std::uint64_t seed) {
    philox_generator gen{.seed = seed};
    auto u = ops::uniform<float>({n, 1, 32, 32}, gen);
    for (std::int64_t i = 0; i < u.numel(); ++i) u.data()[i] = 2 * u.data()[i] - 1;
    return metrics::as_8bit_images(u.view());
}

// The tiny autoencoder of test_autoencoder.cpp's gradient checks.
models::autoencoder_config tiny_config() {
    return {.in_channels = 1, .out_channels = 1, .ch = 8, .ch_mult = {1, 2}, .num_res_blocks = 1, .z_channels = 2,
            .embed_dim = 2, .resolution = 8, .attn_resolutions = {4}, .norm_groups = 4};
}

} // namespace

BOOST_AUTO_TEST_SUITE(precision_recall_subsets)

// The sample job writes its samples class by class: 10 classes × 10. A subset of 30 must reach
// every class (the prefix of 30 holds 3), be 30 distinct sorted indices, and depend only on the seed.
BOOST_AUTO_TEST_CASE(a_subset_of_a_class_sorted_set_covers_every_class_and_repeats_with_its_seed) {
    const std::int64_t n = 100, m = 30;
    const auto chosen = metrics::random_subset(n, m, 0, jobs::pr_samples_stream);
    BOOST_TEST(chosen.size() == std::size_t(m));
    BOOST_TEST(std::is_sorted(chosen.begin(), chosen.end()));
    BOOST_TEST(std::set<std::int64_t>(chosen.begin(), chosen.end()).size() == std::size_t(m));
    BOOST_TEST(chosen.back() >= m);  // not the prefix 0..29
    std::set<std::int64_t> classes;
    for (auto i : chosen) classes.insert(i / 10);
    BOOST_TEST(classes.size() == 10u);
    BOOST_TEST(metrics::random_subset(n, m, 0, jobs::pr_samples_stream) == chosen);
    BOOST_TEST(metrics::random_subset(n, m, 1, jobs::pr_samples_stream) != chosen);
    BOOST_TEST(metrics::random_subset(n, m, 0, jobs::pr_reference_stream) != chosen);
    const auto all = metrics::random_subset(5, 5, 3, 0);
    BOOST_TEST(all == (std::vector<std::int64_t>{0, 1, 2, 3, 4}));
    BOOST_CHECK_THROW(metrics::random_subset(5, 6, 0, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(select_rows_takes_the_rows_in_order) {
    const auto x = tensor<float>::from_host({3, 2}, {0, 1, 10, 11, 20, 21});
    const auto y = metrics::select_rows(x.view(), {2, 0});
    BOOST_TEST(y.to_vector() == (std::vector<float>{20, 21, 0, 1}), boost::test_tools::per_element());
    BOOST_CHECK_THROW(metrics::select_rows(x.view(), {3}), std::out_of_range);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(eight_bit_images)

// b = floor(clamp(127.5·(x + 1), 0, 255) + ½): round half up, as DiT's sample_ddp.py's
// clamp(127.5·x + 128, 0, 255).to(uint8).
BOOST_AUTO_TEST_CASE(quantization_clamps_and_rounds_half_up) {
    BOOST_TEST(int(metrics::quantize_to_8bit(-1.0f)) == 0);
    BOOST_TEST(int(metrics::quantize_to_8bit(1.0f)) == 255);
    BOOST_TEST(int(metrics::quantize_to_8bit(-7.0f)) == 0);
    BOOST_TEST(int(metrics::quantize_to_8bit(1.3f)) == 255);
    BOOST_TEST(int(metrics::quantize_to_8bit(0.0f)) == 128);                    // 127.5 rounds up
    BOOST_TEST(int(metrics::quantize_to_8bit(float(10.4 / 127.5 - 1))) == 10);
    BOOST_TEST(int(metrics::quantize_to_8bit(float(10.6 / 127.5 - 1))) == 11);
    BOOST_CHECK_THROW(metrics::quantize_to_8bit(std::numeric_limits<float>::quiet_NaN()), std::invalid_argument);
    // Every level survives the round trip (Fashion-MNIST's b/127.5 − 1), so quantizing twice changes nothing.
    std::vector<std::uint8_t> levels(256);
    for (int b = 0; b < 256; ++b) levels[std::size_t(b)] = std::uint8_t(b);
    const auto x = metrics::from_8bit(levels, tensor_shape{256});
    BOOST_TEST(metrics::quantize_to_8bit(x.view()) == levels, boost::test_tools::per_element());
    BOOST_TEST(x.data()[0] == -1.0f);
    BOOST_TEST(x.data()[255] == 1.0f);
}

// A sample set with values outside [−1, 1] and between levels scores exactly as its 8-bit version:
// gFD, precision / recall and the classifier's accuracy.
BOOST_AUTO_TEST_CASE(sample_metrics_are_those_of_the_8bit_images) {
    models::fashion_classifier<float> net(models::fashion_classifier_config{.width = 8, .groups = 4, .feature_dim = 16}, 3);
    jobs::reference_set ref;
    ref.images.images = random_8bit_images(40, 1);
    ref.images.labels.assign(40, 0);
    ref.features = metrics::classifier_features(net, ref.images.images.view());
    ref.statistics.add(ref.features.view());

    const std::int64_t n = 30;
    philox_generator gen{.seed = 2};
    auto raw = ops::normal<float>({n, 1, 32, 32}, gen);  // ~32% of the values outside [−1, 1], all between levels
    std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
    const auto quantized = metrics::as_8bit_images(raw.view());

    vediff::testing::scratch_dir dir("test_evaluation_8bit");
    write_samples(dir.path / "raw", raw, labels);
    write_samples(dir.path / "quantized", quantized, labels);
    const auto a = jobs::evaluate_samples(dir.path / "raw", 3, net, ref, 7);
    const auto b = jobs::evaluate_samples(dir.path / "quantized", 3, net, ref, 7);
    for (const char* key : {"gfd", "precision", "recall", "classifier_accuracy"}) {
        BOOST_TEST_CONTEXT(key) { BOOST_TEST(a[key].get<double>() == b[key].get<double>()); }
    }
    // The raw decodes really are far from their 8-bit version: their features differ.
    const auto f_raw = metrics::classifier_features(net, raw.view()), f_8bit = metrics::classifier_features(net, quantized.view());
    BOOST_TEST(f_raw.to_vector() != f_8bit.to_vector());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(inference_keeps_nothing)

// After the jobs' feature extraction and tokenizer passes the layers kept nothing for a backward
// (nor a view of the pass's local inputs): a backward throws instead of reading released memory.
BOOST_AUTO_TEST_CASE(classifier_features_keep_no_activations) {
    models::fashion_classifier<float> net(models::fashion_classifier_config{.width = 8, .groups = 4, .feature_dim = 16}, 3);
    const auto images = random_8bit_images(4, 5);
    const auto f = metrics::classifier_features(net, images.view());
    const auto df = tensor<float>::full(f.shape(), 1.0f);
    BOOST_CHECK_THROW(net.features_net.backward(df.view()), std::logic_error);
}

// The jobs' loops decode a loop-local latent: the decoder must not keep a view of it (a dangling
// view once the iteration ends; ASan reports the read below as heap-use-after-free without the fix).
BOOST_AUTO_TEST_CASE(tokenizer_passes_keep_no_activations) {
    models::autoencoder_kl<float> ae(tiny_config(), 1);
    philox_generator gen{.seed = 6};
    const auto x = ops::normal<float>({2, 1, 8, 8}, gen);
    tensor<float> decoded;
    {
        const auto post = jobs::encode_posterior(ae, x.view());
        const auto dmoments = tensor<float>::full({2, 4, 4, 4}, 1.0f);
        BOOST_CHECK_THROW(ae.encode_backward(dmoments.view()), std::logic_error);
        const auto loop_local_latent = tensor<float>::copy_of(post.mean.view());
        decoded = jobs::decode_to_host(ae, loop_local_latent.view());
    }
    const auto dx = tensor<float>::full(decoded.shape(), 1.0f);
    BOOST_CHECK_THROW(ae.decode_backward(dx.view()), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
