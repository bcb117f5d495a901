#define BOOST_TEST_MODULE norm
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/batch_norm.hpp"
#include "vediff/nn/norm.hpp"
#include "vediff/ops/norm.hpp"

using namespace vediff;
using namespace vediff::testing;
using testing::check_close;
using testing::random_tensor;

namespace {

using real_types = std::tuple<double, float>;

static_assert(nn::layer<nn::group_norm<float>>);
static_assert(nn::layer<nn::group_norm<double>>);
static_assert(nn::layer<nn::group_norm_silu<float>>);
static_assert(nn::layer<nn::group_norm_silu<double>>);
static_assert(nn::layer<nn::layer_norm<float>>);
static_assert(nn::layer<nn::rms_norm<double>>);

template <class T>
double tolerance() {
    return std::is_same_v<T, double> ? 1e-10 : 2e-5;
}

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

/// Moments over `count` contiguous values.
std::pair<double, double> mean_and_variance(const double* x, std::int64_t count) {
    double s = 0, ss = 0;
    for (std::int64_t i = 0; i < count; ++i) s += x[i];
    const double m = s / double(count);
    for (std::int64_t i = 0; i < count; ++i) ss += (x[i] - m) * (x[i] - m);
    return {m, ss / double(count)};
}

} // namespace

BOOST_AUTO_TEST_SUITE(against_torch)

