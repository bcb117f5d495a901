#pragma once
// nn::batch_norm2d: torch.nn.BatchNorm2d (eps 1e-5, momentum 0.1, affine, running statistics),
// the norm of taming-transformers' PatchGAN discriminator. In training mode it normalizes each
// channel with the batch's own mean and biased variance and moves the running statistics toward
// the batch's (variance unbiased), counting num_batches_tracked; in evaluation mode
// (train(false)) it uses the running statistics. The running statistics are fixed parameters
// named as PyTorch's buffers (`running_mean`, `running_var`, `num_batches_tracked`), so they are
// saved and loaded with the weights; num_batches_tracked is stored as a float scalar (PyTorch's
// int64 loads into it and back, exactly up to 2^24 batches).
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/grad_mode.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/batch_norm.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct batch_norm2d {
    using value_type = T;
    using device_type = D;
    struct config {
        std::int64_t channels = 0;
        double eps = 1e-5;
        double momentum = 0.1;
    };

    config cfg;
    parameter<T, D> weight;               // (C), 1
    parameter<T, D> bias;                 // (C), 0
    parameter<T, D> running_mean;         // (C), 0, fixed
    parameter<T, D> running_var;          // (C), 1, fixed
    parameter<T, D> num_batches_tracked;  // (), 0, fixed

    batch_norm2d() = default;
    explicit batch_norm2d(config c) : cfg(c) {
        if (cfg.channels <= 0) throw shape_error(fmt::format("batch_norm2d: {} channels", cfg.channels));
        if (!(cfg.eps > 0) || !(cfg.momentum >= 0 && cfg.momentum <= 1))
            throw std::invalid_argument(fmt::format("batch_norm2d: eps {} must be > 0 and momentum {} in [0, 1]", cfg.eps, cfg.momentum));
        const tensor_shape channels{cfg.channels};
        weight = make_parameter<T, D>(channels, init_rule::constant(1), 0);
        bias = make_parameter<T, D>(channels, init_rule::constant(0), 0);
        running_mean = make_parameter<T, D>(channels, init_rule::constant(0), 0);
        running_var = make_parameter<T, D>(channels, init_rule::constant(1), 0);
        num_batches_tracked = make_parameter<T, D>(tensor_shape{}, init_rule::constant(0), 0);
        for (auto* buffer : {&running_mean, &running_var, &num_batches_tracked}) buffer->trainable = false;
    }

    void train(bool training) { training_ = training; }
    bool training() const { return training_; }

    /// x (N, C, H, W) → same shape. In training mode also updates the running statistics (as
    /// PyTorch does, with gradients enabled or not).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() != 4 || x.dim(1) != cfg.channels)
            throw shape_error(fmt::format("batch_norm2d: input {} must be (N, {}, H, W)", x.shape(), cfg.channels));
        const std::int64_t count = x.numel() / cfg.channels;
        if (training_ && count < 2)
            throw shape_error(fmt::format("batch_norm2d: training needs more than one value per channel, input {} has {}", x.shape(), count));
        auto r = training_ ? ops::batch_norm_train(x, weight.value.view(), bias.value.view(), cfg.eps)
                           : ops::batch_norm_eval(x, weight.value.view(), bias.value.view(), running_mean.value.view(),
                                                  running_var.value.view(), cfg.eps);
        if (training_) {
            ops::batch_norm_update_running(running_mean.value.view(), running_var.value.view(), r.mean.view(), r.var.view(), cfg.momentum,
                                           count);
            const auto counted = ops::add_scalar(num_batches_tracked.value.view(), T(1));
            ops::copy(num_batches_tracked.value.view(), counted.view());
        }
        const bool keep = record_.keep();
        input_ = keep ? x : tensor_view<T, D>{};
        mean_ = keep ? std::move(r.mean) : tensor<T, D>{};
        rstd_ = keep ? std::move(r.rstd) : tensor<T, D>{};
        batch_statistics_ = training_;
        return std::move(r.y);
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("batch_norm2d");
        auto dx = ops::batch_norm_backward(dy, input_, mean_.view(), rstd_.view(), weight.value.view(), weight.grad.view(),
                                           bias.grad.view(), batch_statistics_);
        if (release) {
            input_ = {};
            mean_ = {};
            rstd_ = {};
        }
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
        f(join_name(prefix, "running_mean"), running_mean);
        f(join_name(prefix, "running_var"), running_var);
        f(join_name(prefix, "num_batches_tracked"), num_batches_tracked);
    }

private:
    bool training_ = true;
    bool batch_statistics_ = true;  // the mode of the forward that backward follows
    backward_record record_;
    tensor_view<T, D> input_;
    tensor<T, D> mean_, rstd_;
};

} // namespace vediff::nn
