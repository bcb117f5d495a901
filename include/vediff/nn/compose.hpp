#pragma once
// Compile-time composition: sequential<L...>, residual<Body, Shortcut>, and named<"name", L>.
// Forward and backward of a composite are derived from its parts; parameter names follow
// PyTorch's state_dict conventions: children of a sequential are "0", "1", ... (every child
// counts, as in nn.Sequential) unless a child is named<"...">.
#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::nn {

/// A string usable as a template argument: named<"conv1", conv2d<>>.
template <std::size_t N>
struct fixed_string {
    char chars[N]{};
    constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, chars); }
    constexpr std::string_view view() const { return {chars, N - 1}; }
};

/// A layer that carries the name its container gives it in parameter names.
template <fixed_string Name, class Layer>
struct named : Layer {
    static constexpr std::string_view child_name = Name.view();
    named() = default;
    named(Layer l) : Layer(std::move(l)) {}
    using Layer::Layer;
};

namespace detail {
template <class L>
concept has_child_name = requires { L::child_name; };

template <class L>
std::string child_name(std::size_t index) {
    if constexpr (has_child_name<L>) return std::string(L::child_name);
    else return std::to_string(index);
}
} // namespace detail

template <class First, class... Rest>
struct sequential {
    using value_type = typename First::value_type;
    using device_type = typename First::device_type;
    using tensor_type = tensor<value_type, device_type>;
    using view_type = tensor_view<value_type, device_type>;
    static constexpr std::size_t size = 1 + sizeof...(Rest);
    static_assert((std::same_as<typename Rest::value_type, value_type> && ...), "sequential: all layers need one value type");
    static_assert((std::same_as<typename Rest::device_type, device_type> && ...), "sequential: all layers need one device");

    std::tuple<First, Rest...> layers;

    sequential() = default;
    explicit sequential(First first, Rest... rest) : layers(std::move(first), std::move(rest)...) {}

    template <std::size_t I>
    auto& get() { return std::get<I>(layers); }
    template <std::size_t I>
    const auto& get() const { return std::get<I>(layers); }

    tensor_type forward(tensor_type&&) = delete;  // inputs must outlive backward: temporaries rejected

    tensor_type forward(const view_type& x) { return forward_from<0>(x); }

    /// Releases each activation it owns once the child that produced it and the one that read it
    /// have run backward (nn/grad_mode.hpp), and each child's output gradient once the child has used it.
    tensor_type backward(const view_type& dy) {
        auto d = std::get<size - 1>(layers).backward(dy);
        if constexpr (size > 1) backward_through<size - 2>(d);
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        visit_children(f, prefix, std::make_index_sequence<size>{});
    }

    void train(bool training) {
        std::apply([&](auto&... l) { (set_training(l, training), ...); }, layers);
    }

private:
    template <std::size_t I>
    tensor_type forward_from(const view_type& x) {
        if constexpr (I + 1 == size) {
            return std::get<I>(layers).forward(x);
        } else if (!grad_enabled()) {  // nothing kept for backward: each activation dies after its reader
            activations_[I] = tensor_type{};
            const auto y = std::get<I>(layers).forward(x);
            return forward_from<I + 1>(y);
        } else {
            activations_[I] = std::get<I>(layers).forward(x);
            return forward_from<I + 1>(activations_[I]);
        }
    }
    // d holds the gradient of child I's output on entry, of the sequential's input on return.
    template <std::size_t I>
    void backward_through(tensor_type& d) {
        d = std::get<I>(layers).backward(d);  // the assignment releases the gradient the child has read
        if (backward_releases()) activations_[I] = tensor_type{};  // read by child I + 1, made by child I: both done
        if constexpr (I > 0) backward_through<I - 1>(d);
    }
    template <class F, std::size_t... I>
    void visit_children(F& f, const std::string& prefix, std::index_sequence<I...>) {
        (std::get<I>(layers).for_each_parameter(
             f, join_name(prefix, detail::child_name<std::tuple_element_t<I, std::tuple<First, Rest...>>>(I))),
         ...);
    }

    // Output of child I, the input child I + 1 caches for its backward.
    std::array<tensor_type, size - 1> activations_;
};

/// y = body(x) + shortcut(x). The body's parameters keep their own names (a residual is a
/// connection, not a module in the reference models); the shortcut's are under "shortcut"
/// unless it is named<"...">.
template <class Body, class Shortcut = identity<typename Body::value_type, typename Body::device_type>>
struct residual {
    using value_type = typename Body::value_type;
    using device_type = typename Body::device_type;
    using tensor_type = tensor<value_type, device_type>;
    using view_type = tensor_view<value_type, device_type>;
    static constexpr bool identity_shortcut = std::same_as<Shortcut, identity<value_type, device_type>>;

    Body body;
    Shortcut shortcut;

    residual() = default;
    explicit residual(Body b, Shortcut s = Shortcut{}) : body(std::move(b)), shortcut(std::move(s)) {}

    tensor_type forward(tensor_type&&) = delete;  // inputs must outlive backward: temporaries rejected

    tensor_type forward(const view_type& x) {
        auto y = body.forward(x);
        if constexpr (identity_shortcut) {
            if (!(y.shape() == x.shape()))
                throw shape_error(fmt::format("residual: body maps {} to {}, an identity shortcut needs equal shapes", x.shape(), y.shape()));
            ops::axpy(y.view(), x);
        } else {
            auto s = shortcut.forward(x);
            ops::axpy(y.view(), s.view());
        }
        return y;
    }

    tensor_type backward(const view_type& dy) {
        auto dx = body.backward(dy);
        if constexpr (identity_shortcut) {
            ops::axpy(dx.view(), dy);
        } else {
            auto ds = shortcut.backward(dy);
            ops::axpy(dx.view(), ds.view());
        }
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if constexpr (detail::has_child_name<Body>) body.for_each_parameter(f, join_name(prefix, Body::child_name));
        else body.for_each_parameter(f, prefix);
        if constexpr (detail::has_child_name<Shortcut>) shortcut.for_each_parameter(f, join_name(prefix, Shortcut::child_name));
        else shortcut.for_each_parameter(f, join_name(prefix, "shortcut"));
    }

    void train(bool training) {
        set_training(body, training);
        set_training(shortcut, training);
    }
};

} // namespace vediff::nn
