#pragma once
// A diffusion transformer block with adaLN-Zero conditioning (Peebles & Xie, DiT), its design
// chosen by policies (models/dit_policies.hpp):
//   shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = adaLN_modulation(c)      (Linear(D, 6D) after SiLU)
//   x ← x + gate₁ · attn(norm1(x) · (1 + scale₁) + shift₁)
//   x ← x + gate₂ · mlp(norm2(x) · (1 + scale₂) + shift₂)
// A conditioned layer (nn/conditioned.hpp): forward(x (B, N, D), c (B, D)), backward(dy, dc).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vediff/models/dit_attention.hpp"
#include "vediff/models/dit_policies.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conditioned.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::models {

struct dit_block_config {
    std::int64_t dim = 0;
    std::int64_t heads = 1;
    double mlp_ratio = 4.0;
    std::int64_t grid = 0;  // tokens per side of the patch grid (RoPE)
};

/// adaLN_modulation: SiLU then Linear(D, k·D), named "adaLN_modulation.1" as nn.Sequential(SiLU, Linear).
template <class T, device D, precision_policy P = fp32>
using ada_ln_modulation = nn::sequential<nn::silu<T, D>, nn::linear<T, D, P>>;

/// The k chunks (B, D) of a modulation (B, k·D), each seen as (B, 1, D) to broadcast over tokens.
template <class T, device D>
std::vector<tensor<T, D>> modulation_chunks(const tensor_view<T, D>& modulation, std::int64_t k) {
    auto chunks = ops::chunk(modulation, k, 1);
    for (auto& c : chunks) c = std::move(c).reshape({c.dim(0), 1, c.dim(1)});
    return chunks;
}

/// dmodulation (B, k·D) from the chunks' gradients (B, 1, D), in chunk order.
template <class T, device D>
tensor<T, D> join_modulation_gradients(const std::vector<tensor_view<T, D>>& dchunks) {
    std::vector<tensor_view<T, D>> flat;
    for (const auto& d : dchunks) flat.push_back(d.reshape({d.dim(0), d.dim(2)}));
    return ops::concat(flat, 1);
}

/// P: the precision policy of the block's matrix products (core/precision.hpp): the attention's
/// qkv, its products and proj, the MLP and adaLN_modulation; the norms, modulation and residual
/// sums stay in T.
template <class T, device D, class Design, precision_policy P = fp32>
struct dit_block_layer {
    using value_type = T;
    using device_type = D;
    using precision = P;
    using norm_layer = typename Design::norm::template layer<T, D>;
    using mlp_layer = typename Design::mlp::template layer<T, D, P>;
    using attention_layer = dit_attention<T, D, typename Design::rope, typename Design::qk, P>;

    dit_block_config cfg;
    norm_layer norm1;
    attention_layer attn;
    norm_layer norm2;
    mlp_layer mlp;
    ada_ln_modulation<T, D, P> adaLN_modulation;

    dit_block_layer() = default;
    /// Parameters as nn::initialize(*this, seed) draws them (models/dit.hpp sets the reference init).
    explicit dit_block_layer(const dit_block_config& c, std::uint64_t seed = 0)
        : cfg(c),
          norm1(Design::norm::template make<T, D>(c.dim)),
          attn({.dim = c.dim, .heads = c.heads, .grid = c.grid}),
          norm2(Design::norm::template make<T, D>(c.dim)),
          mlp(Design::mlp::template make<T, D, P>(c.dim, c.mlp_ratio)),
          adaLN_modulation(nn::silu<T, D>{}, nn::linear<T, D, P>(c.dim, 6 * c.dim)) {
        nn::initialize(*this, seed);
    }

    tensor<T, D> forward(tensor<T, D>&&, const tensor_view<T, D>&) = delete;  // inputs must outlive backward
    tensor<T, D> forward(const tensor_view<T, D>&, tensor<T, D>&&) = delete;
    /// x (B, N, D), c (B, D) → (B, N, D).
    tensor<T, D> forward(const tensor_view<T, D>& x, const tensor_view<T, D>& c) {
        if (x.rank() != 3 || x.dim(2) != cfg.dim || c.rank() != 2 || c.dim(0) != x.dim(0) || c.dim(1) != cfg.dim)
            throw shape_error(fmt::format("dit_block: x {} and c {} must be (B, N, {}) and (B, {})", x.shape(), c.shape(), cfg.dim, cfg.dim));
        // One path for training and inference: under nn::no_grad each intermediate is released
        // right after its last reader instead of being kept for backward.
        const bool keep = record_.keep();
        chunks_ = modulation_chunks(adaLN_modulation.forward(c).view(), 6);  // copies: the modulation dies here
        normed1_ = norm1.forward(x);
        modulated1_ = ops::modulate(normed1_.view(), chunks_[0].view(), chunks_[1].view());
        release_unless(keep, normed1_);
        attended_ = attn.forward(modulated1_);
        release_unless(keep, modulated1_);
        mid_ = ops::addcmul_broadcast(x, attended_.view(), chunks_[2].view());
        release_unless(keep, attended_);
        normed2_ = norm2.forward(mid_);
        modulated2_ = ops::modulate(normed2_.view(), chunks_[3].view(), chunks_[4].view());
        release_unless(keep, normed2_);
        mlp_out_ = mlp.forward(modulated2_);
        release_unless(keep, modulated2_);
        auto out = ops::addcmul_broadcast(mid_.view(), mlp_out_.view(), chunks_[5].view());
        release_unless(keep, mid_, mlp_out_);
        if (!keep) chunks_.clear();
        return out;
    }

