#pragma once
// The toy experiment's flow-matching model: an MLP v(x, t) on [x | timestep_embedding(scale·t)].
// Times t ∈ [0, 1] (diffusion/flow_matching.hpp's clock) are multiplied by time_scale = 1000
// before the sinusoidal embedding, DiT's convention: with t fed unscaled, the angles t·f_k stay
// below 1 radian for every frequency and the embedding is nearly linear in t, leaving a small
// MLP little to tell the noise end from the data end with.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/models/toy_mlp.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/positional.hpp"

namespace vediff::models {

struct toy_velocity_config {
    std::int64_t dim = 2;         // of x and of v
    std::int64_t time_dim = 32;   // sinusoidal features of t (even)
    double time_scale = 1000.0;
    std::int64_t hidden = 128;
    std::int64_t hidden_layers = 3;
};

template <class T = float, device D = cpu>
struct toy_velocity {
    using value_type = T;
    using device_type = D;

    toy_velocity_config config;
    toy_mlp<T, D> net;  // dim + time_dim → dim

    toy_velocity() = default;
    explicit toy_velocity(const toy_velocity_config& c, std::uint64_t seed = 0)
        : config(c), net({.in_features = c.dim + c.time_dim, .hidden = c.hidden, .hidden_layers = c.hidden_layers, .out_features = c.dim}) {
        if (c.time_dim < 2 || c.time_dim % 2 != 0)
            throw std::invalid_argument(fmt::format("toy_velocity: time_dim {} must be even and at least 2", c.time_dim));
        nn::initialize(*this, seed);
    }

    /// x (B, dim), t (B) → v (B, dim). t is used here only, so it may be a temporary.
    tensor<T, D> forward(tensor<T, D>&&, const tensor_view<T, D>&) = delete;  // x must outlive backward
    tensor<T, D> forward(const tensor_view<T, D>& x, const tensor_view<T, D>& t) {
        if (x.rank() != 2 || x.dim(1) != config.dim || t.rank() != 1 || t.dim(0) != x.dim(0))
            throw shape_error(fmt::format("toy_velocity::forward: x {} must be (B, {}) and t {} must be (B)", x.shape(), config.dim,
                                          t.shape()));
        const auto scaled = ops::scale(t, T(config.time_scale));
        const auto embedding = ops::timestep_embedding(scaled.view(), config.time_dim);
        input_ = ops::concat<T, D>({x, embedding.view()}, 1);  // (B, dim + time_dim)
        return net.forward(input_);
    }

    /// dv (B, dim) → dx (B, dim); accumulates the MLP's gradients (t gets none).
    tensor<T, D> backward(const tensor_view<T, D>& dv) {
        auto dinput = net.backward(dv);
        auto parts = ops::concat_backward(dinput.view(), {config.dim, config.time_dim}, 1);
        return std::move(parts[0]);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        net.for_each_parameter(f, nn::join_name(prefix, "net"));
    }

private:
    tensor<T, D> input_;  // (B, dim + time_dim), the MLP's input
};

} // namespace vediff::models
