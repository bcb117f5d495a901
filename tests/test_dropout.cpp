#define BOOST_TEST_MODULE dropout
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/dropout.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;
}

static_assert(nn::layer<nn::dropout<float>>);
static_assert(nn::has_train_mode<nn::dropout<double>>);

BOOST_AUTO_TEST_CASE(eval_is_identity) {
    nn::dropout<float> d(0.5, 1);
    d.train(false);
    BOOST_TEST(!d.training());
    auto x = random_tensor<float>({3, 50}, 2);
    auto y = d.forward(x);
    BOOST_TEST(y.to_vector() == x.to_vector());
    auto dx = d.backward(x);
    BOOST_TEST(dx.to_vector() == x.to_vector());
    BOOST_TEST(d.generator.offset == 0u);  // evaluation draws nothing
}

BOOST_AUTO_TEST_CASE(train_keeps_the_mean_and_zeroes_a_fraction_p) {
    const double p = 0.3;
    nn::dropout<double> d(p, 5, 2);
    auto x = tensor<double>::full({200000}, 1.5);
    auto y = d.forward(x);
    std::int64_t zeros = 0;
    double sum = 0;
    bool values_ok = true;
    for (double v : y.span()) {
        zeros += v == 0.0;
        sum += v;
        values_ok = values_ok && (v == 0.0 || std::abs(v - 1.5 / (1 - p)) < 1e-12);
    }
    BOOST_TEST(values_ok);
    // Binomial(200000, 0.3): standard deviation 205, 5 sigma ≈ 0.0052 of the fraction.
    BOOST_TEST(std::abs(double(zeros) / 200000 - p) < 0.0052);
    BOOST_TEST(std::abs(sum / 200000 - 1.5) < 1.5 * 0.0052 / (1 - p));
}

BOOST_AUTO_TEST_CASE(backward_reuses_the_mask) {
    nn::dropout<float> d(0.5, 11);
    auto x = random_tensor<float>({4, 64}, 3);
    auto y = d.forward(x);
    auto ones = tensor<float>::full({4, 64}, 1.0f);
    auto g = d.backward(ones);
    for (std::int64_t i = 0; i < x.numel(); ++i) {
        // dy = 1 gives back the mask; the output is x times the same mask.
        BOOST_REQUIRE(g.data()[i] == 0.0f || g.data()[i] == 2.0f);
        BOOST_REQUIRE(y.data()[i] == x.data()[i] * g.data()[i]);
    }
    // A second forward draws a new mask from the advanced stream.
    auto y2 = d.forward(x);
    BOOST_TEST(y2.to_vector() != y.to_vector());
}

BOOST_AUTO_TEST_CASE(extreme_probabilities) {
    auto x = random_tensor<float>({100}, 4);
    nn::dropout<float> none(0.0);
    BOOST_TEST(none.forward(x).to_vector() == x.to_vector());
    nn::dropout<float> all(1.0);
    const auto dropped = all.forward(x);  // a range-for over a temporary's span would read freed memory
    for (float v : dropped.span()) BOOST_REQUIRE(v == 0.0f);
    BOOST_CHECK_THROW(nn::dropout<float>(1.5), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(sequential_train_switch_reaches_dropout) {
    nn::sequential<nn::identity<float>, nn::dropout<float>> net;
    std::get<1>(net.layers) = nn::dropout<float>(0.5, 1);
    net.train(false);
    BOOST_TEST(!net.get<1>().training());
    auto x = random_tensor<float>({8}, 6);
    BOOST_TEST(net.forward(x).to_vector() == x.to_vector());
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    nn::dropout<T> d(0.4, 21, 3);
    // Every forward of the check must see the same mask: rewind the generator first.
    check_layer_gradients("dropout", d, {3, 4, 5}, {}, [&] { d.generator.offset = 0; });
}
