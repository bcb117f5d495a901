#pragma once
// nn::linear: y = x·Wᵀ + b over the last axis, as torch.nn.Linear (weight (out, in), bias (out)).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vediff/core/random.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/gemm.hpp"

namespace vediff::nn {

/// A parameter of the given shape drawn from U(−bound, bound) with Philox (seed, stream): the
/// values depend on the seed only, not on the device or thread count.
template <class T, device D>
parameter<T, D> uniform_parameter(tensor_shape shape, double bound, std::uint64_t seed, std::uint64_t stream) {
    std::vector<T> host(static_cast<std::size_t>(shape.numel()));
    for (std::size_t i = 0; i < host.size(); ++i)
        host[i] = static_cast<T>(bound * (2.0 * philox_uniform<double>(seed, stream, 0, i) - 1.0));
    parameter<T, D> p(shape);
    p.value = tensor<T, D>::from_host(shape, std::span<const T>(host));
    return p;
}

/// PyTorch's default init for Linear and Conv2d: kaiming_uniform_(a = √5) on the weight gives
/// U(−1/√fan_in, 1/√fan_in), and the bias uses the same bound.
inline double default_init_bound(std::int64_t fan_in) { return fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0; }

template <class T = float, device D = cpu>
struct linear {
    using value_type = T;
    using device_type = D;

    parameter<T, D> weight;  // (out, in)
    parameter<T, D> bias;    // (out), absent (empty) when constructed without bias

    linear() = default;
    /// Weight from Philox stream 0 of `seed`, bias from stream 1.
    linear(std::int64_t in_features, std::int64_t out_features, bool with_bias = true, std::uint64_t seed = 0)
        : weight(uniform_parameter<T, D>({out_features, in_features}, default_init_bound(in_features), seed, 0)) {
        if (with_bias) bias = uniform_parameter<T, D>({out_features}, default_init_bound(in_features), seed, 1);
    }

    std::int64_t in_features() const { return weight.value.dim(1); }
    std::int64_t out_features() const { return weight.value.dim(0); }
    bool has_bias() const { return bias.value.data() != nullptr; }

    /// x (..., in) → (..., out).
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = x;
        return ops::linear(x, weight.value.view(), bias.value.view());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        return ops::linear_backward(dy, input_, weight.value.view(), weight.grad.view(), bias.grad.view());
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
        if (has_bias()) f(join_name(prefix, "bias"), bias);
    }

private:
    tensor_view<T, D> input_;  // (..., in), owned by the caller
};

} // namespace vediff::nn
