#define BOOST_TEST_MODULE compose
#include <boost/test/unit_test.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/ops/elementwise.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
// A test-local layer with one parameter: y = w ⊙ x (w has the shape of one sample).
template <class T, device D = cpu>
struct elementwise_scale {
    using value_type = T;
    using device_type = D;
    nn::parameter<T, D> weight;
    explicit elementwise_scale(tensor_shape sample_shape = {4}) : weight(sample_shape) { ops::fill(weight.value.view(), T(1)); }

    tensor<T, D> forward(tensor<T, D>&&) = delete;  // keeps a view of x
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = x;
        auto y = tensor<T, D>::empty(x.shape());
        const auto n = weight.value.numel();
        for (std::int64_t b = 0; b < x.dim(0); ++b)
            for (std::int64_t i = 0; i < n; ++i) y.data()[b * n + i] = x.data()[b * n + i] * weight.value.data()[i];
        return y;
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        auto dx = tensor<T, D>::empty(dy.shape());
        const auto n = weight.value.numel();
        for (std::int64_t b = 0; b < dy.dim(0); ++b)
            for (std::int64_t i = 0; i < n; ++i) {
                dx.data()[b * n + i] = dy.data()[b * n + i] * weight.value.data()[i];
                weight.grad.data()[i] += dy.data()[b * n + i] * input_.data()[b * n + i];
            }
        return dx;
    }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "weight"), weight);
    }

private:
    tensor_view<T, D> input_;
};
} // namespace

static_assert(nn::layer<nn::silu<float>>);
static_assert(nn::layer<nn::gelu<double>>);
static_assert(nn::layer<elementwise_scale<double>>);
static_assert(nn::layer<nn::sequential<elementwise_scale<double>, nn::silu<double>>>);
static_assert(nn::layer<nn::residual<nn::sequential<elementwise_scale<double>, nn::silu<double>>>>);

BOOST_AUTO_TEST_SUITE(activations)

