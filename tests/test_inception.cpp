// The FID Inception (models/inception.hpp): state_dict names and shapes equal PyTorch's, parity of
// pool3, logits and sFID's spatial features with the PyTorch network of
// tests/fixtures/make_inception.py, grayscale replication, strict loading.
// The fixture's weights are not committed (95 MB): fixture_weights computes them from each
// tensor's name exactly as tests/fixtures/inception_weights.py does.
//
// `test_inception -- PATH` also keeps the fixture weights as safetensors at PATH, for the forward
// tool's ctest (examples/CMakeLists.txt, example_forward_inception).
#define BOOST_TEST_MODULE inception
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/forward_pass.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/inception.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

using inception = models::fid_inception_v3<float>;

const std::string fixture_dir = std::string(VEDIFF_FIXTURE_DIR) + "/inception";

// inception_weights.py's generator: FNV-1a of the name, SplitMix64's finalizer of a Weyl sequence.
std::uint64_t fnv1a(std::string_view s) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
    return h;
}
double uniform01(std::uint64_t key, std::uint64_t i) {
    std::uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return double(z >> 11) * 0x1.0p-53;
}
bool ends_with(std::string_view s, std::string_view tail) {
    return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

/// Sets every parameter to inception_weights.py's fixture value.
void fixture_weights(inception& model) {
    model.for_each_parameter([](const std::string& name, nn::parameter<float, cpu>& p) {
        if (ends_with(name, "num_batches_tracked")) {
            ops::fill(p.value.view(), 0.0f);
            return;
        }
        double lo = 0, hi = 0;
        if (ends_with(name, "conv.weight")) {
            const double bound = std::sqrt(6.0 / double(p.shape().prod(1, 4)));
            lo = -bound, hi = bound;
        } else if (ends_with(name, "bn.weight") || ends_with(name, "bn.running_var")) {
            lo = 0.6, hi = 1.4;
        } else if (ends_with(name, "bn.bias") || ends_with(name, "bn.running_mean")) {
            lo = -0.2, hi = 0.2;
        } else if (name == "fc.weight") {
            lo = -4 / std::sqrt(2048.0), hi = 4 / std::sqrt(2048.0);
        } else if (name == "fc.bias") {
            lo = -0.1, hi = 0.1;
        } else {
            BOOST_FAIL("no fixture rule for " << name);
        }
        const std::uint64_t key = fnv1a(name);
        auto host = tensor<float, cpu>::empty(p.shape());
        for (std::int64_t i = 0; i < host.numel(); ++i)
            host.data()[i] = static_cast<float>(lo + (hi - lo) * uniform01(key, static_cast<std::uint64_t>(i)));
        ops::copy(p.value.view(), host.view());
    });
}

/// One model with the fixture weights, built once (the weights take a second to compute).
inception& fixture_model() {
    static const auto model = [] {
        auto m = std::make_unique<inception>();
        fixture_weights(*m);
        return m;
    }();
    return *model;
}

double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, double(std::abs(x)));
    return m;
}

/// Every output within 1e-4 of the reference's largest magnitude.
void check_outputs(const models::inception_features<float>& got, const std::string& what) {
    const io::safetensors_file want_file(fixture_dir + "/outputs.safetensors");
    const std::map<std::string, const tensor<float, cpu>*> outputs{
        {"pool3", &got.pool3}, {"logits", &got.logits}, {"spatial", &got.spatial}};
    for (const auto& [name, t] : outputs) {
        const auto want = want_file.get<float>(name);
        BOOST_REQUIRE_MESSAGE(t->shape() == want.shape(), what << " " << name << ": shape " << t->shape().to_string()
                                                                << " vs " << want.shape().to_string());
        const auto a = t->to_vector(), b = want.to_vector();
        double worst = 0;
        for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
        const double scale = max_abs(b);
        BOOST_TEST(scale > 0.5, name << " is not degenerate");
        BOOST_TEST(worst / scale < 1e-4, what << " " << name << ": max error " << worst << " of max magnitude " << scale);
    }
}

} // namespace

