#pragma once
// Normalization layers: group_norm (LDM's GroupNorm(32, eps 1e-6)), group_norm_silu (the GroupNorm
// + SiLU pair that opens each half of LDM's ResnetBlock, as one layer), layer_norm over the last
// axis (DiT: without affine, eps 1e-6) and rms_norm over the last axis (LightningDiT). Parameter
// names and initial values follow PyTorch: `weight` = 1, `bias` = 0.
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/norm.hpp"

namespace vediff::nn {

/// What a normalization keeps for its backward, under the current grad mode: its input (a view
/// of the caller's tensor) and the statistics, or nothing under nn::no_grad.
template <class T, device D>
void keep_statistics(backward_record& record, const tensor_view<T, D>& x, tensor<T, D>&& mean, tensor<T, D>&& rstd,
                     tensor_view<T, D>& input, tensor<T, D>& kept_mean, tensor<T, D>& kept_rstd) {
    const bool k = record.keep();
    input = k ? x : tensor_view<T, D>{};
    kept_mean = k ? std::move(mean) : tensor<T, D>{};
    kept_rstd = k ? std::move(rstd) : tensor<T, D>{};
}

/// What a normalization's backward releases once done (its input's view and the statistics).
template <class T, device D>
void release_statistics(tensor_view<T, D>& input, tensor<T, D>& kept_mean, tensor<T, D>& kept_rstd) {
    input = {};
    kept_mean = {};
    kept_rstd = {};
}

struct group_norm_config {
    std::int64_t groups = 32;
    std::int64_t channels = 0;
    double eps = 1e-6;
    bool affine = true;
};

/// A group norm's weight (1) and bias (0), (C) each, after checking that the groups divide the channels.
template <class T, device D>
void make_group_norm_parameters(const char* layer, const group_norm_config& cfg, parameter<T, D>& weight, parameter<T, D>& bias) {
    if (cfg.groups <= 0 || cfg.channels % cfg.groups != 0)
        throw shape_error(fmt::format("{}: {} channels are not divisible by {} groups", layer, cfg.channels, cfg.groups));
    if (cfg.affine) {
        weight = make_parameter<T, D>({cfg.channels}, init_rule::constant(1), 0);
        bias = make_parameter<T, D>({cfg.channels}, init_rule::constant(0), 0);
    }
}

template <class T = float, device D = cpu>
struct group_norm {
    using value_type = T;
    using device_type = D;
    using config = group_norm_config;

    config cfg;
    parameter<T, D> weight;  // (C), only with cfg.affine
    parameter<T, D> bias;    // (C), only with cfg.affine

    group_norm() = default;
    explicit group_norm(config c) : cfg(c) { make_group_norm_parameters("group_norm", cfg, weight, bias); }

    /// x (N, C, ...) → same shape.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() < 2 || x.dim(1) != cfg.channels)
            throw shape_error(fmt::format("group_norm: input {} must be (N, {}, ...)", x.shape(), cfg.channels));
        auto r = cfg.affine ? ops::group_norm(x, cfg.groups, weight.value.view(), bias.value.view(), cfg.eps)
                            : ops::group_norm(x, cfg.groups, cfg.eps);
        keep(x, std::move(r.mean), std::move(r.rstd));
        return std::move(r.y);
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("group_norm");
        auto dx = cfg.affine ? ops::group_norm_backward(dy, input_, mean_.view(), rstd_.view(), cfg.groups, weight.value.view(),
                                                        weight.grad.view(), bias.grad.view())
                             : ops::group_norm_backward(dy, input_, mean_.view(), rstd_.view(), cfg.groups);
        if (release) release_statistics(input_, mean_, rstd_);
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if (!cfg.affine) return;
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
    }

private:
    void keep(const tensor_view<T, D>& x, tensor<T, D>&& mean, tensor<T, D>&& rstd) {
        keep_statistics(record_, x, std::move(mean), std::move(rstd), input_, mean_, rstd_);
    }

    backward_record record_;
    tensor_view<T, D> input_;  // (N, C, ...), owned by the caller
    tensor<T, D> mean_;        // (N, G)
    tensor<T, D> rstd_;        // (N, G)
};

/// y = silu(group_norm(x)) as one layer. As two layers the pair keeps two full-size tensors for
/// backward: the norm's output (SiLU's input, owned by the container) and SiLU's output (the next
/// convolution's input). This one keeps only the view of its input and the statistics, as
/// group_norm does, and its backward recomputes the norm's output, which SiLU's derivative needs,
/// with the same op as the forward (one more pass over x). `weight` and `bias` are the norm's, so a
/// model's parameter names do not change.
template <class T = float, device D = cpu>
struct group_norm_silu {
    using value_type = T;
    using device_type = D;
    using config = group_norm_config;

    config cfg;
    parameter<T, D> weight;  // (C), only with cfg.affine
    parameter<T, D> bias;    // (C), only with cfg.affine

    group_norm_silu() = default;
    explicit group_norm_silu(config c) : cfg(c) { make_group_norm_parameters("group_norm_silu", cfg, weight, bias); }

