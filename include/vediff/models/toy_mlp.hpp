#pragma once
// The multilayer perceptron of the toy experiment: Linear → SiLU → … → Linear, with a depth and
// width chosen at run time (so a toy run can be resized without recompiling). Parameters are named
// as PyTorch's nn.Sequential(Linear, SiLU, …, Linear) names them: "0.weight", "2.weight", ….
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/activation.hpp"

namespace vediff::models {

struct toy_mlp_config {
    std::int64_t in_features = 2;
    std::int64_t hidden = 128;
    std::int64_t hidden_layers = 2;  // SiLU-activated layers of `hidden` units
    std::int64_t out_features = 2;
};

template <class T = float, device D = cpu>
struct toy_mlp {
    using value_type = T;
    using device_type = D;

    std::vector<nn::linear<T, D>> layers;  // hidden_layers + 1 of them

    toy_mlp() = default;
    /// PyTorch's default Linear init, drawn from (seed, full parameter name).
    explicit toy_mlp(const toy_mlp_config& cfg, std::uint64_t seed = 0) {
        if (cfg.in_features < 1 || cfg.out_features < 1 || cfg.hidden < 1 || cfg.hidden_layers < 0)
            throw std::invalid_argument(fmt::format("toy_mlp: in {}, hidden {} × {} layers, out {}: sizes must be positive",
                                                    cfg.in_features, cfg.hidden, cfg.hidden_layers, cfg.out_features));
        std::int64_t in = cfg.in_features;
        for (std::int64_t i = 0; i < cfg.hidden_layers; ++i, in = cfg.hidden) layers.emplace_back(in, cfg.hidden);
        layers.emplace_back(in, cfg.out_features);
        nn::initialize(*this, seed);
    }

    std::int64_t in_features() const { return layers.front().in_features(); }
    std::int64_t out_features() const { return layers.back().out_features(); }

    /// x (B, in) → (B, out).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (layers.empty()) throw std::logic_error("toy_mlp::forward: the MLP has no layers (default-constructed)");
        if (x.rank() != 2 || x.dim(1) != in_features())
            throw shape_error(fmt::format("toy_mlp::forward: input {} must be (B, {})", x.shape(), in_features()));
        const std::size_t hidden = layers.size() - 1;
        pre_.resize(hidden);
        post_.resize(hidden);
        tensor_view<T, D> h = x;
        for (std::size_t i = 0; i < hidden; ++i) {
            pre_[i] = layers[i].forward(h);
            post_[i] = ops::silu(pre_[i].view());  // the input layer i + 1 keeps a view of
            h = post_[i].view();
        }
        return layers.back().forward(h);
    }

    /// Accumulates every parameter gradient; returns dx (B, in).
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        auto d = layers.back().backward(dy);
        for (std::size_t i = layers.size() - 1; i-- > 0;) {
            auto da = ops::silu_backward(d.view(), pre_[i].view());
            d = layers[i].backward(da.view());
        }
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        // nn.Sequential counts the SiLUs too: the linears are children 0, 2, 4, …
        for (std::size_t i = 0; i < layers.size(); ++i) layers[i].for_each_parameter(f, nn::join_name(prefix, std::to_string(2 * i)));
    }

private:
    std::vector<tensor<T, D>> pre_;   // (B, hidden) each: linear outputs, SiLU's backward needs them
    std::vector<tensor<T, D>> post_;  // (B, hidden) each: SiLU outputs, the next linear's inputs
};

} // namespace vediff::models
