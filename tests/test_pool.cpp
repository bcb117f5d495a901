// The ops of the FID Inception: max and average pooling (padding excluded or counted), bilinear
// resizing with align_corners=False, the evaluation-mode batch-norm fold, ReLU (with its gradient
// check), each against PyTorch (tests/fixtures/make_inception.py → inception_ops.txt). The pools
// and the resize are forward only (the network is frozen), so they have no gradient checks.
#define BOOST_TEST_MODULE pool
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/models/inception_blocks.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/batch_norm.hpp"
#include "vediff/ops/pool.hpp"
#include "vediff/ops/resize.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

using real_types = std::tuple<double, float>;

template <class T>
double tolerance() {
    return std::is_same_v<T, double> ? 1e-12 : 1e-6;
}

} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(pools_match_pytorch, T, real_types) {
    const auto f = load_fixture("inception_ops.txt");
    const auto x = f.get<T>("x");
    const double tol = tolerance<T>();
    check_close(ops::avg_pool2d(x.view(), {3, 1, 1}, false), f.get("avg_s1_p1_exclude"), tol, tol, "avg 3/1/1 padding excluded");
    check_close(ops::avg_pool2d(x.view(), {3, 1, 1}, true), f.get("avg_s1_p1_include"), tol, tol, "avg 3/1/1 padding counted");
    check_close(ops::avg_pool2d(x.view(), {3, 2, 1}, false), f.get("avg_s2_p1_exclude"), tol, tol, "avg 3/2/1 padding excluded");
    check_close(ops::max_pool2d(x.view(), {3, 1, 1}), f.get("max_s1_p1"), tol, tol, "max 3/1/1");
    check_close(ops::max_pool2d(x.view(), {3, 2, 0}), f.get("max_s2"), tol, tol, "max 3/2/0");
}

BOOST_AUTO_TEST_CASE(average_pool_padding_rule_changes_the_border) {
    // The two divisors differ exactly on the border: a corner window holds 4 of 9 elements.
    auto x = tensor<double, cpu>::zeros({1, 1, 3, 3});
    ops::fill(x.view(), 1.0);
    const auto excluded = ops::avg_pool2d(x.view(), {3, 1, 1}, false).to_vector();
    const auto included = ops::avg_pool2d(x.view(), {3, 1, 1}, true).to_vector();
    BOOST_TEST(excluded[0] == 1.0);
    BOOST_TEST(included[0] == 4.0 / 9.0);
    BOOST_TEST(included[4] == 1.0);  // the centre window lies inside
}

BOOST_AUTO_TEST_CASE(max_pool_padding_never_wins) {
    auto x = tensor<float, cpu>::zeros({1, 1, 2, 2});
    ops::fill(x.view(), -5.0f);
    for (float v : ops::max_pool2d(x.view(), {3, 1, 1}).to_vector()) BOOST_TEST(v == -5.0f);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(bilinear_resize_matches_pytorch, T, real_types) {
    const auto f = load_fixture("inception_ops.txt");
    const auto x = f.get<T>("x");
    const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-5;
    check_close(ops::resize_bilinear(x.view(), 11, 20), f.get("resize_up"), tol, tol, "resize to 11×20");
    check_close(ops::resize_bilinear(x.view(), 4, 5), f.get("resize_down"), tol, tol, "resize to 4×5");
    const auto same = ops::resize_bilinear(x.view(), 7, 9);  // same size: the identity
    BOOST_TEST(same.to_vector() == x.to_vector(), "resizing to its own size is the identity");
}

BOOST_AUTO_TEST_CASE(basic_conv2d_folds_the_norm_as_pytorch_evaluates_it) {
    const auto f = load_fixture("inception_ops.txt");
    models::basic_conv2d<double> conv(models::conv_same(3, 4, 1, 3));
    ops::copy(conv.conv_weight.value.view(), f.get("conv_weight").view());
    ops::copy(conv.bn_weight.value.view(), f.get("bn_weight").view());
    ops::copy(conv.bn_bias.value.view(), f.get("bn_bias").view());
    ops::copy(conv.bn_running_mean.value.view(), f.get("bn_running_mean").view());
    ops::copy(conv.bn_running_var.value.view(), f.get("bn_running_var").view());
    const auto x = f.get("x");
    check_close(conv.forward(x.view()), f.get("basic_conv"), 1e-12, 1e-12, "BasicConv2d (1×3, padding (0, 1))");
}

BOOST_AUTO_TEST_CASE(batch_norm_fold_rejects_a_bad_variance) {
    auto ones = tensor<float, cpu>::zeros({3});
    ops::fill(ones.view(), 1.0f);
    auto var = tensor<float, cpu>::copy_of(ones.view());
    var.data()[1] = -2.0f;
    const auto message = error_message<std::invalid_argument>(
        [&] { ops::batch_norm_fold(ones.view(), ones.view(), ones.view(), var.view(), 1e-3); });
    BOOST_TEST(contains(message, "channel 1 of 3"), message);
    var.data()[1] = std::numeric_limits<float>::quiet_NaN();
    BOOST_TEST(contains(error_message<std::invalid_argument>(
                            [&] { ops::batch_norm_fold(ones.view(), ones.view(), ones.view(), var.view(), 1e-3); }),
                        "channel 1"));
}

BOOST_AUTO_TEST_CASE(relu_forward_in_place_and_gradient) {
    auto x = random_tensor<double>({2, 3, 4, 5}, 11);
    for (std::int64_t i = 0; i < x.numel(); ++i)  // keep the central differences away from the kink
        if (std::abs(x.data()[i]) < 0.05) x.data()[i] = 0.3;
    const auto y = ops::relu(x.view());
    for (std::int64_t i = 0; i < x.numel(); ++i) BOOST_TEST(y.data()[i] == std::max(x.data()[i], 0.0));
    auto z = tensor<double, cpu>::copy_of(x.view());
    ops::relu_inplace(z.view());
    BOOST_TEST(z.to_vector() == y.to_vector(), "relu in place equals relu");
    check_op_gradients<double>(
        "relu", [](const op_inputs<double>& in) { return ops::relu(in[0]); },
        [](const tensor_view<double, cpu>& dy, const op_inputs<double>& in) {
            return single_gradient(ops::relu_backward(dy, in[0]));
        },
        {x.view()});
}

BOOST_AUTO_TEST_CASE(bad_shapes_name_the_op) {
    const auto x = tensor<float, cpu>::zeros({1, 2, 2, 2});
    BOOST_TEST(contains(shape_error_message([&] { ops::max_pool2d(x.view(), {5, 1, 1}); }), "max_pool2d: a 5×5 window"));
    BOOST_TEST(contains(shape_error_message([&] { ops::avg_pool2d(x.view(), {3, 0, 1}, false); }), "avg_pool2d: kernel 3 and stride 0"));
    BOOST_TEST(contains(shape_error_message([&] { ops::resize_bilinear(x.view(), 0, 3); }), "resize_bilinear: cannot resize"));
    const auto flat = tensor<float, cpu>::zeros({2, 2});
    BOOST_TEST(contains(shape_error_message([&] { ops::max_pool2d(flat.view(), {1, 1, 0}); }), "rank 4"));
}