BOOST_AUTO_TEST_CASE(state_dict_names_and_shapes_are_pytorchs_in_order) {
    std::ifstream in(fixture_dir + "/state_dict.txt");
    BOOST_REQUIRE(in);
    std::vector<std::string> want;
    for (std::string line; std::getline(in, line);) {
        std::istringstream ls(line);
        std::string name, dtype, shape;
        ls >> name >> dtype;
        for (std::int64_t d; ls >> d;) shape += " " + std::to_string(d);
        want.push_back(name + shape);
    }
    inception model;
    std::vector<std::string> got;
    model.for_each_parameter([&](const std::string& name, nn::parameter<float, cpu>& p) {
        std::string shape;
        for (auto d : p.shape()) shape += " " + std::to_string(d);
        got.push_back(name + shape);
    });
    BOOST_TEST(want.size() == 566u);
    BOOST_TEST(got == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(features_match_pytorch) {
    const io::safetensors_file inputs(fixture_dir + "/inputs.safetensors");
    const auto x = inputs.get<float>("x");
    BOOST_REQUIRE(x.shape() == (tensor_shape{2, 3, 60, 90}));
    check_outputs(fixture_model().forward(x.view()), "vediff");
}

BOOST_AUTO_TEST_CASE(grayscale_images_are_replicated_to_three_channels) {
    auto gray = tensor<float, cpu>::empty({1, 1, 30, 40});
    for (std::int64_t i = 0; i < gray.numel(); ++i) gray.data()[i] = float((i * 37) % 101) / 100.0f;
    const auto rgb = models::replicate_grayscale(gray.view());
    BOOST_REQUIRE(rgb.shape() == (tensor_shape{1, 3, 30, 40}));
    const auto g = gray.to_vector(), c = rgb.to_vector();
    for (std::size_t k = 0; k < 3; ++k)
        BOOST_TEST(std::equal(g.begin(), g.end(), c.begin() + static_cast<std::ptrdiff_t>(k * g.size())));
    const auto from_gray = fixture_model().forward(gray.view());
    const auto from_rgb = fixture_model().forward(rgb.view());
    BOOST_TEST(from_gray.pool3.to_vector() == from_rgb.pool3.to_vector());
    BOOST_TEST(from_gray.spatial.to_vector() == from_rgb.spatial.to_vector());
    const auto two = tensor<float, cpu>::zeros({1, 2, 30, 40});
    BOOST_TEST(contains(shape_error_message([&] { fixture_model().forward(two.view()); }), "(N, 1, H, W) or (N, 3, H, W)"));
}

BOOST_AUTO_TEST_CASE(weights_round_trip_and_the_forward_tool_matches_pytorch) {
    // The fixture weights through safetensors into a fresh model, then the forward tool's code.
    temp_dir dir("inception");
    const auto& suite = boost::unit_test::framework::master_test_suite();
    const std::filesystem::path weights = suite.argc > 1 ? std::filesystem::path(suite.argv[1]) : dir / "weights.safetensors";
    io::save_state_dict(weights, fixture_model());
    {
        std::ofstream(dir / "config.json") << "{}";
    }
    const auto out = io::run_forward("inception", dir / "config.json", weights, fixture_dir + "/inputs.safetensors");
    models::inception_features<float> got;
    got.pool3 = tensor<float, cpu>::copy_of(out.at("pool3").view());
    got.logits = tensor<float, cpu>::copy_of(out.at("logits").view());
    got.spatial = tensor<float, cpu>::copy_of(out.at("spatial").view());
    check_outputs(got, "forward tool");
    std::ofstream(dir / "bad_config.json") << R"({"num_classes": 1000})";
    BOOST_TEST(contains(error_message<io_error>([&] {
                            io::run_forward("inception", dir / "bad_config.json", weights, fixture_dir + "/inputs.safetensors");
                        }),
                        "num_classes"));
}

BOOST_AUTO_TEST_CASE(loading_refuses_missing_extra_and_misshaped_tensors_by_name) {
    temp_dir dir("inception_load");
    // A state_dict of the right names with one tensor left out, one added, one of the wrong shape.
    inception model;
    io::safetensors_writer writer;
    for (auto& [name, p] : nn::named_parameters(model)) {
        if (name == "Mixed_6d.branch1x1.bn.running_var") continue;
        if (name == "Mixed_7c.branch_pool.conv.weight") {
            writer.add(name, tensor<float, cpu>::zeros({192, 2048, 3, 3}).view());
            continue;
        }
        writer.add(name, p->value.view());
    }
    writer.add("AuxLogits.fc.weight", tensor<float, cpu>::zeros({1008, 768}).view());
    writer.write(dir / "bad.safetensors");
    const auto message = io_error_message([&] { io::load_state_dict(dir / "bad.safetensors", model); });
    BOOST_TEST(contains(message, "'Mixed_6d.branch1x1.bn.running_var' (192) is missing"), message);
    BOOST_TEST(contains(message, "'Mixed_7c.branch_pool.conv.weight' has shape (192, 2048, 3, 3) in the file but (192, 2048, 1, 1)"),
               message);
    BOOST_TEST(contains(message, "'AuxLogits.fc.weight'"), message);
}
