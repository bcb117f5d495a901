#pragma once
// The layer contract. A layer is a small struct with
//   tensor forward(const tensor_view& x)   computes y and caches what backward needs;
//   tensor backward(const tensor_view& dy) accumulates (+=) parameter gradients, returns dx;
//   for_each_parameter(visitor, prefix)    visits (name, parameter&) in PyTorch state_dict order.
// Forward may keep a *view* of its input for backward: the caller keeps x alive until backward
// returns (containers own their intermediate activations, so this only concerns the caller's x).
// So that this cannot be got wrong silently, every layer deletes forward(tensor&&): passing a
// temporary (`fc.forward(ops::add(a, b))`) is a compile error, and the concept checks the deletion.
// Under nn::no_grad (nn/grad_mode.hpp) forward keeps nothing, and backward then throws.
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vediff/core/tensor.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::nn {

/// How a parameter's initial values are drawn (nn/init.hpp): U(−scale, scale), N(0, scale²), the
/// constant `scale`, or `none` (values set by their layer, e.g. fixed sin-cos tables).
struct init_rule {
    enum class distribution { none, uniform, normal, constant };
    distribution kind = distribution::none;
    double scale = 0;
    double mean = 0;  // normal only: N(mean, scale²) (taming's BatchNorm weights: N(1, 0.02²))

    static constexpr init_rule uniform(double bound) { return {distribution::uniform, bound}; }
    static constexpr init_rule normal(double stddev, double mean = 0) { return {distribution::normal, stddev, mean}; }
    static constexpr init_rule constant(double value) { return {distribution::constant, value}; }
};

/// A trainable tensor and its gradient, of the same shape.
template <class T, device D>
struct parameter {
    tensor<T, D> value;
    tensor<T, D> grad;
    /// False for fixed buffers kept in the state_dict (e.g. sin-cos position tables).
    bool trainable = true;
    /// The rule nn::initialize redraws the value by.
    init_rule init;

    parameter() = default;
    explicit parameter(tensor_shape shape, bool is_trainable = true)
        : value(tensor<T, D>::zeros(shape)), grad(tensor<T, D>::zeros(shape)), trainable(is_trainable) {}
    const tensor_shape& shape() const { return value.shape(); }
};

/// "prefix.name", or just "name" at the top level.
inline std::string join_name(std::string_view prefix, std::string_view name) {
    if (prefix.empty()) return std::string(name);
    if (name.empty()) return std::string(prefix);
    std::string s;
    s.reserve(prefix.size() + 1 + name.size());
    s.append(prefix).append(".").append(name);
    return s;
}

namespace detail {
struct any_parameter_visitor {
    template <class P>
    void operator()(const std::string&, P&) const {}
};
} // namespace detail

template <class L>
concept layer = requires(L& l, const tensor_view<typename L::value_type, typename L::device_type>& x) {
    typename L::value_type;
    typename L::device_type;
    { l.forward(x) } -> std::same_as<tensor<typename L::value_type, typename L::device_type>>;
    { l.backward(x) } -> std::same_as<tensor<typename L::value_type, typename L::device_type>>;
    l.for_each_parameter(detail::any_parameter_visitor{}, std::string{});
} && !requires(L& l, tensor<typename L::value_type, typename L::device_type>&& t) { l.forward(std::move(t)); };

/// Layers whose behaviour differs between training and evaluation (dropout) expose train(bool).
template <class L>
concept has_train_mode = requires(L& l) { l.train(true); };

template <class L>
void set_training(L& l, bool training) {
    if constexpr (has_train_mode<L>) l.train(training);
}

/// Sets every parameter gradient of a layer to zero.
template <class L>
void zero_grad(L& l) {
    using T = typename L::value_type;
    l.for_each_parameter([](const std::string&, auto& p) { ops::fill(p.grad.view(), T(0)); }, std::string{});
}

/// Number of scalar parameters (trainable or not) of a layer.
template <class L>
std::int64_t parameter_count(L& l) {
    std::int64_t n = 0;
    l.for_each_parameter([&](const std::string&, auto& p) { n += p.value.numel(); }, std::string{});
    return n;
}

/// (name, parameter*) for every parameter, in visiting order.
template <class L>
auto named_parameters(L& l) {
    using P = parameter<typename L::value_type, typename L::device_type>;
    std::vector<std::pair<std::string, P*>> out;
    l.for_each_parameter([&](const std::string& name, P& p) { out.emplace_back(name, &p); }, std::string{});
    return out;
}

/// A layer without parameters gets this for_each_parameter by inheriting from it.
struct parameterless {
    template <class F>
    void for_each_parameter(F&&, const std::string& = {}) {}
};

} // namespace vediff::nn
