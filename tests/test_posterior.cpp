#define BOOST_TEST_MODULE posterior
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/models/gaussian_posterior.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/random.hpp"

using namespace vediff;
using namespace vediff::testing;
using boost::test_tools::tolerance;

namespace {

template <class T>
using posterior = models::gaussian_posterior<T>;

/// moments (B, 2C, h, w) = [mean | logvar] along channels.
template <class T>
tensor<T, cpu> join(const tensor_view<T, cpu>& mean, const tensor_view<T, cpu>& logvar) {
    return ops::concat<T, cpu>({mean, logvar}, 1);
}

/// z = sample(moments) with a generator rewound to the same state on every call.
template <class T>
void check_sample_gradients(const std::string& name) {
    const philox_generator start{.seed = 3, .stream = 1, .offset = 5};
    auto mean = random_tensor<T>({2, 3, 2, 2}, 1);
    auto logvar = random_tensor<T>({2, 3, 2, 2}, 2, 0, 0.7);
    check_op_gradients<T>(
        name + " w.r.t. mean and logvar",
        [&](const std::vector<tensor_view<T, cpu>>& in) {
            auto gen = start;
            return posterior<T>::from_moments(join<T>(in[0], in[1])).sample(gen);
        },
        [&](const tensor_view<T, cpu>& dz, const std::vector<tensor_view<T, cpu>>& in) {
            auto gen = start;
            auto post = posterior<T>::from_moments(join<T>(in[0], in[1]));
            post.sample(gen);
            std::vector<tensor<T, cpu>> g;
            g.push_back(tensor<T, cpu>::zeros(in[0].shape()));
            g.push_back(tensor<T, cpu>::zeros(in[1].shape()));
            post.sample_backward(dz, g[0], g[1]);
            return g;
        },
        {mean, logvar});

    // The whole path moments → (z, mean, logvar), as the training step uses it: the loss's own
    // gradients with respect to mean and logvar are already in dmean and dlogvar when
    // sample_backward adds to them; a clamped log-variance (−35, 22) gets no gradient. (Above the
    // upper bound σ = e^10 leaves float too few digits for the finite differences of z.)
    auto moments = join<T>(mean, logvar);
    moments.at(0, 3, 0, 0) = T(-35);
    if constexpr (std::is_same_v<T, double>) moments.at(1, 5, 1, 1) = T(22);
    check_op_gradients<T>(
        name + " w.r.t. moments",
        [&](const std::vector<tensor_view<T, cpu>>& in) {
            auto gen = start;
            auto post = posterior<T>::from_moments(in[0]);
            auto z = post.sample(gen);
            return ops::concat<T, cpu>({z, post.mean, post.logvar}, 1);
        },
        [&](const tensor_view<T, cpu>& dout, const std::vector<tensor_view<T, cpu>>& in) {
            auto gen = start;
            auto post = posterior<T>::from_moments(in[0]);
            post.sample(gen);
            auto parts = ops::split(dout, {3, 3, 3}, 1);  // dz, dmean (loss), dlogvar (loss)
            post.sample_backward(parts[0], parts[1], parts[2]);
            std::vector<tensor<T, cpu>> g;
            g.push_back(post.moments_backward(parts[1], parts[2]));
            return g;
        },
        {moments});
}

} // namespace

BOOST_AUTO_TEST_CASE(from_moments_splits_channels_and_clamps_the_log_variance) {
    // (B 2, 2C 4, 1, 2): per image, channels 0-1 are the mean, 2-3 the log-variance.
    auto moments = tensor<double>::from_host({2, 4, 1, 2}, {1, 2, 3, 4, -40, -30, 0.5, 19,  //
                                                            5, 6, 7, 8, 20, 25, -29.5, std::numeric_limits<double>::quiet_NaN()});
    auto post = posterior<double>::from_moments(moments);
    BOOST_TEST(post.mean.shape() == (tensor_shape{2, 2, 1, 2}));
    BOOST_TEST(post.mean.to_vector() == (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}), boost::test_tools::per_element());
    const auto lv = post.logvar.to_vector();
    const std::vector<double> expected{-30, -30, 0.5, 19, 20, 20, -29.5};
    for (std::size_t i = 0; i < expected.size(); ++i) BOOST_TEST(lv[i] == expected[i]);
    BOOST_TEST(std::isnan(lv[7]));  // NaN stays NaN, as in torch.clamp, so a diverged run stops loudly
}

