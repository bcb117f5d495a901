#define BOOST_TEST_MODULE ema
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/optim/ema.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

using model_type = nn::linear<double, cpu>;

std::vector<double> values(const tensor_view<double, cpu>& t) { return t.to_vector(); }

bool bitwise_equal(const tensor_view<double, cpu>& a, const tensor_view<double, cpu>& b) {
    return a.shape() == b.shape() && std::equal(a.span().begin(), a.span().end(), b.span().begin());
}

/// A linear layer plus a fixed table that is in the state_dict but not trained.
struct layer_with_buffer {
    using value_type = double;
    using device_type = cpu;
    model_type fc{3, 2, true, 7};
    nn::parameter<double, cpu> table{{2, 2}, false};

    tensor<double, cpu> forward(tensor<double, cpu>&&) = delete;
    tensor<double, cpu> forward(const tensor_view<double, cpu>& x) { return fc.forward(x); }
    tensor<double, cpu> backward(const tensor_view<double, cpu>& dy) { return fc.backward(dy); }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        fc.for_each_parameter(f, nn::join_name(prefix, "fc"));
        f(nn::join_name(prefix, "table"), table);
    }
};
static_assert(nn::layer<layer_with_buffer>);

} // namespace

BOOST_AUTO_TEST_SUITE(ema)

