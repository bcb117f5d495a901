#define BOOST_TEST_MODULE robustness
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/robustness.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

auto identity_decoder() {
    return [](const tensor_view<double>& z) { return tensor<double>::copy_of(z); };
}

/// A decoder that shows channel c of the latent as a one-channel image.
auto channel_decoder(std::int64_t c) {
    return [c](const tensor_view<double>& z) {
        auto x = tensor<double>::empty({z.dim(0), 1, z.dim(2), z.dim(3)});
        for (std::int64_t n = 0; n < z.dim(0); ++n) ops::copy(x[n][0], z[n][c]);
        return x;
    };
}

double expected_psnr(double mse) { return 10 * std::log10(4.0 / mse); }

} // namespace

BOOST_AUTO_TEST_CASE(identity_decoder_has_the_psnr_of_the_noise) {
    // decode = identity, std 1: the MSE of an image is s²·mean(ε²) ≈ s², PSNR ≈ 10·log10(4/s²).
    // Per image the PSNR scatters by ≈ 0.38 dB (256 elements); the mean of 64 by ≈ 0.05 dB.
    const auto z = random_tensor<double>({64, 4, 8, 8}, 1);
    const std::vector<double> std_c(4, 1.0);
    philox_generator gen{.seed = 2};
    const auto psnr = metrics::sampling_robustness(identity_decoder(), z.view(), std_c, gen);
    const std::vector<double> scales = metrics::robustness_options{}.scales;
    BOOST_REQUIRE_EQUAL(psnr.size(), scales.size());
    for (std::size_t k = 0; k < scales.size(); ++k)
        BOOST_TEST(std::abs(psnr[k] - expected_psnr(scales[k] * scales[k])) < 0.2, "s = " << scales[k] << ": " << psnr[k] << " dB");
    // One ε serves every scale, so with a linear decoder the curve is exactly −20·log10(s) + const.
    for (std::size_t k = 1; k < scales.size(); ++k)
        BOOST_TEST(psnr[0] - psnr[k] == 20 * std::log10(scales[k] / scales[0]), tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(noise_follows_the_channel_std) {
    // Channel 1 has std 2, channel 0 std 0.5: a decoder showing only channel 1 sees MSE ≈ 4·s²,
    // one showing channel 0 ≈ s²/4.
    const auto z = random_tensor<double>({48, 3, 8, 8}, 3);
    const std::vector<double> std_c{0.5, 2.0, 1.0};
    metrics::robustness_options opt;
    opt.scales = {0.1, 0.3};
    for (auto [c, variance] : {std::pair{0, 0.25}, std::pair{1, 4.0}, std::pair{2, 1.0}}) {
        philox_generator gen{.seed = 4};
        const auto psnr = metrics::sampling_robustness(channel_decoder(c), z.view(), std_c, gen, opt);
        for (std::size_t k = 0; k < opt.scales.size(); ++k)
            BOOST_TEST(std::abs(psnr[k] - expected_psnr(variance * opt.scales[k] * opt.scales[k])) < 0.3,
                       "channel " << c << ", s = " << opt.scales[k] << ": " << psnr[k] << " dB");
    }
}

BOOST_AUTO_TEST_CASE(scale_zero_is_infinite) {
    const auto z = random_tensor<double>({5, 2, 4, 4}, 5);
    philox_generator gen{.seed = 6};
    metrics::robustness_options opt;
    opt.scales = {0.0, 0.1};
    const auto psnr = metrics::sampling_robustness(identity_decoder(), z.view(), std::vector<double>{1.0, 1.0}, gen, opt);
    BOOST_TEST(std::isinf(psnr[0]));
    BOOST_TEST(psnr[0] > 0);
    BOOST_TEST(std::isfinite(psnr[1]));
}

BOOST_AUTO_TEST_CASE(same_for_any_batch_size) {
    // 3·3·3 = 27 elements per latent: one fill per batch would split 4-word Philox blocks between
    // latents and shift every later latent's noise; the draws must belong to the latent.
    const auto z = random_tensor<float>({11, 3, 3, 3}, 7);
    const std::vector<double> std_c{1.0, 0.5, 2.0};
    auto decode = [](const tensor_view<float>& latents) {
        auto x = ops::scale(latents, 0.5f);
        for (auto& v : x.span()) v = std::tanh(v);  // a nonlinear decoder
        return x;
    };
    std::vector<std::vector<double>> results;
    std::vector<std::uint64_t> offsets;
    for (std::int64_t batch : {1, 4, 11, 64}) {
        philox_generator gen{.seed = 8, .stream = 1};
        metrics::robustness_options opt;
        opt.batch_size = batch;
        results.push_back(metrics::sampling_robustness(decode, z.view(), std_c, gen, opt));
        offsets.push_back(gen.offset);
    }
    for (std::size_t i = 1; i < results.size(); ++i) {
        BOOST_TEST(results[i] == results[0], tt::per_element());
        BOOST_TEST(offsets[i] == offsets[0]);
    }
    BOOST_TEST(offsets[0] > 0u);
    // A different seed gives different noise, so the equalities above are not vacuous.
    philox_generator other{.seed = 9, .stream = 1};
    const bool differs = metrics::sampling_robustness(decode, z.view(), std_c, other) != results[0];
    BOOST_TEST(differs);
}

BOOST_AUTO_TEST_CASE(errors) {
    const auto z = random_tensor<double>({2, 3, 4, 4}, 10);
    philox_generator gen;
    auto msg = shape_error_message([&] { metrics::sampling_robustness(identity_decoder(), z.view(), std::vector<double>{1, 1}, gen); });
    BOOST_TEST(contains(msg, "2 channel stds"), msg);
    BOOST_TEST(contains(msg, "(2, 3, 4, 4)"), msg);
    const auto flat = random_tensor<double>({2, 48}, 11);
    BOOST_TEST(contains(shape_error_message([&] { metrics::sampling_robustness(identity_decoder(), flat.view(), std::vector<double>{1}, gen); }),
                        "(2, 48)"));
    metrics::robustness_options negative;
    negative.scales = {0.1, -0.2};
    BOOST_CHECK_THROW(metrics::sampling_robustness(identity_decoder(), z.view(), std::vector<double>{1, 1, 1}, gen, negative),
                      std::invalid_argument);
    BOOST_CHECK_THROW(metrics::sampling_robustness(identity_decoder(), z.view(), std::vector<double>{1, -1, 1}, gen), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(per_sample_draws_reserve_disjoint_blocks) {
    // 3 samples × 2 draws of 5 elements: 2 blocks per draw, 12 blocks in all, in order (sample, draw).
    philox_generator gen{.seed = 12, .stream = 3, .offset = 100};
    const metrics::per_sample_draws draws(gen, 3, 5, 2);
    BOOST_TEST(gen.offset == 112u);
    for (std::int64_t i = 0; i < 3; ++i)
        for (std::int64_t d = 0; d < 2; ++d) {
            const auto g = draws(i, d);
            BOOST_TEST(g.seed == 12u);
            BOOST_TEST(g.stream == 3u);
            BOOST_TEST(g.offset == 100u + 2u * static_cast<std::uint64_t>(2 * i + d));
        }
    // A fill of one draw stays inside its own blocks.
    auto g = draws(1, 0);
    auto t = tensor<double>::empty({5});
    ops::fill_normal(t.view(), g);
    BOOST_TEST(g.offset == draws(1, 1).offset);
    BOOST_CHECK_THROW(draws(3, 0), std::out_of_range);
    BOOST_CHECK_THROW(draws(0, 2), std::out_of_range);
}