BOOST_AUTO_TEST_CASE(mode_is_a_copy_of_the_mean) {
    auto post = posterior<float>::from_moments(random_tensor<float>({2, 6, 3, 3}, 4));
    auto m = post.mode();
    BOOST_TEST(m.data() != post.mean.data());
    BOOST_TEST(m.to_vector() == post.mean.to_vector(), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(sample_is_mean_plus_sigma_times_philox_noise) {
    auto post = posterior<double>::from_moments(random_tensor<double>({2, 4, 3, 2}, 5));
    philox_generator gen{.seed = 11, .stream = 2, .offset = 7};
    auto replay = gen;
    auto z = post.sample(gen);
    auto eps = ops::normal<double>(post.mean.shape(), replay);
    BOOST_TEST(gen.offset == replay.offset);  // the generator advanced by the draws
    BOOST_TEST(post.noise().to_vector() == eps.to_vector(), boost::test_tools::per_element());
    for (std::int64_t i = 0; i < z.numel(); ++i)
        BOOST_TEST(z.data()[i] == post.mean.data()[i] + std::exp(post.logvar.data()[i] / 2) * eps.data()[i], tolerance(1e-14));

    // The same seed gives the same z; the next draw of the stream another one.
    philox_generator again{.seed = 11, .stream = 2, .offset = 7};
    BOOST_TEST(post.sample(again).to_vector() == z.to_vector(), boost::test_tools::per_element());
    BOOST_TEST(post.sample(again).to_vector() != z.to_vector());
}

BOOST_AUTO_TEST_CASE(samples_have_the_posterior_mean_and_standard_deviation) {
    // mean 0.5, logvar log 0.09 (σ 0.3) everywhere; 40000 draws.
    const std::int64_t n = 40000;
    auto moments = tensor<float>::empty({1, 2, 200, 200});
    ops::fill(moments[0][0], 0.5f);
    ops::fill(moments[0][1], float(std::log(0.09)));
    auto post = posterior<float>::from_moments(moments);
    philox_generator gen{.seed = 1};
    auto z = post.sample(gen);
    double s = 0, s2 = 0;
    for (auto v : z.span()) {
        s += v;
        s2 += double(v) * v;
    }
    const double mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
    BOOST_TEST(std::abs(mean - 0.5) < 4 * 0.3 / std::sqrt(double(n)));
    BOOST_TEST(std::abs(sd - 0.3) < 0.006);
}

BOOST_AUTO_TEST_CASE(sample_gradients_double_and_float) {
    check_sample_gradients<double>("sample<double>");
    check_sample_gradients<float>("sample<float>");
}

BOOST_AUTO_TEST_CASE(sample_backward_adds_and_uses_the_noise) {
    // dmean += dz; dlogvar += dz·ε·σ/2, against the same formulas by hand.
    auto post = posterior<double>::from_moments(random_tensor<double>({1, 4, 2, 2}, 8));
    philox_generator gen{.seed = 2};
    post.sample(gen);
    auto dz = random_tensor<double>({1, 2, 2, 2}, 9);
    auto dmean = tensor<double>::full({1, 2, 2, 2}, 1.0);
    auto dlogvar = tensor<double>::full({1, 2, 2, 2}, -2.0);
    post.sample_backward(dz, dmean, dlogvar);
    for (std::int64_t i = 0; i < 8; ++i) {
        BOOST_TEST(dmean.data()[i] == 1.0 + dz.data()[i], tolerance(1e-15));
        const double sigma = std::exp(post.logvar.data()[i] / 2);
        BOOST_TEST(dlogvar.data()[i] == -2.0 + dz.data()[i] * post.noise().data()[i] * sigma / 2, tolerance(1e-14));
    }
}

BOOST_AUTO_TEST_CASE(moments_backward_masks_the_clamped_log_variance) {
    // Raw log-variances −35 and 21 are clamped: no gradient. At exactly −30 and 20 the gradient
    // passes, as torch.clamp's backward does (its mask is lo ≤ x ≤ hi).
    auto moments = tensor<double>::from_host({1, 2, 1, 5}, {0, 0, 0, 0, 0, -35, -30, 0, 20, 21});
    auto post = posterior<double>::from_moments(moments);
    auto dmean = tensor<double>::from_host({1, 1, 1, 5}, {1, 2, 3, 4, 5});
    auto dlogvar = tensor<double>::from_host({1, 1, 1, 5}, {6, 7, 8, 9, 10});
    auto dmoments = post.moments_backward(dmean, dlogvar);
    BOOST_TEST(dmoments.shape() == moments.shape());
    BOOST_TEST(dmoments.to_vector() == (std::vector<double>{1, 2, 3, 4, 5, 0, 7, 8, 9, 0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(errors_name_the_op_and_shapes) {
    auto msg = shape_error_message([] { posterior<float>::from_moments(tensor<float>::zeros({1, 3, 2, 2})); });
    BOOST_TEST((contains(msg, "split_gaussian_moments") && contains(msg, "(1, 3, 2, 2)")), msg);
    auto post = posterior<float>::from_moments(tensor<float>::zeros({1, 4, 2, 2}));
    auto d = tensor<float>::zeros({1, 2, 2, 2});
    auto wrong = tensor<float>::zeros({1, 2, 2, 3});
    msg = error_message<std::logic_error>([&] { post.sample_backward(d, d, d); });
    BOOST_TEST(contains(msg, "sample() has not been called"), msg);
    philox_generator gen;
    post.sample(gen);
    msg = shape_error_message([&] { post.sample_backward(wrong, d, d); });
    BOOST_TEST((contains(msg, "gaussian_sample_backward") && contains(msg, "(1, 2, 2, 3)") && contains(msg, "(1, 2, 2, 2)")), msg);
    msg = shape_error_message([&] { post.moments_backward(d, wrong); });
    BOOST_TEST((contains(msg, "split_gaussian_moments_backward") && contains(msg, "(1, 2, 2, 3)")), msg);
}