BOOST_AUTO_TEST_CASE_TEMPLATE(group_norm_with_affine, T, real_types) {
    const auto f = testing::load_fixture("norm.txt");
    for (auto [name, groups, eps] : {std::tuple{"gn_affine", 3, 1e-6}, std::tuple{"gn_flat", 2, 1e-6}}) {
        BOOST_TEST_CONTEXT(name) {
            const std::string n = name;
            auto x = f.get<T>(n + "_x"), w = f.get<T>(n + "_weight"), b = f.get<T>(n + "_bias"), dy = f.get<T>(n + "_dy");
            auto r = ops::group_norm(x.view(), groups, w.view(), b.view(), eps);
            check_close(r.y, f.get(n + "_y"), tolerance<T>(), tolerance<T>(), n + " y");
            auto dw = tensor<T>::zeros(w.shape()), db = tensor<T>::zeros(b.shape());
            auto dx = ops::group_norm_backward(dy.view(), x.view(), r.mean.view(), r.rstd.view(), groups, w.view(), dw.view(), db.view());
            check_close(dx, f.get(n + "_dx"), tolerance<T>(), tolerance<T>(), n + " dx");
            check_close(dw, f.get(n + "_dweight"), tolerance<T>(), tolerance<T>(), n + " dweight");
            check_close(db, f.get(n + "_dbias"), tolerance<T>(), tolerance<T>(), n + " dbias");
        }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(group_norm_without_affine, T, real_types) {
    const auto f = testing::load_fixture("norm.txt");
    auto x = f.get<T>("gn_plain_x"), dy = f.get<T>("gn_plain_dy");
    auto r = ops::group_norm(x.view(), 4, 1e-5);
    check_close(r.y, f.get("gn_plain_y"), tolerance<T>(), tolerance<T>(), "gn_plain y");
    auto dx = ops::group_norm_backward(dy.view(), x.view(), r.mean.view(), r.rstd.view(), 4);
    check_close(dx, f.get("gn_plain_dx"), tolerance<T>(), tolerance<T>(), "gn_plain dx");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(layer_norm_with_and_without_affine, T, real_types) {
    const auto f = testing::load_fixture("norm.txt");
    {
        auto x = f.get<T>("ln_affine_x"), w = f.get<T>("ln_affine_weight"), b = f.get<T>("ln_affine_bias"),
             dy = f.get<T>("ln_affine_dy");
        auto r = ops::layer_norm(x.view(), w.view(), b.view(), 1e-6);
        check_close(r.y, f.get("ln_affine_y"), tolerance<T>(), tolerance<T>(), "ln_affine y");
        auto dw = tensor<T>::zeros(w.shape()), db = tensor<T>::zeros(b.shape());
        auto dx = ops::layer_norm_backward(dy.view(), x.view(), r.mean.view(), r.rstd.view(), w.view(), dw.view(), db.view());
        check_close(dx, f.get("ln_affine_dx"), tolerance<T>(), tolerance<T>(), "ln_affine dx");
        check_close(dw, f.get("ln_affine_dweight"), tolerance<T>(), tolerance<T>(), "ln_affine dweight");
        check_close(db, f.get("ln_affine_dbias"), tolerance<T>(), tolerance<T>(), "ln_affine dbias");
    }
    {
        auto x = f.get<T>("ln_plain_x"), dy = f.get<T>("ln_plain_dy");
        auto r = ops::layer_norm(x.view(), 1e-6);
        check_close(r.y, f.get("ln_plain_y"), tolerance<T>(), tolerance<T>(), "ln_plain y");
        auto dx = ops::layer_norm_backward(dy.view(), x.view(), r.mean.view(), r.rstd.view());
        check_close(dx, f.get("ln_plain_dx"), tolerance<T>(), tolerance<T>(), "ln_plain dx");
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(rms_norm_matches_lightningdit_formula, T, real_types) {
    const auto f = testing::load_fixture("norm.txt");
    auto x = f.get<T>("rms_x"), w = f.get<T>("rms_weight"), dy = f.get<T>("rms_dy");
    auto r = ops::rms_norm(x.view(), w.view(), 1e-6);
    check_close(r.y, f.get("rms_y"), tolerance<T>(), tolerance<T>(), "rms y");
    auto dw = tensor<T>::zeros(w.shape());
    auto dx = ops::rms_norm_backward(dy.view(), x.view(), r.rstd.view(), w.view(), dw.view());
    check_close(dx, f.get("rms_dx"), tolerance<T>(), tolerance<T>(), "rms dx");
    check_close(dw, f.get("rms_dweight"), tolerance<T>(), tolerance<T>(), "rms dweight");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(closed_forms)

BOOST_AUTO_TEST_CASE(layer_norm_by_hand) {
    // [1, 2, 3, 4]: mean 2.5, biased variance 1.25.
    auto x = tensor<double>::from_host({1, 4}, {1, 2, 3, 4});
    auto r = ops::layer_norm(x.view(), 1e-6);
    const double s = 1.0 / std::sqrt(1.25 + 1e-6);
    const double expected[] = {-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s};
    for (int j = 0; j < 4; ++j) BOOST_TEST(r.y.at(0, j) == expected[j], boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r.mean.at(0) == 2.5, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(r.rstd.at(0) == s, boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(rms_norm_by_hand) {
    // [3, 4]: mean(x²) = 12.5; weight [2, -1].
    auto x = tensor<double>::from_host({1, 2}, {3, 4});
    auto w = tensor<double>::from_host({2}, {2, -1});
    auto r = ops::rms_norm(x.view(), w.view(), 0.0);
    BOOST_TEST(r.y.at(0, 0) == 6 / std::sqrt(12.5), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r.y.at(0, 1) == -4 / std::sqrt(12.5), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE_TEMPLATE(group_norm_gives_zero_mean_unit_variance_per_group, T, real_types) {
    // Far-off-centre input (mean 1000, std 3) checks that the statistics do not cancel in float.
    const std::int64_t n = 3, c = 8, groups = 4, hw = 25;
    auto x = random_tensor<T>({n, c, 5, 5}, 11, 0, 3.0);
    for (auto& v : x.span()) v += T(1000);
    auto r = ops::group_norm(x.view(), groups, 1e-12);
    const std::int64_t m = c / groups * hw;
    const auto y = r.y.to_vector();
    const auto xs = x.to_vector();
    for (std::int64_t g = 0; g < n * groups; ++g) {
        std::vector<double> yg(y.begin() + g * m, y.begin() + (g + 1) * m), xg(xs.begin() + g * m, xs.begin() + (g + 1) * m);
        const auto [ym, yv] = mean_and_variance(yg.data(), m);
        const auto [xm, xv] = mean_and_variance(xg.data(), m);
        const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-3;
        BOOST_TEST(std::abs(ym) < tol);
        BOOST_TEST(std::abs(yv - 1.0) < tol);
        BOOST_TEST(std::abs(double(r.mean.data()[g]) - xm) < tol * 1000);
        BOOST_TEST(std::abs(double(r.rstd.data()[g]) * std::sqrt(xv) - 1.0) < tol);
    }
}

BOOST_AUTO_TEST_CASE(group_norm_affine_is_per_channel) {
    // With weight w_c and bias b_c, y = x̂·w_c + b_c; compare against the plain output.
    auto x = random_tensor<double>({2, 4, 3, 3}, 3);
    auto w = tensor<double>::from_host({4}, {1, 2, -0.5, 0});
    auto b = tensor<double>::from_host({4}, {0, 1, 2, 3});
    auto plain = ops::group_norm(x.view(), 2, 1e-6);
    auto affine = ops::group_norm(x.view(), 2, w.view(), b.view(), 1e-6);
    for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t ch = 0; ch < 4; ++ch)
            for (std::int64_t s = 0; s < 9; ++s) {
                const double expected = plain.y.at(i, ch, s / 3, s % 3) * w.at(ch) + b.at(ch);
                BOOST_TEST(affine.y.at(i, ch, s / 3, s % 3) == expected, boost::test_tools::tolerance(1e-13));
            }
}

BOOST_AUTO_TEST_CASE(layer_norm_rows_standardized_and_rms_rows_unit) {
    auto x = random_tensor<double>({6, 32}, 5, 0, 2.0);
    auto ln = ops::layer_norm(x.view(), 1e-12);
    auto ones = tensor<double>::full({32}, 1.0);
    auto rms = ops::rms_norm(x.view(), ones.view(), 1e-12);
    for (std::int64_t i = 0; i < 6; ++i) {
        const auto [m, v] = mean_and_variance(ln.y.data() + i * 32, 32);
        BOOST_TEST(std::abs(m) < 1e-13);
        BOOST_TEST(std::abs(v - 1) < 1e-11);
        double ms = 0;
        for (std::int64_t j = 0; j < 32; ++j) ms += rms.y.at(i, j) * rms.y.at(i, j);
        BOOST_TEST(std::abs(ms / 32 - 1) < 1e-11);
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(group_norm_op_several_group_counts, T, real_types) {
    for (std::int64_t groups : {1, 2, 6}) {
        BOOST_TEST_CONTEXT("groups " << groups) {
            auto x = random_tensor<T>({2, 6, 4, 4}, 21, 0, 1.5);
            auto w = random_tensor<T>({6}, 22, 0, 0.7);
            auto b = random_tensor<T>({6}, 23);
            testing::check_op_gradients<T>(
                "group_norm",
                [&](const views<T>& in) { return std::move(ops::group_norm(in[0], groups, in[1], in[2], 1e-6).y); },
                [&](const tensor_view<T, cpu>& dy, const views<T>& in) {
                    auto r = ops::group_norm(in[0], groups, in[1], in[2], 1e-6);
                    auto dw = tensor<T>::zeros(in[1].shape()), db = tensor<T>::zeros(in[2].shape());
                    std::vector<tensor<T>> g;
                    g.push_back(ops::group_norm_backward(dy, in[0], r.mean.view(), r.rstd.view(), groups, in[1], dw.view(), db.view()));
                    g.push_back(std::move(dw));
                    g.push_back(std::move(db));
                    return g;
                },
                {x, w, b});
            testing::check_op_gradients<T>(
                "group_norm (no affine)", [&](const views<T>& in) { return std::move(ops::group_norm(in[0], groups, 1e-6).y); },
                [&](const tensor_view<T, cpu>& dy, const views<T>& in) {
                    auto r = ops::group_norm(in[0], groups, 1e-6);
                    std::vector<tensor<T>> g;
                    g.push_back(ops::group_norm_backward(dy, in[0], r.mean.view(), r.rstd.view(), groups));
                    return g;
                },
                {x});
        }
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(layer_and_rms_norm_ops, T, real_types) {
    auto x = random_tensor<T>({3, 5, 12}, 31);
    auto w = random_tensor<T>({12}, 32, 0, 0.7);
    auto b = random_tensor<T>({12}, 33);
    testing::check_op_gradients<T>(
        "layer_norm", [&](const views<T>& in) { return std::move(ops::layer_norm(in[0], in[1], in[2], 1e-6).y); },
        [&](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::layer_norm(in[0], in[1], in[2], 1e-6);
            auto dw = tensor<T>::zeros(in[1].shape()), db = tensor<T>::zeros(in[2].shape());
            std::vector<tensor<T>> g;
            g.push_back(ops::layer_norm_backward(dy, in[0], r.mean.view(), r.rstd.view(), in[1], dw.view(), db.view()));
            g.push_back(std::move(dw));
            g.push_back(std::move(db));
            return g;
        },
        {x, w, b});
    testing::check_op_gradients<T>(
        "layer_norm (no affine)", [&](const views<T>& in) { return std::move(ops::layer_norm(in[0], 1e-6).y); },
        [&](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::layer_norm(in[0], 1e-6);
            std::vector<tensor<T>> g;
            g.push_back(ops::layer_norm_backward(dy, in[0], r.mean.view(), r.rstd.view()));
            return g;
        },
        {x});
    testing::check_op_gradients<T>(
        "rms_norm", [&](const views<T>& in) { return std::move(ops::rms_norm(in[0], in[1], 1e-6).y); },
        [&](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::rms_norm(in[0], in[1], 1e-6);
            auto dw = tensor<T>::zeros(in[1].shape());
            std::vector<tensor<T>> g;
            g.push_back(ops::rms_norm_backward(dy, in[0], r.rstd.view(), in[1], dw.view()));
            g.push_back(std::move(dw));
            return g;
        },
        {x, w});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(norm_layers, T, real_types) {
    {
        nn::group_norm<T> gn({.groups = 4, .channels = 8, .eps = 1e-6, .affine = true});
        testing::randomize_parameters(gn, 41);
        testing::check_layer_gradients("group_norm", gn, {2, 8, 3, 4});
    }
    {
        nn::group_norm<T> gn({.groups = 2, .channels = 8, .eps = 1e-6, .affine = false});
        testing::check_layer_gradients("group_norm (no affine)", gn, {2, 8, 6});
    }
    {
        nn::group_norm_silu<T> gn({.groups = 4, .channels = 8, .eps = 1e-6, .affine = true});
        testing::randomize_parameters(gn, 44);
        testing::check_layer_gradients("group_norm_silu", gn, {2, 8, 3, 4});
    }
    {
        nn::group_norm_silu<T> gn({.groups = 2, .channels = 8, .eps = 1e-6, .affine = false});
        testing::check_layer_gradients("group_norm_silu (no affine)", gn, {2, 8, 6});
    }
    {
        nn::layer_norm<T> ln({.dim = 8, .eps = 1e-6, .affine = true});
        testing::randomize_parameters(ln, 42);
        // 150 rows: more rows than the parameter-gradient reduction has chunks.
        testing::check_layer_gradients("layer_norm", ln, {3, 50, 8});
    }
    {
        nn::layer_norm<T> ln({.dim = 16, .eps = 1e-6, .affine = false});
        testing::check_layer_gradients("layer_norm (no affine)", ln, {4, 16});
    }
    {
        nn::rms_norm<T> rms({.dim = 8, .eps = 1e-6});
        testing::randomize_parameters(rms, 43);
        testing::check_layer_gradients("rms_norm", rms, {3, 50, 8});
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layers)

BOOST_AUTO_TEST_CASE(parameter_names_and_initial_values) {
    nn::group_norm<float> gn({.groups = 32, .channels = 64});
    const auto params = nn::named_parameters(gn);
    BOOST_REQUIRE_EQUAL(params.size(), 2u);
    BOOST_TEST(params[0].first == "weight");
    BOOST_TEST(params[1].first == "bias");
    BOOST_TEST(params[0].second->shape() == tensor_shape{64});
    BOOST_TEST(params[0].second->value.at(17) == 1.0f);
    BOOST_TEST(params[1].second->value.at(17) == 0.0f);

    nn::layer_norm<float> plain({.dim = 16, .eps = 1e-6, .affine = false});
    BOOST_TEST(nn::parameter_count(plain) == 0);
    nn::layer_norm<float> affine({.dim = 16});
    BOOST_TEST(nn::parameter_count(affine) == 32);

    nn::rms_norm<float> rms({.dim = 24});
    const auto rp = nn::named_parameters(rms);
    BOOST_REQUIRE_EQUAL(rp.size(), 1u);
    BOOST_TEST(rp[0].first == "weight");
    BOOST_TEST(rp[0].second->value.at(23) == 1.0f);
}

BOOST_AUTO_TEST_CASE(group_norm_layer_matches_formula) {
    // Against the definition, computed here by loops: per (sample, group) standardize over the
    // group's channels and positions, then the per-channel affine with the layer's own weights.
    nn::group_norm<double> gn({.groups = 2, .channels = 4});
    testing::randomize_parameters(gn, 51);
    auto x = random_tensor<double>({2, 4, 5}, 52);
    auto y = gn.forward(x);
    double worst = 0;
    for (std::int64_t n = 0; n < 2; ++n)
        for (std::int64_t g = 0; g < 2; ++g) {
            double mean = 0, var = 0;
            for (std::int64_t c = 2 * g; c < 2 * g + 2; ++c)
                for (std::int64_t i = 0; i < 5; ++i) mean += x.at(n, c, i) / 10.0;
            for (std::int64_t c = 2 * g; c < 2 * g + 2; ++c)
                for (std::int64_t i = 0; i < 5; ++i) var += (x.at(n, c, i) - mean) * (x.at(n, c, i) - mean) / 10.0;
            for (std::int64_t c = 2 * g; c < 2 * g + 2; ++c)
                for (std::int64_t i = 0; i < 5; ++i) {
                    const double expected = (x.at(n, c, i) - mean) / std::sqrt(var + 1e-6) * gn.weight.value.at(c) + gn.bias.value.at(c);
                    worst = std::max(worst, std::abs(y.at(n, c, i) - expected));
                }
        }
    BOOST_TEST(worst < 1e-12);
}

// The fused layer computes what group_norm followed by silu computes, forward and backward, with
// the same parameter names.
BOOST_AUTO_TEST_CASE(group_norm_silu_is_the_pair_as_one_layer) {
    nn::group_norm_silu<double> fused({.groups = 2, .channels = 4});
    nn::group_norm<double> norm({.groups = 2, .channels = 4});
    nn::silu<double> act;
    testing::randomize_parameters(fused, 53);
    ops::copy(norm.weight.value.view(), fused.weight.value.view());
    ops::copy(norm.bias.value.view(), fused.bias.value.view());
    const auto names = [](auto& layer) {
        std::vector<std::string> n;
        for (auto& [name, p] : nn::named_parameters(layer)) n.push_back(name);
        return n;
    };
    BOOST_TEST(names(fused) == names(norm), boost::test_tools::per_element());

    const auto x = random_tensor<double>({2, 4, 3, 5}, 54);
    const auto dy = random_tensor<double>({2, 4, 3, 5}, 55);
    const auto h = norm.forward(x);
    const auto y = act.forward(h);
    check_close(fused.forward(x), y, 0, 1e-300, "group_norm_silu forward");  // the same ops: the same values
    const auto dx = norm.backward(act.backward(dy));
    check_close(fused.backward(dy), dx, 1e-14, 1e-14, "group_norm_silu dx");
    check_close(fused.weight.grad, norm.weight.grad, 1e-14, 1e-14, "group_norm_silu dweight");
    check_close(fused.bias.grad, norm.bias.grad, 1e-14, 1e-14, "group_norm_silu dbias");
}

// Backward releases what its forward kept: a second backward of one forward is an error naming
// the layer, unless nn::retain_graph keeps the state for several.
template <class Layer>
void check_backward_spends_the_forward(const std::string& name, Layer layer, tensor_shape shape) {
    const auto x = random_tensor<double>(shape, 61);
    const auto dy = random_tensor<double>(shape, 62);
    (void)layer.forward(x);
    tensor<double> first, second;
    {
        nn::retain_graph keep;
        first = layer.backward(dy);
        second = layer.backward(dy);
    }
    check_close(second, first, 0, 1e-300, name + ": a retained backward repeats");
    (void)layer.backward(dy);
    const std::string msg = error_message<std::logic_error>([&] { (void)layer.backward(dy); });
    BOOST_TEST(contains(msg, name + ": backward already ran"), msg);
    BOOST_TEST(contains(msg, "nn::retain_graph"), msg);
    (void)layer.forward(x);
    check_close(layer.backward(dy), first, 0, 1e-300, name + ": a new forward, a new backward");
}

BOOST_AUTO_TEST_CASE(backward_spends_what_the_forward_kept) {
    check_backward_spends_the_forward("group_norm", nn::group_norm<double>({.groups = 2, .channels = 4}), {2, 4, 3});
    check_backward_spends_the_forward("group_norm_silu", nn::group_norm_silu<double>({.groups = 2, .channels = 4}), {2, 4, 3});
    check_backward_spends_the_forward("layer_norm", nn::layer_norm<double>({.dim = 6}), {3, 6});
    check_backward_spends_the_forward("rms_norm", nn::rms_norm<double>({.dim = 6}), {3, 6});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shape_errors)

BOOST_AUTO_TEST_CASE(group_norm_channels_not_divisible) {
    auto x = tensor<float>::zeros({2, 30, 4, 4});
    const auto msg = shape_error_message([&] { (void)ops::group_norm(x.view(), 32); });
    BOOST_TEST(contains(msg, "group_norm"));
    BOOST_TEST(contains(msg, "(2, 30, 4, 4)"));
    BOOST_TEST(contains(msg, "32 groups"));
    BOOST_CHECK_THROW((nn::group_norm<float>({.groups = 32, .channels = 30})), shape_error);
}

BOOST_AUTO_TEST_CASE(group_norm_parameter_and_input_shapes) {
    auto x = tensor<float>::zeros({2, 8, 3});
    auto w = tensor<float>::zeros({6}), b = tensor<float>::zeros({8});
    const auto msg = shape_error_message([&] { (void)ops::group_norm(x.view(), 4, w.view(), b.view()); });
    BOOST_TEST(contains(msg, "group_norm"));
    BOOST_TEST(contains(msg, "weight"));
    BOOST_TEST(contains(msg, "(6)"));
    BOOST_TEST(contains(msg, "(2, 8, 3)"));

    auto v = tensor<float>::zeros({8});
    BOOST_TEST(contains(shape_error_message([&] { (void)ops::group_norm(v.view(), 4); }), "rank >= 2"));

    nn::group_norm<float> gn({.groups = 4, .channels = 16});
    const auto lmsg = shape_error_message([&] { (void)gn.forward(x); });
    BOOST_TEST(contains(lmsg, "group_norm"));
    BOOST_TEST(contains(lmsg, "(2, 8, 3)"));
    BOOST_TEST(contains(lmsg, "16"));

    auto r = ops::group_norm(x.view(), 4);
    auto dy = tensor<float>::zeros({2, 8, 4});
    const auto bmsg = shape_error_message([&] { (void)ops::group_norm_backward(dy.view(), x.view(), r.mean.view(), r.rstd.view(), 4); });
    BOOST_TEST(contains(bmsg, "group_norm_backward"));
    BOOST_TEST(contains(bmsg, "(2, 8, 4)"));
}

BOOST_AUTO_TEST_CASE(layer_and_rms_norm_shapes) {
    auto x = tensor<float>::zeros({3, 10});
    auto w = tensor<float>::zeros({12}), b = tensor<float>::zeros({10});
    const auto msg = shape_error_message([&] { (void)ops::layer_norm(x.view(), w.view(), b.view()); });
    BOOST_TEST(contains(msg, "layer_norm"));
    BOOST_TEST(contains(msg, "(12)"));
    BOOST_TEST(contains(msg, "(3, 10)"));
    const auto rmsg = shape_error_message([&] { (void)ops::rms_norm(x.view(), w.view()); });
    BOOST_TEST(contains(rmsg, "rms_norm"));
    BOOST_TEST(contains(rmsg, "(3, 10)"));

    nn::layer_norm<float> ln({.dim = 12, .eps = 1e-6, .affine = false});
    const auto lmsg = shape_error_message([&] { (void)ln.forward(x); });
    BOOST_TEST(contains(lmsg, "layer_norm"));
    BOOST_TEST(contains(lmsg, "(3, 10)"));

    auto r = ops::layer_norm(x.view());
    auto wrong_stats = tensor<float>::zeros({4});
    const auto smsg = shape_error_message([&] { (void)ops::layer_norm_backward(x.view(), x.view(), wrong_stats.view(), r.rstd.view()); });
    BOOST_TEST(contains(smsg, "layer_norm_backward"));
    BOOST_TEST(contains(smsg, "(4)"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(batch_norm)

static_assert(nn::layer<nn::batch_norm2d<float>>);

/// A batch norm with random affine parameters and running statistics (variances in [0.5, 1.5]).
template <class T>
nn::batch_norm2d<T> random_batch_norm(std::int64_t channels, std::uint64_t seed) {
    nn::batch_norm2d<T> bn({.channels = channels});
    ops::copy(bn.weight.value.view(), random_tensor<T>({channels}, seed, 1).view());
    ops::copy(bn.bias.value.view(), random_tensor<T>({channels}, seed, 2).view());
    ops::copy(bn.running_mean.value.view(), random_tensor<T>({channels}, seed, 3).view());
    for (std::int64_t c = 0; c < channels; ++c) bn.running_var.value.data()[c] = T(0.5 + 0.1 * double(c % 11));
    return bn;
}

BOOST_AUTO_TEST_CASE_TEMPLATE(batch_norm_gradients_in_training_and_evaluation, T, real_types) {
    auto bn = random_batch_norm<T>(5, 7);
    testing::check_layer_gradients("batch_norm2d (training)", bn, {3, 5, 4, 3});
    bn.train(false);
    testing::check_layer_gradients("batch_norm2d (evaluation)", bn, {3, 5, 4, 3});
}

// torch.nn.BatchNorm2d's definition, written out in double: training normalizes with the batch's
// mean and biased variance and moves the running statistics by momentum 0.1 toward the batch's
// mean and unbiased variance, three times here; evaluation then uses the running statistics.
BOOST_AUTO_TEST_CASE(batch_norm_follows_its_definition_over_three_steps) {
    const std::int64_t n = 2, c = 3, h = 4, w = 5, count = n * h * w;
    auto bn = random_batch_norm<double>(c, 9);
    std::vector<double> running_mean = bn.running_mean.value.to_vector(), running_var = bn.running_var.value.to_vector();
    const auto weight = bn.weight.value.to_vector(), bias = bn.bias.value.to_vector();
    for (int step = 0; step < 3; ++step) {
        const auto x = random_tensor<double>({n, c, h, w}, 20 + step, 1, 2.0);
        const auto y = bn.forward(x);
        for (std::int64_t ch = 0; ch < c; ++ch) {
            double sum = 0, squares = 0;
            for (std::int64_t b = 0; b < n; ++b)
                for (std::int64_t i = 0; i < h * w; ++i) sum += x.data()[(b * c + ch) * h * w + i];
            const double mean = sum / double(count);
            for (std::int64_t b = 0; b < n; ++b)
                for (std::int64_t i = 0; i < h * w; ++i) squares += std::pow(x.data()[(b * c + ch) * h * w + i] - mean, 2);
            const double var = squares / double(count);
            for (std::int64_t b = 0; b < n; ++b)
                for (std::int64_t i = 0; i < h * w; ++i) {
                    const auto k = (b * c + ch) * h * w + i;
                    BOOST_TEST(y.data()[k] == (x.data()[k] - mean) / std::sqrt(var + 1e-5) * weight[ch] + bias[ch],
                               boost::test_tools::tolerance(1e-12));
                }
            running_mean[ch] = 0.9 * running_mean[ch] + 0.1 * mean;
            running_var[ch] = 0.9 * running_var[ch] + 0.1 * var * double(count) / double(count - 1);
        }
    }
    for (std::int64_t ch = 0; ch < c; ++ch) {
        BOOST_TEST(bn.running_mean.value.data()[ch] == running_mean[ch], boost::test_tools::tolerance(1e-12));
        BOOST_TEST(bn.running_var.value.data()[ch] == running_var[ch], boost::test_tools::tolerance(1e-12));
    }
    BOOST_TEST(bn.num_batches_tracked.value.data()[0] == 3.0);

    bn.train(false);
    const auto x = random_tensor<double>({n, c, h, w}, 30, 1);
    const auto y = bn.forward(x);
    for (std::int64_t k = 0; k < x.numel(); ++k) {
        const auto ch = (k / (h * w)) % c;
        BOOST_TEST(y.data()[k] == (x.data()[k] - running_mean[ch]) / std::sqrt(running_var[ch] + 1e-5) * weight[ch] + bias[ch],
                   boost::test_tools::tolerance(1e-12));
    }
    BOOST_TEST(bn.num_batches_tracked.value.data()[0] == 3.0);  // evaluation leaves the statistics alone
    BOOST_TEST(bn.running_mean.value.data()[1] == running_mean[1], boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(batch_norm_names_and_errors) {
    nn::batch_norm2d<float> bn({.channels = 4});
    std::vector<std::string> names;
    std::vector<bool> trainable;
    bn.for_each_parameter([&](const std::string& name, nn::parameter<float, cpu>& p) {
        names.push_back(name);
        trainable.push_back(p.trainable);
    }, "net.1");
    BOOST_TEST(names == (std::vector<std::string>{"net.1.weight", "net.1.bias", "net.1.running_mean", "net.1.running_var",
                                                   "net.1.num_batches_tracked"}),
               boost::test_tools::per_element());
    BOOST_TEST(trainable == (std::vector<bool>{true, true, false, false, false}), boost::test_tools::per_element());
    const tensor<float> three_channels({2, 3, 2, 2}), one_value({1, 4, 1, 1});
    const auto wrong = testing::shape_error_message([&] { (void)bn.forward(three_channels); });
    BOOST_TEST(testing::contains(wrong, "must be (N, 4, H, W)"), wrong);
    const auto single = testing::shape_error_message([&] { (void)bn.forward(one_value); });
    BOOST_TEST(testing::contains(single, "more than one value per channel"), single);
    const tensor<float> x = random_tensor<float>({2, 4, 2, 2}, 3, 1);
    {
        nn::no_grad off;
        (void)bn.forward(x);
    }
    BOOST_CHECK_THROW((void)bn.backward(x), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
