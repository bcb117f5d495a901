#pragma once
// Finite-difference gradient checks for ops and layers (after dlib's test_layer): the scalar
// L = <forward(x), r> for a fixed random r is differentiated by central differences and compared
// with the analytic gradients. Parameter gradients are pre-filled with random values first, so
// the check proves that backward *accumulates* into them (a missing or overwriting write fails).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::testing {

/// Host tensor of N(0, scale²) values from Philox (seed, stream).
template <class T>
tensor<T, cpu> random_tensor(tensor_shape shape, std::uint64_t seed, std::uint64_t stream = 0, double scale = 1.0) {
    auto t = tensor<T, cpu>::empty(shape);
    for (std::int64_t i = 0; i < t.numel(); ++i)
        t.data()[i] = static_cast<T>(scale * philox_normal<double>(seed, stream, 0, static_cast<std::uint64_t>(i)));
    return t;
}

template <class T>
double dot(const tensor_view<T, cpu>& a, const tensor_view<T, cpu>& b) {
    double s = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) s += double(a.data()[i]) * double(b.data()[i]);
    return s;
}

/// ‖a − b‖ / max(‖a‖, ‖b‖, floor): the norm-wise relative error of two gradients.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b, double floor = 1e-12) {
    double diff = 0, na = 0, nb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff += (a[i] - b[i]) * (a[i] - b[i]);
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return std::sqrt(diff) / std::max({std::sqrt(na), std::sqrt(nb), floor});
}

template <class T>
struct gradcheck_options {
    double tolerance = std::is_same_v<T, double> ? 1e-6 : 1e-2;
    double epsilon = std::is_same_v<T, double> ? 1e-6 : 1e-2;
    std::int64_t max_elements = 4000;  // elements probed per tensor (evenly spaced beyond this)
    std::uint64_t seed = 7;
};

/// Numerical gradient of loss() with respect to the elements of t (probed subset), and the indices.
template <class T>
std::vector<double> numeric_gradient(const tensor_view<T, cpu>& t, const std::function<double()>& loss,
                                     const std::vector<std::int64_t>& probes, double eps) {
    std::vector<double> g;
    g.reserve(probes.size());
    for (auto i : probes) {
        const T saved = t.data()[i];
        t.data()[i] = static_cast<T>(saved + eps);
        const double up = loss();
        t.data()[i] = static_cast<T>(saved - eps);
        const double down = loss();
        t.data()[i] = saved;
        // Divide by the step actually taken (it differs from 2·eps after rounding in float).
        const double step = double(static_cast<T>(saved + eps)) - double(static_cast<T>(saved - eps));
        g.push_back((up - down) / step);
    }
    return g;
}

inline std::vector<std::int64_t> probe_indices(std::int64_t n, std::int64_t max_elements) {
    std::vector<std::int64_t> idx;
    const std::int64_t stride = std::max<std::int64_t>(1, (n + max_elements - 1) / max_elements);
    for (std::int64_t i = 0; i < n; i += stride) idx.push_back(i);
    return idx;
}

template <class T>
std::vector<double> gather(const tensor_view<T, cpu>& t, const std::vector<std::int64_t>& probes, const T* minus = nullptr) {
    std::vector<double> v;
    v.reserve(probes.size());
    for (auto i : probes) v.push_back(double(t.data()[i]) - (minus ? double(minus[i]) : 0.0));
    return v;
}

/// The inputs of an op under check_op_gradients, and the gradients its backward returns.
template <class T>
using op_inputs = std::vector<tensor_view<T, cpu>>;
template <class T>
using op_gradients = std::vector<tensor<T, cpu>>;

/// The gradients of a one-input op.
template <class T>
op_gradients<T> single_gradient(tensor<T, cpu> g) {
    op_gradients<T> out;
    out.push_back(std::move(g));
    return out;
}

/// Checks d<forward(inputs), r>/d inputs of an op against backward(dy, inputs), which returns one
/// gradient per input (an empty tensor for an input without gradient).
template <class T>
void check_op_gradients(const std::string& name,
                        const std::function<tensor<T, cpu>(const std::vector<tensor_view<T, cpu>>&)>& forward,
                        const std::function<std::vector<tensor<T, cpu>>(const tensor_view<T, cpu>&, const std::vector<tensor_view<T, cpu>>&)>& backward,
                        const std::vector<tensor_view<T, cpu>>& inputs, gradcheck_options<T> opt = {}) {
    auto y = forward(inputs);
    auto r = random_tensor<T>(y.shape(), opt.seed, 99);
    auto grads = backward(r, inputs);
    BOOST_REQUIRE_EQUAL(grads.size(), inputs.size());
    const std::function<double()> loss = [&] { return dot<T>(forward(inputs), r); };
    for (std::size_t k = 0; k < inputs.size(); ++k) {
        if (!grads[k].defined() && inputs[k].numel() > 0) continue;  // an input without gradient
        BOOST_TEST_CONTEXT(name << ": gradient of input " << k << " " << inputs[k].shape().to_string()) {
            BOOST_REQUIRE(grads[k].shape() == inputs[k].shape());
            const auto probes = probe_indices(inputs[k].numel(), opt.max_elements);
            const auto numeric = numeric_gradient<T>(inputs[k], loss, probes, opt.epsilon);
            const double err = relative_error(gather<T>(grads[k], probes), numeric);
            BOOST_TEST(err < opt.tolerance, name << " input " << k << ": relative error " << err);
        }
    }
}

