#pragma once
// patchify: latents (B, C, H, W) → tokens (B, (H/p)(W/p), p·p·C); unpatchify: the inverse, as
// DiT's unpatchify (reshape (B, h, w, p, p, C), einsum nhwpqc → nchpwq). Tokens are row-major over
// the patch grid and each token's features are ordered (i, j, c) with the channel fastest. Each
// op is the other's backward.
//
// Note: DiT's PatchEmbed is a Conv2d whose weight (D, C, p, p) orders a patch (c, i, j); a Linear
// applied to these tokens expects columns ordered (i, j, c), so porting conv weights permutes them.
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// (B, C, H, W) → (B, (H/p)·(W/p), p·p·C); H and W must be multiples of p.
template <class T, device D>
tensor<T, D> patchify(const tensor_view<T, D>& x, std::int64_t p) {
    require_rank("patchify", x, 4);
    const std::int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    if (p <= 0 || H % p != 0 || W % p != 0)
        throw shape_error(fmt::format("patchify: patch size {} does not tile the image of shape {}", p, x.shape()));
    tensor<T, D> out(tensor_shape{B, (H / p) * (W / p), p * p * C});
    patchify_kernels<D>::patchify(out.data(), x.data(), B, C, H, W, p);
    return out;
}

/// (B, (H/p)·(W/p), p·p·C) → (B, C, H, W) for an image of height H and width W.
template <class T, device D>
tensor<T, D> unpatchify(const tensor_view<T, D>& tokens, std::int64_t p, std::int64_t H, std::int64_t W) {
    require_rank("unpatchify", tokens, 3);
    const std::int64_t B = tokens.dim(0), N = tokens.dim(1), dim = tokens.dim(2);
    if (p <= 0 || H % p != 0 || W % p != 0 || N != (H / p) * (W / p) || dim % (p * p) != 0)
        throw shape_error(fmt::format("unpatchify: tokens of shape {} do not form a {}x{} image with patch size {}",
                                      tokens.shape(), H, W, p));
    const std::int64_t C = dim / (p * p);
    tensor<T, D> out(tensor_shape{B, C, H, W});
    patchify_kernels<D>::unpatchify(out.data(), tokens.data(), B, C, H, W, p);
    return out;
}

/// unpatchify for a square patch grid, as DiT (h = w = √N).
template <class T, device D>
tensor<T, D> unpatchify(const tensor_view<T, D>& tokens, std::int64_t p) {
    require_rank("unpatchify", tokens, 3);
    const auto side = static_cast<std::int64_t>(std::llround(std::sqrt(double(tokens.dim(1)))));
    if (side * side != tokens.dim(1))
        throw shape_error(fmt::format("unpatchify: {} tokens of shape {} do not form a square grid", tokens.dim(1), tokens.shape()));
    return unpatchify(tokens, p, side * p, side * p);
}

/// patchify's backward: dy tokens back to the image layout.
template <class T, device D>
tensor<T, D> patchify_backward(const tensor_view<T, D>& dy, std::int64_t p, std::int64_t H, std::int64_t W) {
    return unpatchify(dy, p, H, W);
}

/// unpatchify's backward: the image gradient cut back into tokens.
template <class T, device D>
tensor<T, D> unpatchify_backward(const tensor_view<T, D>& dy, std::int64_t p) {
    return patchify(dy, p);
}

} // namespace vediff::ops