BOOST_AUTO_TEST_CASE(silu_values) {
    auto x = tensor<double>::from_host({3}, {-1.0, 0.0, 2.0});
    auto y = ops::silu(x.view());
    BOOST_TEST(y.at(0) == -1.0 / (1.0 + std::exp(1.0)), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(y.at(1) == 0.0);
    BOOST_TEST(y.at(2) == 2.0 / (1.0 + std::exp(-2.0)), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(gelu_tanh_values) {
    // torch.nn.functional.gelu(x, approximate="tanh") for x = -1, 0.5, 3.
    auto x = tensor<double>::from_host({3}, {-1.0, 0.5, 3.0});
    auto y = ops::gelu_tanh(x.view());
    BOOST_TEST(y.at(0) == -0.15880800939172324, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(y.at(1) == 0.34571400982514394, boost::test_tools::tolerance(1e-12));
    BOOST_TEST(y.at(2) == 2.9963626079182268, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(activation_gradients_double_and_float) {
    nn::silu<double> s;
    check_layer_gradients("silu<double>", s, {3, 5, 7});
    nn::gelu<double> g;
    check_layer_gradients("gelu<double>", g, {3, 5, 7});
    nn::silu<float> sf;
    check_layer_gradients("silu<float>", sf, {3, 5, 7});
    nn::gelu<float> gf;
    check_layer_gradients("gelu<float>", gf, {3, 5, 7});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(composition)

BOOST_AUTO_TEST_CASE(sequential_forward_is_the_chain) {
    nn::sequential<elementwise_scale<double>, nn::silu<double>> net;
    ops::fill(net.get<0>().weight.value.view(), 2.0);
    auto x = tensor<double>::from_host({1, 4}, {1, -1, 0.5, 0});
    auto y = net.forward(x);
    for (int i = 0; i < 4; ++i) {
        const double v = 2.0 * x.at(0, i);
        BOOST_TEST(y.at(0, i) == v / (1.0 + std::exp(-v)), boost::test_tools::tolerance(1e-14));
    }
}

BOOST_AUTO_TEST_CASE(sequential_and_residual_gradients) {
    using block = nn::sequential<elementwise_scale<double>, nn::gelu<double>, elementwise_scale<double>>;
    nn::sequential<nn::residual<block>, nn::silu<double>, nn::residual<block, elementwise_scale<double>>> net;
    randomize_parameters(net, 3);
    check_layer_gradients("residual chain<double>", net, {2, 4});

    using block_f = nn::sequential<elementwise_scale<float>, nn::gelu<float>, elementwise_scale<float>>;
    nn::sequential<nn::residual<block_f>, nn::residual<block_f, elementwise_scale<float>>> net_f;
    randomize_parameters(net_f, 4);
    check_layer_gradients("residual chain<float>", net_f, {2, 4});
}

BOOST_AUTO_TEST_CASE(residual_identity_adds_input) {
    nn::residual<elementwise_scale<double>> r;
    ops::fill(r.body.weight.value.view(), 3.0);
    auto x = tensor<double>::from_host({1, 4}, {1, 2, 3, 4});
    auto y = r.forward(x);
    for (int i = 0; i < 4; ++i) BOOST_TEST(y.at(0, i) == 4.0 * x.at(0, i));
}

BOOST_AUTO_TEST_CASE(parameter_names_follow_state_dict_conventions) {
    using block = nn::sequential<elementwise_scale<double>, nn::silu<double>, elementwise_scale<double>>;
    nn::sequential<nn::named<"conv1", elementwise_scale<double>>, block,
                   nn::residual<nn::named<"body", elementwise_scale<double>>, nn::named<"nin_shortcut", elementwise_scale<double>>>,
                   nn::residual<elementwise_scale<double>, elementwise_scale<double>>>
        net;
    std::vector<std::string> names;
    for (auto& [name, p] : nn::named_parameters(net)) names.push_back(name);
    const std::vector<std::string> expected{"conv1.weight", "1.0.weight",           "1.2.weight", "2.body.weight",
                                            "2.nin_shortcut.weight", "3.weight", "3.shortcut.weight"};
    BOOST_TEST(names == expected, boost::test_tools::per_element());
    BOOST_TEST(nn::parameter_count(net) == 7 * 4);
}

BOOST_AUTO_TEST_CASE(zero_grad_clears_every_gradient) {
    nn::sequential<elementwise_scale<double>, nn::silu<double>, elementwise_scale<double>> net;
    auto x = random_tensor<double>({2, 4}, 1);
    auto y = net.forward(x);
    (void)net.backward(y);
    double before = 0;
    for (auto& [name, p] : nn::named_parameters(net)) before += std::abs(p->grad.at(0));
    BOOST_TEST(before > 0.0);
    nn::zero_grad(net);
    for (auto& [name, p] : nn::named_parameters(net))
        for (auto g : p->grad.span()) BOOST_TEST(g == 0.0);
}

// A sequential owns its children's outputs, the inputs its next children keep views of; backward
// releases each once the child that made it and the one that read it have run backward, and each
// gradient once its child has used it, as PyTorch's autograd frees what it saved. The allocator's
// live bytes show what is still held.
BOOST_AUTO_TEST_CASE(sequential_backward_releases_its_activations) {
    nn::sequential<nn::silu<float>, nn::silu<float>, nn::silu<float>, nn::silu<float>> net;
    const auto x = random_tensor<float>({4, 1 << 14}, 1);  // 256 KiB per tensor
    const std::size_t one = std::size_t(x.numel()) * sizeof(float);
    const auto live = [] { return memory<cpu>::stats().live; };
    const std::size_t before = live();
    const auto y = net.forward(x);
    BOOST_TEST(live() - before == 4 * one);  // 3 kept activations and y
    const auto dy = random_tensor<float>(y.shape(), 2);
    memory<cpu>::reset_peak();
    const auto dx = net.backward(dy);
    BOOST_TEST(live() - before == 3 * one);  // y, dy and dx: no activation is left
    // Never more than two gradients besides dy (the chain of the four used to hold all four).
    BOOST_TEST(memory<cpu>::stats().peak_live - before <= 7 * one);

    // A second backward of the same forward is an error naming the layer.
    try {
        (void)net.backward(dy);
        BOOST_FAIL("expected std::logic_error");
    } catch (const std::logic_error& e) {
        const std::string msg = e.what();
        BOOST_TEST(msg.find("silu: backward already ran") != std::string::npos, msg);
    }

    // Under nn::retain_graph nothing is released, and the forward serves several backward passes.
    const auto y2 = net.forward(x);
    {
        nn::retain_graph keep;
        const auto first = net.backward(dy);
        const auto second = net.backward(dy);
        BOOST_TEST(first.to_vector() == second.to_vector());
        BOOST_TEST(first.to_vector() == dx.to_vector());
    }
    BOOST_TEST(live() - before == 7 * one);  // y, dy, dx, y2 and the 3 activations still kept for y2
}

BOOST_AUTO_TEST_CASE(identity_residual_rejects_shape_change) {
    struct widen : nn::parameterless {
        using value_type = double;
        using device_type = cpu;
        tensor<double> forward(const tensor_view<double>& x) { return tensor<double>::zeros({x.dim(0), x.dim(1) + 1}); }
        tensor<double> backward(const tensor_view<double>& dy) { return tensor<double>::copy_of(dy); }
    };
    nn::residual<widen> r;
    auto x = tensor<double>::zeros({2, 3});
    try {
        (void)r.forward(x);
        BOOST_FAIL("expected shape_error");
    } catch (const shape_error& e) {
        const std::string msg = e.what();
        BOOST_TEST(msg.find("residual") != std::string::npos);
        BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
        BOOST_TEST(msg.find("(2, 4)") != std::string::npos);
    }
}

BOOST_AUTO_TEST_SUITE_END()
