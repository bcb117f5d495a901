#define BOOST_TEST_MODULE adversarial
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/loss/adversarial.hpp"
#include "vediff/models/patchgan_discriminator.hpp"
#include "vediff/models/lpips.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/pool.hpp"
#include "vediff/ops/channel_norm.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = std::tuple<double, float>;
static_assert(nn::layer<models::patchgan_discriminator<float>>);
} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(leaky_relu_by_hand_and_gradient, T, real_types) {
    nn::leaky_relu<T> act(T(0.2));
    const auto x = tensor<T>::from_host({4}, {T(-2), T(-0.5), T(0.25), T(3)});
    const auto y = act.forward(x);
    BOOST_TEST(y.to_vector() == (std::vector<T>{T(-0.4), T(-0.1), T(0.25), T(3)}), boost::test_tools::per_element());
    testing::check_layer_gradients("leaky_relu", act, {3, 7});
}

// taming's NLayerDiscriminator: its state_dict names, logits of one per 70-pixel patch, and its
// initialization (convolutions N(0, 0.02²), BatchNorm weights N(1, 0.02²), BatchNorm biases 0).
BOOST_AUTO_TEST_CASE(patchgan_names_shapes_and_initialization) {
    models::patchgan_discriminator<float> d({.in_channels = 3, .ndf = 64}, 1);
    std::vector<std::string> names;
    d.for_each_parameter([&](const std::string& name, nn::parameter<float, cpu>&) { names.push_back(name); }, std::string{});
    const std::vector<std::string> expected{
        "main.0.weight", "main.0.bias", "main.2.weight", "main.3.weight", "main.3.bias", "main.3.running_mean", "main.3.running_var",
        "main.3.num_batches_tracked", "main.5.weight", "main.6.weight", "main.6.bias", "main.6.running_mean", "main.6.running_var",
        "main.6.num_batches_tracked", "main.8.weight", "main.9.weight", "main.9.bias", "main.9.running_mean", "main.9.running_var",
        "main.9.num_batches_tracked", "main.11.weight", "main.11.bias"};
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    auto& l = d.main.layers;
    BOOST_TEST((std::get<2>(l).weight.shape() == tensor_shape{128, 64, 4, 4}));
    BOOST_TEST((std::get<8>(l).weight.shape() == tensor_shape{512, 256, 4, 4}));
    BOOST_TEST((std::get<11>(l).weight.shape() == tensor_shape{1, 512, 4, 4}));
    const auto moments = [](const tensor<float>& t) {
        double s = 0, ss = 0;
        const auto v = t.to_vector();
        for (float x : v) s += x;
        const double m = s / double(v.size());
        for (float x : v) ss += (x - m) * (x - m);
        return std::pair{m, std::sqrt(ss / double(v.size()))};
    };
    const auto [conv_mean, conv_std] = moments(std::get<5>(l).weight.value);
    BOOST_TEST(std::abs(conv_mean) < 1e-3);
    BOOST_TEST(std::abs(conv_std - 0.02) < 1e-3);
    const auto [bn_mean, bn_std] = moments(std::get<9>(l).weight.value);
    BOOST_TEST(std::abs(bn_mean - 1.0) < 5e-3);
    BOOST_TEST(std::abs(bn_std - 0.02) < 5e-3);
    BOOST_TEST(std::get<9>(l).bias.value.to_vector() == std::vector<float>(512, 0.0f), boost::test_tools::per_element());

    models::patchgan_discriminator<float> small({.in_channels = 3, .ndf = 8}, 2);
    const auto x = random_tensor<float>({2, 3, 64, 64}, 4, 1);
    BOOST_TEST((small.forward(x).shape() == tensor_shape{2, 1, 6, 6}));
    const tensor<float> too_small({1, 3, 16, 16});
    const auto msg = shape_error_message([&] { (void)small.forward(too_small); });
    BOOST_TEST(contains(msg, "H, W ≥ 32"), msg);
}

