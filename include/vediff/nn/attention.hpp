#pragma once
// Parameterless attention layers: softmax over the last axis, and the core of a transformer
// block's multi-head self-attention, from the packed output of its qkv Linear to the input of its
// output projection (DiT's `attn.qkv` → reshape (B, N, 3, heads, hd) → softmax(q·kᵀ/√hd)·v →
// (B, N, D) → `attn.proj`).
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/layer.hpp"
#include "vediff/ops/attention.hpp"
#include "vediff/ops/softmax.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct softmax : parameterless {
    using value_type = T;
    using device_type = D;

    /// x (..., n) → same shape, each last-axis row summing to 1.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        auto y = ops::softmax(x);
        output_ = record_.keep() ? tensor<T, D>::copy_of(y) : tensor<T, D>{};  // the backward needs y, which the caller owns
        return y;
    }
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("softmax");
        auto dx = ops::softmax_backward(dy, output_.view());
        if (release) output_ = {};
        return dx;
    }

private:
    backward_record record_;
    tensor<T, D> output_;  // (..., n)
};

/// P: the precision policy of the attention's products (core/precision.hpp).
template <class T = float, device D = cpu, precision_policy P = fp32>
struct multi_head_attention_core : parameterless {
    using value_type = T;
    using device_type = D;
    using precision = P;
    struct config {
        std::int64_t heads = 1;
    };

    config cfg;

    multi_head_attention_core() = default;
    explicit multi_head_attention_core(config c) : cfg(c) {
        if (cfg.heads <= 0) throw shape_error(fmt::format("multi_head_attention_core: {} heads", cfg.heads));
    }

    /// qkv (B, N, 3·D), rows [q | k | v] with heads contiguous → (B, N, D).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& qkv) {
        input_ = record_.keep() ? qkv : tensor_view<T, D>{};
        auto r = ops::packed_attention<P>(qkv, cfg.heads);  // under nn::no_grad the op keeps no state
        saved_ = std::move(r.saved);
        return std::move(r.out);
    }

    /// dy (B, N, D) → dqkv (B, N, 3·D).
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        const bool release = record_.spend("multi_head_attention_core");
        auto dqkv = ops::packed_attention_backward<P>(dy, input_, saved_, cfg.heads);
        if (release) {
            input_ = {};
            saved_ = {};
        }
        return dqkv;
    }

private:
    backward_record record_;
    tensor_view<T, D> input_;  // (B, N, 3·D), owned by the caller
    ops::attention_saved<T, D> saved_;  // the attention backend's state for backward
};

} // namespace vediff::nn
