#pragma once
// nn::linear: y = x·Wᵀ + b over the last axis, as torch.nn.Linear (weight (out, in), bias (out)).
// P is the precision policy of its products (core/precision.hpp): under bf16_mixed the forward and
// both backward products round their operands to bfloat16 and accumulate in fp32, while weight,
// bias and their gradients stay fp32.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/gemm.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu, precision_policy P = fp32>
struct linear {
    using value_type = T;
    using device_type = D;
    using precision = P;

    parameter<T, D> weight;  // (out, in)
    parameter<T, D> bias;    // (out), absent (empty) when constructed without bias

    linear() = default;
    /// PyTorch's default init, drawn as nn::initialize(*this, seed) draws it.
    linear(std::int64_t in_features, std::int64_t out_features, bool with_bias = true, std::uint64_t seed = 0)
        : weight(make_parameter<T, D>({out_features, in_features}, init_rule::uniform(default_init_bound(in_features)),
                                      parameter_key(seed, "weight"))) {
        if (with_bias)
            bias = make_parameter<T, D>({out_features}, init_rule::uniform(default_init_bound(in_features)), parameter_key(seed, "bias"));
    }

    std::int64_t in_features() const { return weight.value.dim(1); }
    std::int64_t out_features() const { return weight.value.dim(0); }
    bool has_bias() const { return bias.value.data() != nullptr; }

    /// x (..., in) → (..., out).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::linear<P>(x, weight.value.view(), bias.value.view());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("linear");
        auto dx = ops::linear_backward<P>(dy, input_, weight.value.view(), weight.grad.view(), bias.grad.view());
        if (release) input_ = {};
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
        if (has_bias()) f(join_name(prefix, "bias"), bias);
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (..., in), owned by the caller
};

} // namespace vediff::nn