    /// x (N, C, ...) → same shape.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() < 2 || x.dim(1) != cfg.channels)
            throw shape_error(fmt::format("group_norm_silu: input {} must be (N, {}, ...)", x.shape(), cfg.channels));
        auto r = normalize(x);
        keep_statistics(record_, x, std::move(r.mean), std::move(r.rstd), input_, mean_, rstd_);
        return ops::silu(r.y.view());  // the norm's output dies here
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("group_norm_silu");
        tensor<T, D> dh;  // the gradient at the norm's output
        {
            const auto h = normalize(input_);
            dh = ops::silu_backward(dy, h.y.view());
        }
        auto dx = cfg.affine ? ops::group_norm_backward(dh.view(), input_, mean_.view(), rstd_.view(), cfg.groups, weight.value.view(),
                                                        weight.grad.view(), bias.grad.view())
                             : ops::group_norm_backward(dh.view(), input_, mean_.view(), rstd_.view(), cfg.groups);
        if (release) release_statistics(input_, mean_, rstd_);
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if (!cfg.affine) return;
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
    }

private:
    ops::normalized<T, D> normalize(const tensor_view<T, D>& x) const {
        return cfg.affine ? ops::group_norm(x, cfg.groups, weight.value.view(), bias.value.view(), cfg.eps)
                          : ops::group_norm(x, cfg.groups, cfg.eps);
    }

    backward_record record_;
    tensor_view<T, D> input_;  // (N, C, ...), owned by the caller
    tensor<T, D> mean_;        // (N, G)
    tensor<T, D> rstd_;        // (N, G)
};

template <class T = float, device D = cpu>
struct layer_norm {
    using value_type = T;
    using device_type = D;
    struct config {
        std::int64_t dim = 0;
        double eps = 1e-6;
        bool affine = true;  // PyTorch's elementwise_affine; DiT uses false
    };

    config cfg;
    parameter<T, D> weight;  // (dim), only with cfg.affine
    parameter<T, D> bias;    // (dim), only with cfg.affine

    layer_norm() = default;
    explicit layer_norm(config c) : cfg(c) {
        if (cfg.affine) {
            weight = make_parameter<T, D>({cfg.dim}, init_rule::constant(1), 0);
            bias = make_parameter<T, D>({cfg.dim}, init_rule::constant(0), 0);
        }
    }

    /// x (..., dim) → same shape.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() < 1 || x.dim(-1) != cfg.dim)
            throw shape_error(fmt::format("layer_norm: input {} must be (..., {})", x.shape(), cfg.dim));
        auto r = cfg.affine ? ops::layer_norm(x, weight.value.view(), bias.value.view(), cfg.eps) : ops::layer_norm(x, cfg.eps);
        keep(x, std::move(r.mean), std::move(r.rstd));
        return std::move(r.y);
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("layer_norm");
        auto dx = cfg.affine ? ops::layer_norm_backward(dy, input_, mean_.view(), rstd_.view(), weight.value.view(), weight.grad.view(),
                                                        bias.grad.view())
                             : ops::layer_norm_backward(dy, input_, mean_.view(), rstd_.view());
        if (release) release_statistics(input_, mean_, rstd_);
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        if (!cfg.affine) return;
        f(join_name(prefix, "weight"), weight);
        f(join_name(prefix, "bias"), bias);
    }

private:
    void keep(const tensor_view<T, D>& x, tensor<T, D>&& mean, tensor<T, D>&& rstd) {
        keep_statistics(record_, x, std::move(mean), std::move(rstd), input_, mean_, rstd_);
    }

    backward_record record_;
    tensor_view<T, D> input_;  // (..., dim), owned by the caller
    tensor<T, D> mean_;        // (rows)
    tensor<T, D> rstd_;        // (rows)
};

template <class T = float, device D = cpu>
struct rms_norm {
    using value_type = T;
    using device_type = D;
    struct config {
        std::int64_t dim = 0;
        double eps = 1e-6;
    };

    config cfg;
    parameter<T, D> weight;  // (dim)

    rms_norm() = default;
    explicit rms_norm(config c) : cfg(c), weight(make_parameter<T, D>({c.dim}, init_rule::constant(1), 0)) {}

    /// x (..., dim) → same shape.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() < 1 || x.dim(-1) != cfg.dim)
            throw shape_error(fmt::format("rms_norm: input {} must be (..., {})", x.shape(), cfg.dim));
        auto r = ops::rms_norm(x, weight.value.view(), cfg.eps);
        const bool k = record_.keep();
        input_ = k ? x : tensor_view<T, D>{};
        rstd_ = k ? std::move(r.rstd) : tensor<T, D>{};
        return std::move(r.y);
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("rms_norm");
        auto dx = ops::rms_norm_backward(dy, input_, rstd_.view(), weight.value.view(), weight.grad.view());
        if (release) {
            input_ = {};
            rstd_ = {};
        }
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(join_name(prefix, "weight"), weight);
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (..., dim), owned by the caller
    tensor<T, D> rstd_;        // (rows)
};

} // namespace vediff::nn