    /// dy (B, N, D) → dx; adds the block's share of the gradient into dc (B, D).
    tensor<T, D> backward(const tensor_view<T, D>& dy, tensor<T, D>& dc) {
        record_.require("dit_block");
        auto gate2 = ops::mul_broadcast_backward(dy, mlp_out_.view(), chunks_[5].view());
        auto mod2 = ops::modulate_backward(mlp.backward(gate2.dx).view(), normed2_.view(), chunks_[4].view());
        auto dmid = norm2.backward(mod2.dx);
        ops::axpy(dmid.view(), dy);
        auto gate1 = ops::mul_broadcast_backward(dmid.view(), attended_.view(), chunks_[2].view());
        auto mod1 = ops::modulate_backward(attn.backward(gate1.dx).view(), normed1_.view(), chunks_[1].view());
        auto dx = norm1.backward(mod1.dx);
        ops::axpy(dx.view(), dmid.view());
        auto dmodulation = join_modulation_gradients<T, D>(
            {mod1.dshift.view(), mod1.dscale.view(), gate1.db.view(), mod2.dshift.view(), mod2.dscale.view(), gate2.db.view()});
        ops::axpy(dc.view(), adaLN_modulation.backward(dmodulation).view());
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        norm1.for_each_parameter(f, nn::join_name(prefix, "norm1"));
        attn.for_each_parameter(f, nn::join_name(prefix, "attn"));
        norm2.for_each_parameter(f, nn::join_name(prefix, "norm2"));
        mlp.for_each_parameter(f, nn::join_name(prefix, "mlp"));
        adaLN_modulation.for_each_parameter(f, nn::join_name(prefix, "adaLN_modulation"));
    }

private:
    nn::backward_record record_;
    std::vector<tensor<T, D>> chunks_;      // 6 × (B, 1, D): shift₁, scale₁, gate₁, shift₂, scale₂, gate₂
    tensor<T, D> normed1_, modulated1_;     // (B, N, D)
    tensor<T, D> attended_;                 // (B, N, D)
    tensor<T, D> mid_;                      // (B, N, D): x after the attention branch
    tensor<T, D> normed2_, modulated2_;     // (B, N, D)
    tensor<T, D> mlp_out_;                  // (B, N, D)
};

/// DiT's FinalLayer: norm_final, adaLN (shift, scale) from Linear(D, 2D) after SiLU, `linear` D → out.
template <class T, device D, class Norm, precision_policy P = fp32>
struct dit_final_layer {
    using value_type = T;
    using device_type = D;
    using norm_layer = typename Norm::template layer<T, D>;

    std::int64_t dim = 0;
    norm_layer norm_final;
    nn::linear<T, D, P> linear;
    ada_ln_modulation<T, D, P> adaLN_modulation;

    dit_final_layer() = default;
    dit_final_layer(std::int64_t hidden, std::int64_t out_features, std::uint64_t seed = 0)
        : dim(hidden),
          norm_final(Norm::template make<T, D>(hidden)),
          linear(hidden, out_features),
          adaLN_modulation(nn::silu<T, D>{}, nn::linear<T, D, P>(hidden, 2 * hidden)) {
        nn::initialize(*this, seed);
    }

    tensor<T, D> forward(tensor<T, D>&&, const tensor_view<T, D>&) = delete;  // inputs must outlive backward
    tensor<T, D> forward(const tensor_view<T, D>&, tensor<T, D>&&) = delete;
    /// x (B, N, D), c (B, D) → (B, N, out).
    tensor<T, D> forward(const tensor_view<T, D>& x, const tensor_view<T, D>& c) {
        const bool keep = record_.keep();  // one path; under nn::no_grad nothing outlives the call
        chunks_ = modulation_chunks(adaLN_modulation.forward(c).view(), 2);
        normed_ = norm_final.forward(x);
        modulated_ = ops::modulate(normed_.view(), chunks_[0].view(), chunks_[1].view());
        release_unless(keep, normed_);
        auto out = linear.forward(modulated_);
        release_unless(keep, modulated_);
        if (!keep) chunks_.clear();
        return out;
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy, tensor<T, D>& dc) {
        record_.require("dit_final_layer");
        auto mod = ops::modulate_backward(linear.backward(dy).view(), normed_.view(), chunks_[1].view());
        auto dx = norm_final.backward(mod.dx);
        auto dmodulation = join_modulation_gradients<T, D>({mod.dshift.view(), mod.dscale.view()});
        ops::axpy(dc.view(), adaLN_modulation.backward(dmodulation).view());
        return dx;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        norm_final.for_each_parameter(f, nn::join_name(prefix, "norm_final"));
        linear.for_each_parameter(f, nn::join_name(prefix, "linear"));
        adaLN_modulation.for_each_parameter(f, nn::join_name(prefix, "adaLN_modulation"));
    }

private:
    nn::backward_record record_;
    std::vector<tensor<T, D>> chunks_;  // shift, scale: (B, 1, D)
    tensor<T, D> normed_, modulated_;   // (B, N, D)
};

} // namespace vediff::models
