#define BOOST_TEST_MODULE metrics
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/psnr.hpp"
#include "vediff/metrics/ssim.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

const fixture& fx() {
    static const fixture f = load_fixture("metrics.txt");
    return f;
}

/// Bytes b of the fixture as pixel values b/scale + offset.
template <class T>
tensor<T, cpu> pixels(const std::string& name, double scale, double offset) {
    auto t = fx().get<double>(name);
    auto out = tensor<T, cpu>::empty(t.shape());
    for (std::int64_t i = 0; i < t.numel(); ++i) out.data()[i] = static_cast<T>(t.data()[i] / scale + offset);
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(psnr)

BOOST_AUTO_TEST_CASE(closed_forms) {
    // MSE 0.01 in range 2: 10·log10(4 / 0.01) = 10·log10(400).
    auto x = tensor<double>::zeros({1, 1, 4, 4});
    auto y = tensor<double>::full({1, 1, 4, 4}, 0.1);
    BOOST_TEST(metrics::psnr(x.view(), y.view()) == 10 * std::log10(400.0), tt::tolerance(1e-12));
    BOOST_TEST(metrics::psnr(x.view(), y.view(), 1.0) == 20.0, tt::tolerance(1e-12));
    BOOST_TEST(metrics::psnr_from_mse(1e-4, 2.0) == 10 * std::log10(4e4), tt::tolerance(1e-12));
    // Identical images: MSE 0, PSNR +inf (documented, no cap).
    BOOST_TEST(std::isinf(metrics::psnr(x.view(), x.view())));
    BOOST_TEST(metrics::psnr(x.view(), x.view()) > 0);
    BOOST_CHECK_THROW(metrics::psnr_from_mse(0.1, 0.0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(per_image_then_averaged) {
    // Image 0 has MSE 0.01, image 1 MSE 0.04: the batch value is the mean of the two PSNRs,
    // not the PSNR of the pooled MSE.
    auto x = tensor<float>::zeros({2, 3, 2, 2});
    auto y = tensor<float>::empty({2, 3, 2, 2});
    for (std::int64_t i = 0; i < 12; ++i) {
        y.data()[i] = (i % 2 ? 0.1f : -0.1f);
        y.data()[12 + i] = 0.2f;
    }
    const auto mse = metrics::mse_per_image(x.view(), y.view());
    BOOST_TEST(mse[0] == 0.01, tt::tolerance(1e-6));
    BOOST_TEST(mse[1] == 0.04, tt::tolerance(1e-6));
    const auto per = metrics::psnr_per_image(x.view(), y.view());
    BOOST_TEST(per[0] == 10 * std::log10(400.0), tt::tolerance(1e-6));
    BOOST_TEST(per[1] == 10 * std::log10(100.0), tt::tolerance(1e-6));
    BOOST_TEST(metrics::psnr(x.view(), y.view()) == (per[0] + per[1]) / 2, tt::tolerance(1e-12));
    BOOST_TEST(metrics::psnr(x.view(), y.view()) != 10 * std::log10(4 / 0.025));
}

BOOST_AUTO_TEST_CASE(matches_torch) {
    for (std::string tag : {"gray", "rgb"}) {
        for (auto [range, scale, offset, r] : {std::tuple{"sym", 127.5, -1.0, 2.0}, std::tuple{"unit", 255.0, 0.0, 1.0}}) {
            const auto expected = fx().get<double>(tag + "." + range + ".psnr");
            const auto a = pixels<double>(tag + ".a", scale, offset), b = pixels<double>(tag + ".b", scale, offset);
            const auto got = metrics::psnr_per_image(a.view(), b.view(), r);
            const auto fa = pixels<float>(tag + ".a", scale, offset), fb = pixels<float>(tag + ".b", scale, offset);
            const auto got_f = metrics::psnr_per_image(fa.view(), fb.view(), r);
            for (std::int64_t i = 0; i < expected.numel(); ++i) {
                BOOST_TEST(got[static_cast<std::size_t>(i)] == expected.data()[i], tt::tolerance(1e-12));
                BOOST_TEST(got_f[static_cast<std::size_t>(i)] == expected.data()[i], tt::tolerance(1e-5));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(shape_errors) {
    auto a = tensor<float>::zeros({2, 1, 4, 4});
    auto b = tensor<float>::zeros({2, 1, 4, 5});
    const auto msg = shape_error_message([&] { metrics::psnr(a.view(), b.view()); });
    BOOST_TEST(contains(msg, "(2, 1, 4, 4)"), msg);
    BOOST_TEST(contains(msg, "(2, 1, 4, 5)"), msg);
    auto flat = tensor<float>::zeros({16});
    BOOST_TEST(contains(shape_error_message([&] { metrics::psnr(flat.view(), flat.view()); }), "batch"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ssim)

BOOST_AUTO_TEST_CASE(window_is_the_normalized_gaussian) {
    const auto g = metrics::ssim_gaussian_taps(11, 1.5);
    BOOST_TEST(g.size() == 11u);
    double s = 0;
    for (double v : g) s += v;
    BOOST_TEST(s == 1.0, tt::tolerance(1e-15));
    BOOST_TEST(g[5] / g[6] == std::exp(1 / 4.5), tt::tolerance(1e-14));
    BOOST_TEST(g[0] == g[10]);
}

BOOST_AUTO_TEST_CASE(identical_images_score_one) {
    const auto x = random_tensor<double>({2, 3, 16, 13}, 5);
    BOOST_TEST(metrics::ssim(x.view(), x.view()) == 1.0, tt::tolerance(1e-12));
    const auto xf = random_tensor<float>({1, 1, 11, 11}, 6);
    for (double v : metrics::ssim_per_image(xf.view(), xf.view())) BOOST_TEST(v == 1.0, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(constant_images_closed_form) {
    // No variance: SSIM = (2ab + C1) / (a² + b² + C1) everywhere, C1 = (0.01·R)².
    const double a = 0.3, b = -0.2, c1 = (0.01 * 2) * (0.01 * 2);
    auto x = tensor<double>::full({1, 2, 12, 14}, a);
    auto y = tensor<double>::full({1, 2, 12, 14}, b);
    BOOST_TEST(metrics::ssim(x.view(), y.view()) == (2 * a * b + c1) / (a * a + b * b + c1), tt::tolerance(1e-12));
    // A corner pixel lies in one valid window only, and still changes the score.
    y.at(0, 0, 0, 0) = 1.0;
    y.at(0, 1, 11, 13) = 1.0;
    BOOST_TEST(metrics::ssim(x.view(), y.view()) != (2 * a * b + c1) / (a * a + b * b + c1));
}

BOOST_AUTO_TEST_CASE(matches_torch) {
    for (std::string tag : {"gray", "rgb"}) {
        for (auto [range, scale, offset, r] : {std::tuple{"sym", 127.5, -1.0, 2.0}, std::tuple{"unit", 255.0, 0.0, 1.0}}) {
            BOOST_TEST_CONTEXT(tag << " " << range) {
                const auto expected = fx().get<double>(tag + "." + range + ".ssim");
                metrics::ssim_options opt;
                opt.data_range = r;
                const auto a = pixels<double>(tag + ".a", scale, offset), b = pixels<double>(tag + ".b", scale, offset);
                const auto got = metrics::ssim_per_image(a.view(), b.view(), opt);
                const auto fa = pixels<float>(tag + ".a", scale, offset), fb = pixels<float>(tag + ".b", scale, offset);
                const auto got_f = metrics::ssim_per_image(fa.view(), fb.view(), opt);
                double mean = 0;
                for (std::int64_t i = 0; i < expected.numel(); ++i) {
                    BOOST_TEST(got[static_cast<std::size_t>(i)] == expected.data()[i], tt::tolerance(1e-10));
                    BOOST_TEST(got_f[static_cast<std::size_t>(i)] == expected.data()[i], tt::tolerance(1e-5));
                    mean += expected.data()[i] / static_cast<double>(expected.numel());
                }
                BOOST_TEST(metrics::ssim(a.view(), b.view(), opt) == mean, tt::tolerance(1e-10));
                // Symmetric in its arguments.
                BOOST_TEST(metrics::ssim(b.view(), a.view(), opt) == mean, tt::tolerance(1e-10));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(shape_errors) {
    auto small = tensor<float>::zeros({1, 1, 10, 20});
    const auto msg = shape_error_message([&] { metrics::ssim(small.view(), small.view()); });
    BOOST_TEST(contains(msg, "(1, 1, 10, 20)"), msg);
    BOOST_TEST(contains(msg, "11×11"), msg);
    auto a = tensor<float>::zeros({1, 1, 12, 12});
    auto b = tensor<float>::zeros({1, 3, 12, 12});
    BOOST_TEST(contains(shape_error_message([&] { metrics::ssim(a.view(), b.view()); }), "(1, 3, 12, 12)"));
    auto rank3 = tensor<float>::zeros({1, 12, 12});
    BOOST_TEST(contains(shape_error_message([&] { metrics::ssim(rank3.view(), rank3.view()); }), "rank 4"));
    metrics::ssim_options even;
    even.window = 10;
    BOOST_CHECK_THROW(metrics::ssim(a.view(), a.view(), even), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
