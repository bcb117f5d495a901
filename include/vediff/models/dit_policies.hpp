#pragma once
// The design choices of a diffusion transformer block, each a policy tag, so that DiT and
// LightningDiT are one block template:
//   norm       layer_norm (DiT: LayerNorm without affine, eps 1e-6) | rms_norm (LightningDiT, with weight)
//   mlp        gelu_mlp (fc1 → GELU(tanh) → fc2, hidden = dim·ratio) | swiglu (w12 → silu·gate → w3,
//              hidden = ⌊2/3·⌊dim·ratio⌋⌋)
//   rope       no_rope | rope_2d (2-D rotary embedding of q and k, EVA-02 style)
//   qk norm    no_qk_norm | qk_norm (RMSNorm over head_dim of q and k, before RoPE)
// dit_block<Norm, Mlp, Rope, QkNorm> names a block design; models/dit.hpp instantiates it.
#include <cstdint>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/nn/norm.hpp"
#include "vediff/nn/swiglu.hpp"

namespace vediff::models {

struct layer_norm {
    template <class T, device D>
    using layer = nn::layer_norm<T, D>;
    template <class T, device D>
    static layer<T, D> make(std::int64_t dim) { return layer<T, D>({.dim = dim, .eps = 1e-6, .affine = false}); }
};

struct rms_norm {
    template <class T, device D>
    using layer = nn::rms_norm<T, D>;
    template <class T, device D>
    static layer<T, D> make(std::int64_t dim) { return layer<T, D>({.dim = dim, .eps = 1e-6}); }
};

struct gelu_mlp {
    template <class T, device D, precision_policy P = fp32>
    using layer = nn::sequential<nn::named<"fc1", nn::linear<T, D, P>>, nn::gelu<T, D>, nn::named<"fc2", nn::linear<T, D, P>>>;
    static std::int64_t hidden(std::int64_t dim, double ratio) { return static_cast<std::int64_t>(double(dim) * ratio); }
    template <class T, device D, precision_policy P = fp32>
    static layer<T, D, P> make(std::int64_t dim, double ratio) {
        return layer<T, D, P>(nn::linear<T, D, P>(dim, hidden(dim, ratio)), nn::gelu<T, D>{}, nn::linear<T, D, P>(hidden(dim, ratio), dim));
    }
};

struct swiglu {
    template <class T, device D, precision_policy P = fp32>
    using layer = nn::swiglu<T, D, P>;
    static std::int64_t hidden(std::int64_t dim, double ratio) {
        return static_cast<std::int64_t>(2.0 / 3.0 * double(static_cast<std::int64_t>(double(dim) * ratio)));
    }
    template <class T, device D, precision_policy P = fp32>
    static layer<T, D, P> make(std::int64_t dim, double ratio) { return layer<T, D, P>(dim, hidden(dim, ratio)); }
};

struct no_rope {
    static constexpr bool enabled = false;
};
struct rope_2d {
    static constexpr bool enabled = true;
};
struct no_qk_norm {
    static constexpr bool enabled = false;
};
struct qk_norm {
    static constexpr bool enabled = true;
};

/// A block design: the four policies, named together.
template <class Norm, class Mlp, class Rope, class QkNorm>
struct dit_block {
    using norm = Norm;
    using mlp = Mlp;
    using rope = Rope;
    using qk = QkNorm;
};

using dit_design = dit_block<layer_norm, gelu_mlp, no_rope, no_qk_norm>;
using lightning_dit_design = dit_block<rms_norm, swiglu, rope_2d, qk_norm>;

} // namespace vediff::models
