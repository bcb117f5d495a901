#pragma once
// Multi-head self-attention of a diffusion transformer block: `qkv` Linear(D, 3D) with rows
// [q | k | v] and heads contiguous, optionally RMSNorm over head_dim of q and k (`q_norm`,
// `k_norm`) and then 2-D RoPE on q and k, scaled dot-product attention (scale head_dim^−½), `proj`.
// Without qk-norm and RoPE the packed qkv goes to the attention kernel as it is; with either, q
// and k are cut out, transformed and packed again.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/models/positional_tables.hpp"
#include "vediff/nn/attention.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/nn/norm.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/positional.hpp"

namespace vediff::models {

/// Releases a forward's intermediates now unless backward will need them (keep: the layer's
/// backward_record said so), so that under nn::no_grad a few activations are alive at a time.
template <class... Tensors>
void release_unless(bool keep, Tensors&... intermediates) {
    if (!keep) ((intermediates = {}), ...);
}

struct dit_attention_config {
    std::int64_t dim = 0;
    std::int64_t heads = 1;
    std::int64_t grid = 0;  // tokens per side of the square patch grid (RoPE tables)
};

template <class T, device D, class Rope, class QkNorm, precision_policy P = fp32>
struct dit_attention {
    using value_type = T;
    using device_type = D;
    using precision = P;
    static constexpr bool transforms_qk = Rope::enabled || QkNorm::enabled;

    dit_attention_config cfg;
    nn::linear<T, D, P> qkv;   // D → 3D
    nn::rms_norm<T, D> q_norm;  // (head_dim), with qk-norm only
    nn::rms_norm<T, D> k_norm;  // (head_dim), with qk-norm only
    nn::linear<T, D, P> proj;  // D → D

    dit_attention() = default;
    explicit dit_attention(const dit_attention_config& c)
        : cfg(c), qkv(c.dim, 3 * c.dim), proj(c.dim, c.dim), core_({.heads = c.heads}) {
        if (c.heads <= 0 || c.dim % c.heads != 0)
            throw shape_error(fmt::format("dit_attention: hidden size {} is not divisible by {} heads", c.dim, c.heads));
        if constexpr (QkNorm::enabled) {
            q_norm = nn::rms_norm<T, D>({.dim = head_dim(), .eps = 1e-6});
            k_norm = nn::rms_norm<T, D>({.dim = head_dim(), .eps = 1e-6});
        }
        if constexpr (Rope::enabled) {
            const auto angles = rope_2d_angles(head_dim(), c.grid);
            std::vector<T> cos(angles.size()), sin(angles.size());
            for (std::size_t i = 0; i < angles.size(); ++i) {
                cos[i] = static_cast<T>(std::cos(angles[i]));
                sin[i] = static_cast<T>(std::sin(angles[i]));
            }
            const tensor_shape table{c.grid * c.grid, head_dim()};
            cos_ = tensor<T, D>::from_host(table, std::span<const T>(cos));
            sin_ = tensor<T, D>::from_host(table, std::span<const T>(sin));
        }
    }

    std::int64_t head_dim() const { return cfg.dim / cfg.heads; }

    /// x (B, N, D) → (B, N, D).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        // One path for training and inference: under nn::no_grad each intermediate is released
        // right after its last reader, and the attention op keeps no probabilities.
        const bool keep = record_.keep();
        qkv_ = qkv.forward(x);
        if constexpr (!transforms_qk) {
            attended_ = core_.forward(qkv_);
            release_unless(keep, qkv_);
        } else {
            const std::int64_t B = x.dim(0), N = x.dim(1);
            auto parts = ops::chunk(qkv_.view(), 3, 2);
            qkv_ = {};  // the pieces are copies; backward reads them, not qkv_
            q_ = std::move(parts[0]).reshape({B, N, cfg.heads, head_dim()});
            k_ = std::move(parts[1]).reshape({B, N, cfg.heads, head_dim()});
            v_ = std::move(parts[2]);
            if constexpr (QkNorm::enabled) {
                q_normed_ = q_norm.forward(q_);
                k_normed_ = k_norm.forward(k_);
            }
            tensor_view<T, D> q = QkNorm::enabled ? q_normed_.view() : q_.view();
            tensor_view<T, D> k = QkNorm::enabled ? k_normed_.view() : k_.view();
            tensor<T, D> q_rotated, k_rotated;
            if constexpr (Rope::enabled) {
                check_tokens(N);
                q_rotated = ops::rope(q, cos_.view(), sin_.view());
                k_rotated = ops::rope(k, cos_.view(), sin_.view());
                q = q_rotated.view();
                k = k_rotated.view();
            }
            packed_ = ops::concat<T, D>({q.reshape({B, N, cfg.dim}), k.reshape({B, N, cfg.dim}), v_.view()}, 2);
            release_unless(keep, q_, k_, v_, q_normed_, k_normed_);
            q_rotated = {};
            k_rotated = {};
            attended_ = core_.forward(packed_);
            release_unless(keep, packed_);
        }
        auto out = proj.forward(attended_);
        release_unless(keep, attended_);
        return out;
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        record_.require("dit_attention");
        auto dattended = proj.backward(dy);
        auto dpacked = core_.backward(dattended);
        if constexpr (!transforms_qk) {
            return qkv.backward(dpacked);
        } else {
            const std::int64_t B = dy.dim(0), N = dy.dim(1);
            auto parts = ops::chunk(dpacked.view(), 3, 2);
            auto dq = std::move(parts[0]).reshape({B, N, cfg.heads, head_dim()});
            auto dk = std::move(parts[1]).reshape({B, N, cfg.heads, head_dim()});
            if constexpr (Rope::enabled) {
                dq = ops::rope_backward(dq.view(), cos_.view(), sin_.view());
                dk = ops::rope_backward(dk.view(), cos_.view(), sin_.view());
            }
            if constexpr (QkNorm::enabled) {
                dq = q_norm.backward(dq);
                dk = k_norm.backward(dk);
            }
            auto dqkv = ops::concat<T, D>({dq.reshape({B, N, cfg.dim}), dk.reshape({B, N, cfg.dim}), parts[2].view()}, 2);
            return qkv.backward(dqkv);
        }
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        qkv.for_each_parameter(f, nn::join_name(prefix, "qkv"));
        if constexpr (QkNorm::enabled) {
            q_norm.for_each_parameter(f, nn::join_name(prefix, "q_norm"));
            k_norm.for_each_parameter(f, nn::join_name(prefix, "k_norm"));
        }
        proj.for_each_parameter(f, nn::join_name(prefix, "proj"));
    }

private:
    void check_tokens(std::int64_t n) const {
        if (n != cos_.dim(0))
            throw shape_error(fmt::format("dit_attention: {} tokens, but the RoPE tables are built for a {}x{} grid", n, cfg.grid, cfg.grid));
    }

    nn::backward_record record_;
    nn::multi_head_attention_core<T, D, P> core_;
    tensor<T, D> cos_, sin_;  // (N, head_dim) RoPE tables, with RoPE only
    tensor<T, D> qkv_;        // (B, N, 3D), the attention's input without qk transforms
    tensor<T, D> q_, k_, v_;  // (B, N, heads, head_dim) q and k, (B, N, D) v: cut from qkv_
    tensor<T, D> q_normed_, k_normed_;  // (B, N, heads, head_dim), with qk-norm
    tensor<T, D> packed_;     // (B, N, 3D): transformed q, k and v, the attention's input
    tensor<T, D> attended_;   // (B, N, D), proj's input
};

} // namespace vediff::models
