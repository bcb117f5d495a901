// The reference features' cache: reused for the same network weights and images, recomputed for
// other weights, other images or a damaged file, and never a source of stale features.
#define BOOST_TEST_MODULE feature_cache
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/jobs/evaluate.hpp"
#include "vediff/metrics/feature_cache.hpp"
#include "support/scratch_dir.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

tensor<float> images_with(float value) {
    auto x = tensor<float>::zeros({3, 1, 4, 4});
    x.data()[5] = value;
    return x;
}

void write_weights(const fs::path& path, float value) {
    io::safetensors_writer w;
    w.add("weight", images_with(value).view());
    w.write(path);
}

} // namespace

BOOST_AUTO_TEST_CASE(reused_only_for_the_same_weights_and_images) {
    vediff::testing::scratch_dir dir("test_feature_cache_keys");
    write_weights(dir.path / "a.safetensors", 1.0f);
    write_weights(dir.path / "b.safetensors", 2.0f);
    int computed = 0;
    float next = 10.0f;
    const auto compute = [&] {
        ++computed;
        std::map<std::string, tensor<float>> m;
        m.emplace("features", images_with(next++));
        return m;
    };
    const auto x = images_with(0.5f);
    const auto key_a = metrics::feature_cache_key("net", dir.path / "a.safetensors", x.view());
    bool reused = true;
    const auto first = metrics::cached_features(dir.path / "cache", key_a, compute, &reused);
    BOOST_TEST(!reused);
    BOOST_TEST(computed == 1);
    const auto second = metrics::cached_features(dir.path / "cache", key_a, compute, &reused);
    BOOST_TEST(reused);
    BOOST_TEST(computed == 1);
    BOOST_TEST(second.at("features").to_vector() == first.at("features").to_vector());
    // Other weights, other images, another network: other keys, so computed again.
    const auto key_b = metrics::feature_cache_key("net", dir.path / "b.safetensors", x.view());
    const auto key_x = metrics::feature_cache_key("net", dir.path / "a.safetensors", images_with(0.25f).view());
    const auto key_n = metrics::feature_cache_key("other", dir.path / "a.safetensors", x.view());
    BOOST_TEST(key_b != key_a);
    BOOST_TEST(key_x != key_a);
    BOOST_TEST(key_n != key_a);
    const auto with_b = metrics::cached_features(dir.path / "cache", key_b, compute, &reused);
    BOOST_TEST(!reused);
    BOOST_TEST(computed == 2);
    BOOST_TEST(with_b.at("features").to_vector() != first.at("features").to_vector());
    // No directory: no cache at all.
    (void)metrics::cached_features({}, key_a, compute, &reused);
    BOOST_TEST(!reused);
    BOOST_TEST(computed == 3);
}

BOOST_AUTO_TEST_CASE(a_damaged_or_foreign_file_is_recomputed_and_replaced) {
    vediff::testing::scratch_dir dir("test_feature_cache_damaged");
    int computed = 0;
    const auto compute = [&] {
        ++computed;
        std::map<std::string, tensor<float>> m;
        m.emplace("features", images_with(3.0f));
        return m;
    };
    fs::create_directories(dir.path / "cache");
    // Truncated garbage under the key's name.
    std::ofstream(dir.path / "cache" / "k.safetensors") << "not a safetensors file";
    bool reused = true;
    (void)metrics::cached_features(dir.path / "cache", "k", compute, &reused);
    BOOST_TEST(!reused);
    BOOST_TEST(computed == 1);
    (void)metrics::cached_features(dir.path / "cache", "k", compute, &reused);
    BOOST_TEST(reused);
    // A valid file that says it holds another key (renamed by hand) is not trusted.
    fs::copy_file(dir.path / "cache" / "k.safetensors", dir.path / "cache" / "j.safetensors");
    (void)metrics::cached_features(dir.path / "cache", "j", compute, &reused);
    BOOST_TEST(!reused);
    BOOST_TEST(computed == 2);
}

BOOST_AUTO_TEST_CASE(fingerprints_name_an_unreadable_file) {
    BOOST_TEST(contains(io_error_message([] { metrics::file_crc32("/nonexistent/weights.safetensors"); }), "/nonexistent/weights.safetensors"));
}

BOOST_AUTO_TEST_CASE(eval_features_flags_are_checked) {
    jobs::eval_job job;
    job.samples = {"unused"};
    job.features = "inception";
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { jobs::evaluate(job); }), "--inception-weights"));
    job.features = "classifier";
    job.inception_weights = "w.safetensors";
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { jobs::evaluate(job); }), "only with --features inception"));
    job.features = "vgg";
    BOOST_TEST(contains(error_message<std::invalid_argument>([&] { jobs::evaluate(job); }), "--features vgg"));
}