BOOST_AUTO_TEST_CASE(patchgan_gradients_in_training_and_evaluation) {
    models::patchgan_discriminator<double> d({.in_channels = 2, .ndf = 2}, 3);
    testing::randomize_parameters(d, 5, 0.3);
    for (auto* bn : {&std::get<3>(d.main.layers), &std::get<6>(d.main.layers), &std::get<9>(d.main.layers)})
        for (std::int64_t c = 0; c < bn->cfg.channels; ++c) bn->running_var.value.data()[c] = 0.5 + 0.25 * double(c);
    testing::check_layer_gradients("patchgan (training)", d, {2, 2, 32, 32});
    d.train(false);
    testing::check_layer_gradients("patchgan (evaluation)", d, {2, 2, 32, 32});
}

// Hinge terms by hand: real logits {2, 0.5, -1} give relu(1 − ·) = {0, 0.5, 2}, fake {-2, 0, 1}
// give relu(1 + ·) = {0, 1, 2}; gradients −½/3 and +½/3 where the margins are positive.
BOOST_AUTO_TEST_CASE(hinge_losses_by_hand) {
    const auto real = tensor<double>::from_host({3}, {2.0, 0.5, -1.0});
    const auto fake = tensor<double>::from_host({3}, {-2.0, 0.0, 1.0});
    const auto d = loss::hinge_discriminator_loss(real.view(), fake.view());
    BOOST_TEST(d.real_term == 2.5 / 3, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.fake_term == 1.0, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.value == 0.5 * (2.5 / 3 + 1.0), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.d_real.to_vector() == (std::vector<double>{0.0, -1.0 / 6, -1.0 / 6}), boost::test_tools::per_element());
    BOOST_TEST(d.d_fake.to_vector() == (std::vector<double>{0.0, 1.0 / 6, 1.0 / 6}), boost::test_tools::per_element());
    const auto g = loss::hinge_generator_loss(fake.view());
    BOOST_TEST(g.value == 1.0 / 3, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(g.d_fake.to_vector() == std::vector<double>(3, -1.0 / 3), boost::test_tools::per_element());
}

// taming's "vanilla" (non-saturating) discriminator loss by hand:
// ½·mean(softplus(−D(x))) + ½·mean(softplus(D(x̂))), gradients ∓½·σ(∓l)/n; the logit means.
BOOST_AUTO_TEST_CASE(vanilla_losses_by_hand) {
    const std::vector<double> r{2.0, 0.5, -1.0, 40.0}, f{-2.0, 0.0, 1.0, -40.0};
    const auto real = tensor<double>::from_host({4}, r);
    const auto fake = tensor<double>::from_host({4}, f);
    const auto d = loss::discriminator_loss_of(loss::discriminator_objective::vanilla, real.view(), fake.view());
    const auto softplus = [](double v) { return std::log1p(std::exp(v)); };
    const auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
    double real_sum = 0, fake_sum = 0;
    std::vector<double> d_real, d_fake;
    for (std::size_t i = 0; i < 4; ++i) {
        real_sum += softplus(-r[i]);
        fake_sum += softplus(f[i]);
        d_real.push_back(-0.5 * sigmoid(-r[i]) / 4);
        d_fake.push_back(0.5 * sigmoid(f[i]) / 4);
    }
    BOOST_TEST(d.real_term == real_sum / 4, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.fake_term == fake_sum / 4, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.value == 0.5 * (real_sum + fake_sum) / 4, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(d.d_real.to_vector() == d_real, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
    BOOST_TEST(d.d_fake.to_vector() == d_fake, boost::test_tools::tolerance(1e-14) << boost::test_tools::per_element());
    const auto half = loss::discriminator_real_term(loss::discriminator_objective::vanilla, real.view());
    BOOST_TEST(half.mean_logit == 41.5 / 4, boost::test_tools::tolerance(1e-14));
    BOOST_TEST((loss::parse_discriminator_objective("hinge") == loss::discriminator_objective::hinge));
    BOOST_CHECK_THROW((void)loss::parse_discriminator_objective("wgan"), std::invalid_argument);
}

// Both halves of both objectives against central differences in the logits.
BOOST_AUTO_TEST_CASE(discriminator_terms_gradients) {
    for (const auto o : {loss::discriminator_objective::hinge, loss::discriminator_objective::vanilla}) {
        auto logits = random_tensor<double>({2, 1, 3, 3}, 9, 0, 2.0);
        const auto probes = probe_indices(logits.numel(), logits.numel());
        for (const bool real : {true, false}) {
            const auto term = [&] {
                return real ? loss::discriminator_real_term(o, logits.view()) : loss::discriminator_fake_term(o, logits.view());
            };
            const auto numeric = numeric_gradient<double>(logits.view(), [&] { return term().value; }, probes, 1e-6);
            const double err = relative_error(gather<double>(term().gradient.view(), probes), numeric);
            BOOST_TEST(err < 1e-7, to_string(o) << (real ? " real" : " fake") << ": relative error " << err);
        }
    }
}

// ‖(3, 4)‖ / (‖(0, 0.5)‖ + 1e-4) × 0.5, and the clamp at 1e4 when the generator's gradient vanishes.
BOOST_AUTO_TEST_CASE(adaptive_weight_by_hand) {
    const auto rec = tensor<double>::from_host({2}, {3.0, 4.0});
    const auto gen = tensor<double>::from_host({2}, {0.0, 0.5});
    BOOST_TEST(loss::adaptive_weight(rec.view(), gen.view(), 0.5) == 5.0 / (0.5 + 1e-4) * 0.5, boost::test_tools::tolerance(1e-14));
    const auto zero = tensor<double>::zeros({2});
    BOOST_TEST(loss::adaptive_weight(rec.view(), zero.view(), 1.0) == 1e4);
    const auto nan = tensor<double>::from_host({2}, {std::nan(""), 1.0});
    BOOST_CHECK_THROW((void)loss::adaptive_weight(nan.view(), gen.view(), 1.0), std::invalid_argument);
}

// Against PyTorch (tests/fixtures/make_adversarial.py, float64, random weights and running
// statistics, ndf 2, one input channel): three training-mode passes move the running statistics
// (and num_batches_tracked from 5 to 8); the third's logits and gradients; then evaluation mode.
BOOST_AUTO_TEST_CASE(patchgan_matches_pytorch_in_training_and_evaluation) {
    const auto f = testing::load_fixture("adversarial.txt");
    models::patchgan_discriminator<double> d({.in_channels = 1, .ndf = 2});
    d.for_each_parameter([&](const std::string& name, nn::parameter<double, cpu>& p) {
        const auto value = f.get<double>("param." + name);
        BOOST_TEST_REQUIRE((value.shape() == p.shape()), name);
        ops::copy(p.value.view(), value.view());
    }, std::string{});
    const double tol = 1e-10;
    d.train(true);
    for (int step = 0; step < 2; ++step) {
        const auto earlier = f.get<double>(fmt::format("train_x{}", step));
        (void)d.forward(earlier);
    }
    nn::zero_grad(d);
    const auto x = f.get<double>("train_x2");
    const auto logits = d.forward(x);
    check_close(logits, f.get("train_logits"), tol, tol, "training logits");
    check_close(d.backward(f.get<double>("train_dy")), f.get("train_dx"), tol, tol, "training dx");
    auto& l = d.main.layers;
    check_close(std::get<0>(l).weight.grad, f.get("train_grad.main.0.weight"), tol, tol, "main.0.weight gradient");
    check_close(std::get<3>(l).weight.grad, f.get("train_grad.main.3.weight"), tol, tol, "main.3.weight gradient");
    check_close(std::get<3>(l).bias.grad, f.get("train_grad.main.3.bias"), tol, tol, "main.3.bias gradient");
    check_close(std::get<8>(l).weight.grad, f.get("train_grad.main.8.weight"), tol, tol, "main.8.weight gradient");
    d.for_each_parameter([&](const std::string& name, nn::parameter<double, cpu>& p) {
        if (name.find("running") == std::string::npos && name.find("num_batches") == std::string::npos) return;
        check_close(p.value, f.get("after." + name), tol, tol, name + " after three steps");
    }, std::string{});

    d.train(false);
    const auto xe = f.get<double>("eval_x");
    const auto eval_logits = d.forward(xe);
    check_close(eval_logits, f.get("eval_logits"), tol, tol, "evaluation logits");
    nn::zero_grad(d);
    check_close(d.backward(f.get<double>("eval_dy")), f.get("eval_dx"), tol, tol, "evaluation dx");
    check_close(std::get<6>(l).weight.grad, f.get("eval_grad.main.6.weight"), tol, tol, "main.6.weight gradient (evaluation)");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(max_pool_and_channel_norm_gradients, T, real_types) {
    nn::max_pool2d<T> pool;
    testing::check_layer_gradients("max_pool2d 2×2", pool, {2, 3, 6, 8});
    if constexpr (std::is_same_v<T, double>) {  // in float a finite-difference step can reorder near-equal maxima
        nn::max_pool2d<T> overlapping({.kernel = 3, .stride = 2, .padding = 1});
        testing::check_layer_gradients("max_pool2d 3×3 stride 2 pad 1", overlapping, {2, 2, 7, 7});
    }
    const auto x = random_tensor<T>({2, 5, 3, 4}, 8, 1);
    using views = std::vector<tensor_view<T, cpu>>;
    testing::check_op_gradients<T>(
        "unit_normalize_channels", [](const views& in) { return std::move(ops::unit_normalize_channels(in[0]).y); },
        [](const tensor_view<T, cpu>& dy, const views& in) {
            const auto r = ops::unit_normalize_channels(in[0]);
            std::vector<tensor<T>> g;
            g.push_back(ops::unit_normalize_channels_backward(dy, in[0], r.norm.view()));
            return g;
        },
        {x});
    // Each position's channels have unit length.
    const auto y = ops::unit_normalize_channels(x.view()).y;
    double s = 0;
    for (std::int64_t c = 0; c < 5; ++c) s += std::pow(double(y.data()[c * 12 + 7]), 2);
    BOOST_TEST(s == 1.0, boost::test_tools::tolerance(1e-5));
}

// LPIPS against PyTorch (tests/fixtures/make_lpips.py: the lpips 'vgg' network with random
// weights, widths divided by 32): the distances of two pairs and the gradient with respect to x0.
BOOST_AUTO_TEST_CASE(lpips_matches_pytorch) {
    const auto f = testing::load_fixture("lpips.txt");
    models::lpips<double> net(0, 32);
    int loaded = 0;
    net.for_each_parameter([&](const std::string& name, nn::parameter<double, cpu>& p) {
        if (name.starts_with("scaling_layer")) return;  // constants, not in the fixture
        const auto value = f.get<double>("param." + name);
        BOOST_TEST_REQUIRE((value.shape() == p.shape()), name);
        ops::copy(p.value.view(), value.view());
        ++loaded;
    }, std::string{});
    BOOST_TEST(loaded == 26 + 5);
    const auto x0 = f.get<double>("x0"), x1 = f.get<double>("x1");
    const auto distance = net.forward(x0, x1);
    check_close(distance, f.get("distance"), 1e-10, 1e-12, "LPIPS distance");
    check_close(net.backward(f.get<double>("ddistance")), f.get("dx0"), 1e-9, 1e-12, "LPIPS gradient with respect to x0");
    // A distance of an image to itself is 0; the network is frozen (nothing for an optimizer).
    BOOST_TEST(net.forward(x0, x0).to_vector() == std::vector<double>(2, 0.0), boost::test_tools::per_element());
    net.for_each_parameter([](const std::string& name, nn::parameter<double, cpu>& p) { BOOST_TEST(!p.trainable, name); }, std::string{});
}

BOOST_AUTO_TEST_CASE(lpips_names_follow_the_lpips_package) {
    models::lpips<float> net(1, 8);
    std::vector<std::string> names;
    net.for_each_parameter([&](const std::string& name, nn::parameter<float, cpu>&) { names.push_back(name); }, std::string{});
    BOOST_TEST_REQUIRE(names.size() == 2u + 26u + 5u);
    BOOST_TEST(names[0] == "scaling_layer.shift");
    BOOST_TEST(names[2] == "net.slice1.0.weight");
    BOOST_TEST(names[6] == "net.slice2.5.weight");
    BOOST_TEST(names[27] == "net.slice5.28.bias");
    BOOST_TEST(names[28] == "lin0.model.1.weight");
    BOOST_TEST(names[32] == "lin4.model.1.weight");
    const tensor<float> small({1, 3, 8, 8}), other({1, 3, 16, 16});
    const auto msg = shape_error_message([&] { (void)net.forward(small, small); });
    BOOST_TEST(contains(msg, "H, W ≥ 16"), msg);
}