BOOST_AUTO_TEST_CASE(warmup_decay) {
    model_type model(3, 2, true, 1);
    optim::ema avg(model, {.decay = 0.9999});
    BOOST_TEST(avg.decay_at(0) == 0.1, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(avg.decay_at(10) == 11.0 / 20.0, boost::test_tools::tolerance(1e-15));
    BOOST_TEST(avg.decay_at(10'000'000) == 0.9999);
    optim::ema plain(model, {.decay = 0.99, .warmup = false});
    BOOST_TEST(plain.decay_at(0) == 0.99);
}

// Constant parameters are a fixed point: the shadow starts as a copy and stays bit-exact.
BOOST_AUTO_TEST_CASE(constant_parameters_stay_exact) {
    model_type model(3, 2, true, 1);
    optim::ema avg(model, {.decay = 0.999});
    for (int k = 0; k < 5; ++k) avg.update(model, k);
    BOOST_TEST(bitwise_equal(avg.find("weight")->value, model.weight.value));
    BOOST_TEST(bitwise_equal(avg.find("bias")->value, model.bias.value));
}

// The same in float, where d·s + (1 − d)·p with d and 1 − d rounded would drift off a constant.
BOOST_AUTO_TEST_CASE(constant_parameters_stay_exact_in_float) {
    nn::linear<float, cpu> model(5, 4, true, 1);
    optim::ema avg(model, {.decay = 0.9999});
    const auto w = model.weight.value.to_vector();
    for (int k = 0; k < 50; ++k) avg.update(model, k);
    BOOST_TEST(avg.find("weight")->value.to_vector() == w, boost::test_tools::per_element());
}

// A parameter that changes each step against the recursion s ← d_k·s + (1 − d_k)·p_k by hand.
BOOST_AUTO_TEST_CASE(matches_the_recursion_by_hand) {
    for (bool warmup : {true, false}) {
        model_type model(3, 2, true, 2);
        const auto w0 = values(model.weight.value);
        optim::ema avg(model, {.decay = 0.9, .warmup = warmup});
        std::vector<double> shadow = w0;
        for (int k = 0; k < 12; ++k) {
            // p_k = w0·(1 + 0.1·k) + 0.05·k
            for (std::size_t i = 0; i < w0.size(); ++i) model.weight.value.data()[i] = w0[i] * (1 + 0.1 * k) + 0.05 * k;
            const double d = warmup ? std::min(0.9, (1.0 + k) / (10.0 + k)) : 0.9;
            for (std::size_t i = 0; i < w0.size(); ++i) shadow[i] = d * shadow[i] + (1 - d) * model.weight.value.data()[i];
            avg.update(model, k);
        }
        const auto got = values(avg.find("weight")->value);
        for (std::size_t i = 0; i < w0.size(); ++i)
            BOOST_TEST(got[i] == shadow[i], boost::test_tools::tolerance(1e-13));
        // The hand recursion really moved away from both the start and the last parameter.
        BOOST_TEST(std::abs(shadow[0] - w0[0]) > 0.05);
        BOOST_TEST(std::abs(shadow[0] - model.weight.value.data()[0]) > 0.05);
    }
}

BOOST_AUTO_TEST_CASE(fixed_tensors_are_copied_not_averaged) {
    layer_with_buffer model;
    ops::fill(model.table.value.view(), 1.0);
    optim::ema avg(model, {.decay = 0.5, .warmup = false});
    ops::fill(model.table.value.view(), 3.0);
    ops::fill(model.fc.bias.value.view(), 0.0);
    const auto bias_before = values(avg.find("fc.bias")->value);
    avg.update(model, 0);
    for (double v : avg.find("table")->value.span()) BOOST_TEST(v == 3.0);
    const auto bias_after = values(avg.find("fc.bias")->value);
    for (std::size_t i = 0; i < bias_after.size(); ++i) BOOST_TEST(bias_after[i] == 0.5 * bias_before[i]);
    BOOST_TEST(!avg.find("table")->trainable);
}

BOOST_AUTO_TEST_CASE(swap_and_copy_to) {
    model_type model(3, 2, true, 3);
    optim::ema avg(model, {.decay = 0.5, .warmup = false});
    const auto trained_w = values(model.weight.value);
    ops::fill(model.weight.value.view(), 2.0);
    avg.update(model, 0);  // shadow = (w + 2)/2
    const auto trained = model.weight.value.clone();
    const auto shadow = avg.find("weight")->value.clone();
    for (std::int64_t i = 0; i < shadow.numel(); ++i) BOOST_TEST(shadow.data()[i] == 0.5 * trained_w[i] + 1.0, boost::test_tools::tolerance(1e-15));

    avg.swap(model);
    BOOST_TEST(bitwise_equal(model.weight.value, shadow));
    BOOST_TEST(bitwise_equal(avg.find("weight")->value, trained));
    avg.swap(model);
    BOOST_TEST(bitwise_equal(model.weight.value, trained));
    BOOST_TEST(bitwise_equal(avg.find("weight")->value, shadow));

    // swap keeps each parameter's storage where it is (views held elsewhere stay valid).
    const double* storage = model.weight.value.data();
    avg.swap(model);
    BOOST_TEST(model.weight.value.data() == storage);
    avg.swap(model);

    avg.copy_to(model);
    BOOST_TEST(bitwise_equal(model.weight.value, shadow));
    BOOST_TEST(bitwise_equal(avg.find("weight")->value, shadow));
}

BOOST_AUTO_TEST_CASE(visitor_names_and_safetensors) {
    layer_with_buffer model;
    optim::ema avg(model);
    std::vector<std::string> model_names, ema_names, prefixed;
    model.for_each_parameter([&](const std::string& n, auto&) { model_names.push_back(n); });
    avg.for_each_parameter([&](const std::string& n, auto&) { ema_names.push_back(n); });
    avg.for_each_parameter([&](const std::string& n, auto&) { prefixed.push_back(n); }, "ema");
    BOOST_TEST(ema_names == model_names, boost::test_tools::per_element());
    BOOST_TEST(model_names == (std::vector<std::string>{"fc.weight", "fc.bias", "table"}), boost::test_tools::per_element());
    BOOST_TEST(prefixed == (std::vector<std::string>{"ema.fc.weight", "ema.fc.bias", "ema.table"}), boost::test_tools::per_element());

    // The shadow saves like a model and loads into one.
    ops::fill(model.fc.weight.value.view(), 0.25);
    avg.update(model, 3);
    temp_dir dir("ema");
    io::save_state_dict(dir.path / "ema.safetensors", avg);
    layer_with_buffer fresh;
    io::load_state_dict(dir.path / "ema.safetensors", fresh);
    BOOST_TEST(bitwise_equal(fresh.fc.weight.value, avg.find("fc.weight")->value));
    BOOST_TEST(!bitwise_equal(fresh.fc.weight.value, model.fc.weight.value));
    // ... and the average reloads from the file too.
    optim::ema other(fresh);
    io::load_state_dict(dir.path / "ema.safetensors", other);
    BOOST_TEST(bitwise_equal(other.find("fc.weight")->value, avg.find("fc.weight")->value));
}

BOOST_AUTO_TEST_CASE(a_different_model_is_rejected) {
    model_type model(3, 2, true, 1), other(4, 2, true, 1);
    optim::ema avg(model);
    const auto msg = shape_error_message([&] { avg.update(other, 0); });
    BOOST_TEST(contains(msg, "(2, 4)"), msg);
    BOOST_TEST(contains(msg, "(2, 3)"), msg);
    model_type no_bias(3, 2, false, 1);
    BOOST_CHECK_THROW(avg.copy_to(no_bias), std::invalid_argument);
    BOOST_CHECK_THROW(optim::ema(model, {.decay = 1.5}), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