/// Checks a layer's input gradient and every trainable parameter gradient.
/// `reset` runs before each forward (e.g. to rewind a dropout generator).
template <class Layer, class T = typename Layer::value_type>
void check_layer_gradients(const std::string& name, Layer& layer, tensor_shape input_shape,
                           gradcheck_options<T> opt = {}, const std::function<void()>& reset = {},
                           double input_scale = 1.0) {
    auto x = random_tensor<T>(input_shape, opt.seed, 1, input_scale);
    if (reset) reset();
    auto y = layer.forward(x);
    auto r = random_tensor<T>(y.shape(), opt.seed, 2);

    // Random pre-fill: the analytic gradient is (grad after backward) − (pre-fill).
    std::vector<std::pair<std::string, nn::parameter<T, cpu>*>> params = nn::named_parameters(layer);
    std::vector<tensor<T, cpu>> prefill;
    std::uint64_t stream = 10;
    for (auto& [pname, p] : params) {
        prefill.push_back(random_tensor<T>(p->grad.shape(), opt.seed, stream++));
        ops::copy(p->grad.view(), prefill.back().view());
    }
    auto dx = layer.backward(r);
    BOOST_REQUIRE(dx.shape() == x.shape());

    const std::function<double()> loss = [&] {
        if (reset) reset();
        return dot<T>(layer.forward(x), r);
    };
    {
        const auto probes = probe_indices(x.numel(), opt.max_elements);
        const auto numeric = numeric_gradient<T>(x, loss, probes, opt.epsilon);
        const double err = relative_error(gather<T>(dx, probes), numeric);
        BOOST_TEST(err < opt.tolerance, name << " input gradient: relative error " << err);
    }
    for (std::size_t k = 0; k < params.size(); ++k) {
        auto& [pname, p] = params[k];
        if (!p->trainable) continue;
        const auto probes = probe_indices(p->value.numel(), opt.max_elements);
        const auto numeric = numeric_gradient<T>(p->value, loss, probes, opt.epsilon);
        const double err = relative_error(gather<T>(p->grad, probes, prefill[k].data()), numeric);
        BOOST_TEST(err < opt.tolerance, name << " gradient of " << pname << ": relative error " << err);
    }
}

/// Fills every parameter of a layer with N(0, scale²) values (tests want non-trivial parameters).
template <class Layer>
void randomize_parameters(Layer& layer, std::uint64_t seed, double scale = 0.5) {
    using T = typename Layer::value_type;
    std::uint64_t stream = 1000;
    layer.for_each_parameter([&](const std::string&, nn::parameter<T, cpu>& p) {
        auto r = random_tensor<T>(p.value.shape(), seed, stream++, scale);
        ops::copy(p.value.view(), r.view());
    }, std::string{});
}

} // namespace vediff::testing

namespace vediff::testing {

/// check_layer_gradients for a conditioned layer (nn/conditioned.hpp): the gradients of x, of c
/// (accumulated into a pre-filled dc) and of every trainable parameter.
template <class Layer, class T = typename Layer::value_type>
void check_conditioned_layer_gradients(const std::string& name, Layer& layer, tensor_shape x_shape, tensor_shape c_shape,
                                       gradcheck_options<T> opt = {}) {
    auto x = random_tensor<T>(x_shape, opt.seed, 1);
    auto c = random_tensor<T>(c_shape, opt.seed, 3);
    auto y = layer.forward(x, c);
    auto r = random_tensor<T>(y.shape(), opt.seed, 2);
    auto params = nn::named_parameters(layer);
    std::vector<tensor<T, cpu>> prefill;
    std::uint64_t stream = 10;
    for (auto& [pname, p] : params) {
        prefill.push_back(random_tensor<T>(p->grad.shape(), opt.seed, stream++));
        ops::copy(p->grad.view(), prefill.back().view());
    }
    const auto dc_prefill = random_tensor<T>(c_shape, opt.seed, 4);
    auto dc = dc_prefill.clone();
    auto dx = layer.backward(r, dc);
    BOOST_REQUIRE(dx.shape() == x.shape());
    const std::function<double()> loss = [&] { return dot<T>(layer.forward(x, c), r); };
    const auto check = [&](const std::string& what, const tensor_view<T, cpu>& value, const tensor_view<T, cpu>& grad, const T* minus) {
        const auto probes = probe_indices(value.numel(), opt.max_elements);
        const auto numeric = numeric_gradient<T>(value, loss, probes, opt.epsilon);
        const double err = relative_error(gather<T>(grad, probes, minus), numeric);
        BOOST_TEST(err < opt.tolerance, name << " gradient of " << what << ": relative error " << err);
    };
    check("x", x, dx, nullptr);
    check("c", c, dc, dc_prefill.data());
    for (std::size_t k = 0; k < params.size(); ++k)
        if (params[k].second->trainable) check(params[k].first, params[k].second->value, params[k].second->grad, prefill[k].data());
}

} // namespace vediff::testing
