#define BOOST_TEST_MODULE softmax
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <tuple>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/attention.hpp"
#include "vediff/ops/softmax.hpp"

using namespace vediff;
using namespace vediff::testing;
using testing::check_close;
using testing::random_tensor;

namespace {

using real_types = std::tuple<double, float>;

static_assert(nn::layer<nn::softmax<float>>);
static_assert(nn::layer<nn::softmax<double>>);

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

} // namespace

BOOST_AUTO_TEST_SUITE(values)

BOOST_AUTO_TEST_CASE_TEMPLATE(against_torch, T, real_types) {
    const auto f = testing::load_fixture("softmax.txt");
    const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;
    for (const std::string name : {"small", "large"}) {
        auto x = f.get<T>(name + "_x"), dy = f.get<T>(name + "_dy");
        auto y = ops::softmax(x.view());
        check_close(y, f.get(name + "_y"), tol, tol, name + " y");
        auto dx = ops::softmax_backward(dy.view(), y.view());
        check_close(dx, f.get(name + "_dx"), tol, tol, name + " dx");
    }
}

BOOST_AUTO_TEST_CASE(by_hand) {
    // exp of [0, ln 2, ln 3] is [1, 2, 3]: softmax [1/6, 2/6, 3/6]; shifting a row changes nothing.
    auto x = tensor<double>::from_host({2, 3}, {0, std::log(2.0), std::log(3.0), 100, 100 + std::log(2.0), 100 + std::log(3.0)});
    auto y = ops::softmax(x.view());
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j) BOOST_TEST(y.at(i, j) == (j + 1) / 6.0, boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(rows_sum_to_one_and_stay_finite, T, real_types) {
    // Logits of ±1000 overflow a naive exp() in both precisions.
    auto x = random_tensor<T>({5, 3, 17}, 3, 0, 1000.0);
    auto y = ops::softmax(x.view());
    for (std::int64_t r = 0; r < 15; ++r) {
        double s = 0;
        for (std::int64_t j = 0; j < 17; ++j) {
            const double v = double(y.data()[r * 17 + j]);
            BOOST_REQUIRE(std::isfinite(v));
            BOOST_TEST(v >= 0.0);
            s += v;
        }
        BOOST_TEST(std::abs(s - 1.0) < (std::is_same_v<T, double> ? 1e-14 : 1e-6));
    }
}

BOOST_AUTO_TEST_CASE(gradient_of_a_constant_shift_is_zero) {
    // Softmax is invariant to adding c to a row, so dx sums to zero over each row.
    auto x = random_tensor<double>({4, 9}, 5);
    auto dy = random_tensor<double>({4, 9}, 6);
    auto y = ops::softmax(x.view());
    auto dx = ops::softmax_backward(dy.view(), y.view());
    for (std::int64_t i = 0; i < 4; ++i) {
        double s = 0;
        for (std::int64_t j = 0; j < 9; ++j) s += dx.at(i, j);
        BOOST_TEST(std::abs(s) < 1e-15);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(softmax_op, T, real_types) {
    auto x = random_tensor<T>({3, 4, 11}, 7);
    testing::check_op_gradients<T>(
        "softmax", [](const views<T>& in) { return ops::softmax(in[0]); },
        [](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto y = ops::softmax(in[0]);
            std::vector<tensor<T>> g;
            g.push_back(ops::softmax_backward(dy, y.view()));
            return g;
        },
        {x});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(softmax_layer, T, real_types) {
    nn::softmax<T> s;
    testing::check_layer_gradients("softmax", s, {6, 13});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_CASE(shape_errors) {
    auto y = tensor<float>::zeros({2, 3});
    auto dy = tensor<float>::zeros({3, 2});
    const auto msg = shape_error_message([&] { (void)ops::softmax_backward(dy.view(), y.view()); });
    BOOST_TEST(contains(msg, "softmax_backward"));
    BOOST_TEST(contains(msg, "(3, 2)"));
    BOOST_TEST(contains(msg, "(2, 3)"));
    auto empty_rows = tensor<float>::zeros({4, 0});
    const auto emsg = shape_error_message([&] { (void)ops::softmax(empty_rows.view()); });
    BOOST_TEST(contains(emsg, "softmax"));
    BOOST_TEST(contains(emsg, "(4, 0)"));
}
