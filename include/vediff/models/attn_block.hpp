#pragma once
// LDM's AttnBlock: single-head self-attention over the H·W positions of a feature map,
//   h = norm(x); q, k, v = 1×1 convs of h; a[:, i] = Σ_j softmax_j(q[:, i]·k[:, j] / √C) v[:, j];
//   y = x + proj_out(a).
// The attention runs channels-first on (B, C, H·W) views of the convolutions' outputs, so no
// transposes are needed.
#include <cstdint>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/norm.hpp"
#include "vediff/ops/attention.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::models {

struct attn_block_config {
    std::int64_t channels = 0;
    std::int64_t norm_groups = 32;
    double norm_eps = 1e-6;
};

/// The AttnBlock without its residual connection: norm → q, k, v → attention → proj_out.
template <class T = float, device D = cpu, precision_policy P = fp32>
struct spatial_self_attention {
    using value_type = T;
    using device_type = D;

    nn::group_norm<T, D> norm;
    nn::conv2d<T, D, P> q, k, v, proj_out;  // 1×1, C → C

    spatial_self_attention() = default;
    /// 1×1 convolutions initialized as PyTorch's defaults, drawn as nn::initialize(*this, seed) draws them.
    explicit spatial_self_attention(const attn_block_config& c, std::uint64_t seed = 0)
        : norm({.groups = c.norm_groups, .channels = c.channels, .eps = c.norm_eps, .affine = true}),
          q(conv1x1(c.channels)),
          k(conv1x1(c.channels)),
          v(conv1x1(c.channels)),
          proj_out(conv1x1(c.channels)) {
        nn::initialize(*this, seed);
    }

    /// x (B, C, H, W) → (B, C, H, W).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        if (x.rank() != 4)
            throw shape_error(fmt::format("attn_block: input must be (B, C, H, W), got {}", x.shape()));
        h_ = norm.forward(x);
        q_ = q.forward(h_);
        k_ = k.forward(h_);
        v_ = v.forward(h_);
        auto r = ops::spatial_attention(flat(q_), flat(k_), flat(v_));
        saved_ = std::move(r.saved);
        attended_ = std::move(r.out).reshape(x.shape());
        return proj_out.forward(attended_);
    }

    /// Releases what the forward kept as it passes (nn/grad_mode.hpp).
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        auto dattended = proj_out.backward(dy);
        auto g = ops::spatial_attention_backward(flat(dattended), flat(q_), flat(k_), flat(v_), saved_);
        const auto& map_shape = h_.shape();
        auto dh = q.backward(g.dq.reshape(map_shape));
        ops::axpy(dh.view(), k.backward(g.dk.reshape(map_shape)).view());
        ops::axpy(dh.view(), v.backward(g.dv.reshape(map_shape)).view());
        if (nn::backward_releases()) {  // everything below made and read by layers whose backward has run
            for (auto* t : {&h_, &q_, &k_, &v_, &attended_}) *t = tensor<T, D>{};
            saved_ = {};
        }
        return norm.backward(dh);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        norm.for_each_parameter(f, nn::join_name(prefix, "norm"));
        q.for_each_parameter(f, nn::join_name(prefix, "q"));
        k.for_each_parameter(f, nn::join_name(prefix, "k"));
        v.for_each_parameter(f, nn::join_name(prefix, "v"));
        proj_out.for_each_parameter(f, nn::join_name(prefix, "proj_out"));
    }

private:
    static nn::conv2d<T, D, P> conv1x1(std::int64_t channels) {
        return nn::conv2d<T, D, P>({.in_channels = channels, .out_channels = channels, .kernel_size = 1});
    }
    /// (B, C, H, W) seen as (B, C, H·W).
    static tensor_view<T, D> flat(const tensor_view<T, D>& t) { return t.reshape({t.dim(0), t.dim(1), -1}); }

    tensor<T, D> h_;         // (B, C, H, W), norm(x)
    tensor<T, D> q_, k_, v_; // (B, C, H, W)
    ops::attention_saved<T, D> saved_;  // the attention backend's state for backward
    tensor<T, D> attended_;  // (B, C, H, W), proj_out's input
};

/// y = x + spatial_self_attention(x); parameters `norm`, `q`, `k`, `v`, `proj_out` as in LDM.
template <class T = float, device D = cpu, precision_policy P = fp32>
struct attn_block : nn::residual<spatial_self_attention<T, D, P>> {
    using base = nn::residual<spatial_self_attention<T, D, P>>;
    attn_block() = default;
    explicit attn_block(const attn_block_config& c, std::uint64_t seed = 0) : base(spatial_self_attention<T, D, P>(c, seed)) {}
};

} // namespace vediff::models
