#pragma once
// nn::conv2d: torch.nn.Conv2d on NCHW tensors (weight (out, in, k, k), bias (out)), with padding
// per side so that LDM's asymmetric Downsample pad is a config value.
#include <cstdint>
#include <string>

#include "vediff/nn/layer.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/ops/conv.hpp"

namespace vediff::nn {

struct conv2d_config {
    std::int64_t in_channels = 0;
    std::int64_t out_channels = 0;
    std::int64_t kernel_size = 3;  // square kernels, as in every reference model
    std::int64_t stride = 1;
    ops::padding2d padding{};      // (top, bottom, left, right); ops::padding2d::symmetric(p)
    bool bias = true;
};

/// P: the precision policy of the convolution's products (core/precision.hpp); parameters and
/// their gradients are T (fp32 master weights) under every policy.
template <class T = float, device D = cpu, precision_policy P = fp32>
struct conv2d {
    using value_type = T;
    using device_type = D;
    using precision = P;

    parameter<T, D> weight;  // (out, in, k, k)
    parameter<T, D> bias;    // (out), absent (empty) when config.bias is false
    conv2d_config config;

    conv2d() = default;
    /// PyTorch's default init with fan_in = in·k·k, drawn as nn::initialize(*this, seed) draws it.
    explicit conv2d(const conv2d_config& c, std::uint64_t seed = 0)
        : weight(make_parameter<T, D>({c.out_channels, c.in_channels, c.kernel_size, c.kernel_size},
                                      init_rule::uniform(default_init_bound(c.in_channels * c.kernel_size * c.kernel_size)),
                                      parameter_key(seed, "weight"))),
          config(c) {
        if (c.bias)
            bias = make_parameter<T, D>({c.out_channels},
                                        init_rule::uniform(default_init_bound(c.in_channels * c.kernel_size * c.kernel_size)),
                                        parameter_key(seed, "bias"));
    }

    bool has_bias() const { return bias.value.data() != nullptr; }
    ops::conv2d_options options() const { return {config.stride, config.padding}; }

    /// x (N, in, H, W) → (N, out, Ho, Wo).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        input_ = record_.keep() ? x : tensor_view<T, D>{};
        return ops::conv2d<P>(x, weight.value.view(), bias.value.view(), options());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("conv2d");
        auto dx = ops::conv2d_backward<P>(dy, input_, weight.value.view(), weight.grad.view(), bias.grad.view(), options());
        if (release) input_ = {};
        return dx;
    }

    /// ∂L/∂weight for the output gradient dy alone, as a new tensor; the accumulated gradients are
    /// untouched (LDM's adaptive GAN weight compares two such gradients of one layer). Needs the
    /// input of the last forward, as backward does: call it before backward, which releases that input.
    tensor<T, D> weight_gradient(const tensor_view<T, D>& dy) const {
        record_.require("conv2d");
        auto dweight = tensor<T, D>::zeros(weight.value.shape());
        (void)ops::conv2d_backward<P>(dy, input_, weight.value.view(), dweight.view(), tensor_view<T, D>{}, options());
        return dweight;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
        if (has_bias()) f(join_name(prefix, "bias"), bias);
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (N, in, H, W), owned by the caller
};

} // namespace vediff::nn
