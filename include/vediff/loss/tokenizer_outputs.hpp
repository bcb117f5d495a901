#pragma once
// What a loss term sees of the tokenizer's work on a batch, and the gradients it adds into.
// Every term reads the fields it needs and ignores the rest.
#include "vediff/core/tensor.hpp"

namespace vediff::loss {

template <class T = float, device D = cpu>
struct tokenizer_outputs {
    tensor_view<T, D> x;       // (B, C, H, W) the input images
    tensor_view<T, D> x_hat;   // (B, C, H, W) their reconstructions
    tensor_view<T, D> mean;    // (B, c, h, w) posterior mean μ
    tensor_view<T, D> logvar;  // (B, c, h, w) posterior log σ² (after the posterior's clamp)
    tensor_view<T, D> z;       // (B, c, h, w) the sample μ + σ·ε the decoder was fed
};

/// Gradients of the loss with respect to x̂, μ, logvar and z, shaped like them. Terms ADD into
/// these (a term that does not depend on an input leaves its gradient alone); an empty tensor
/// means "not wanted". The path through z = μ + σ·ε is the posterior's to follow (its
/// sample_backward), not the loss's: dz here is only the loss's direct dependence on z.
template <class T = float, device D = cpu>
struct tokenizer_gradients {
    tensor<T, D> dx_hat;   // (B, C, H, W)
    tensor<T, D> dmean;    // (B, c, h, w)
    tensor<T, D> dlogvar;  // (B, c, h, w)
    tensor<T, D> dz;       // (B, c, h, w)

    /// Zero-filled gradients shaped like the outputs.
    static tokenizer_gradients zeros_like(const tokenizer_outputs<T, D>& out) {
        return {tensor<T, D>::zeros(out.x_hat.shape()), tensor<T, D>::zeros(out.mean.shape()),
                tensor<T, D>::zeros(out.logvar.shape()), tensor<T, D>::zeros(out.z.shape())};
    }
};

} // namespace vediff::loss
