// The cuda device against the cpu device on whole training steps and sampling runs
// (support/device_parity.hpp): the loss and every parameter gradient of one tokenizer step and one
// DiT / LightningDiT step within 1e-4 relative, and same-seed guided samples (Euler, Heun, SDE)
// within 1e-4 relative (their displacement from the noise). Without a GPU the program reports
// itself skipped (exit code 77).
#define BOOST_TEST_MODULE cuda_parity
#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#include "support/device_parity.hpp"
#include "vediff/backend/cuda.hpp"

using namespace vediff;
using namespace vediff::testing::parity;
using other = vediff::cuda;  // CUDA's headers declare a global namespace `cuda` too

namespace {
constexpr double loss_tolerance = 1e-4, gradient_tolerance = 1e-4, sample_tolerance = 1e-4;
} // namespace

BOOST_AUTO_TEST_CASE(tokenizer_training_step_matches_the_cpu) {
    models::autoencoder_kl<float, cpu> on_cpu(small_autoencoder(), 0);
    models::autoencoder_kl<float, other> on_other(small_autoencoder(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 3};
    const auto x = ops::uniform<float, cpu>({2, 1, 32, 32}, data, -1.0f, 1.0f);
    const auto a = tokenizer_step(on_cpu, x);
    const auto b = tokenizer_step(on_other, x);
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        BOOST_TEST(std::abs(a[i].second - b[i].second) <= loss_tolerance * std::abs(a[i].second),
                   a[i].first << ": " << a[i].second << " vs " << b[i].second);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(dit_training_step_matches_the_cpu) {
    models::dit<float, cpu> on_cpu(small_dit(), 0);
    models::dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 4};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
    const double loss_cpu = dit_step<cpu>(on_cpu, x1, labels);
    const double loss_other = dit_step<other>(on_other, x1, labels);
    BOOST_TEST(std::abs(loss_cpu - loss_other) <= loss_tolerance * std::abs(loss_cpu), loss_cpu << " vs " << loss_other);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(lightningdit_training_step_matches_the_cpu) {
    models::lightning_dit<float, cpu> on_cpu(small_dit(), 0);
    models::lightning_dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    philox_generator data{.seed = 6};
    const auto x1 = ops::normal<float, cpu>({8, 4, 8, 8}, data);
    const std::vector<std::int32_t> labels = {9, 8, 7, 6, 5, 4, 3, 2};
    const double loss_cpu = dit_step<cpu>(on_cpu, x1, labels);
    const double loss_other = dit_step<other>(on_other, x1, labels);
    BOOST_TEST(std::abs(loss_cpu - loss_other) <= loss_tolerance * std::abs(loss_cpu), loss_cpu << " vs " << loss_other);
    BOOST_TEST(largest_gradient_difference(on_cpu, on_other) <= gradient_tolerance);
}

BOOST_AUTO_TEST_CASE(same_seed_sampling_gives_the_same_images) {
    models::dit<float, cpu> on_cpu(small_dit(), 0);
    models::dit<float, other> on_other(small_dit(), 0);
    randomize_and_copy(on_cpu, on_other);
    for (const auto kind : {diffusion::sampler_kind::euler, diffusion::sampler_kind::heun, diffusion::sampler_kind::euler_maruyama}) {
        const auto a = guided_samples<cpu>(on_cpu, kind);
        const auto b = guided_samples<other>(on_other, kind);
        BOOST_TEST(relative_difference(a, b) <= sample_tolerance, "sampler " << int(kind));
    }
}

int main(int argc, char* argv[]) {
    if (!cuda_available()) {
        std::printf("cuda_parity: no CUDA device (%d found): skipped\n", cuda_device_count());
        return 77;
    }
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);  // init_unit_test: BOOST_TEST_MODULE's
}
