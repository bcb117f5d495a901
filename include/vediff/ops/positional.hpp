#pragma once
// Position and time encodings of the diffusion transformers:
//   timestep_embedding  t (B) → (B, dim): DiT's sinusoidal frequencies, [cos | sin] (cos first);
//   rope / rope_backward  rotary position embedding on (B, N, heads, hd) with (N, hd) cos and sin
//                         tables (LightningDiT's 2-D RoPE; the tables come from models/positional_tables.hpp).
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// t (B) → (B, dim), dim even: [cos(t·f_k) | sin(t·f_k)], f_k = exp(−ln(max_period)·k/(dim/2)).
/// t is used as given (DiT feeds 0..999, SiT and LightningDiT t ∈ [0, 1]).
template <class T, device D>
tensor<T, D> timestep_embedding(const tensor_view<T, D>& t, std::int64_t dim = 256, double max_period = 10000.0) {
    require_rank("timestep_embedding", t, 1, "t");
    if (dim <= 0 || dim % 2 != 0) throw shape_error(fmt::format("timestep_embedding: dim {} must be positive and even", dim));
    tensor<T, D> out(tensor_shape{t.dim(0), dim});
    positional_kernels<D>::timestep_embedding(out.data(), t.data(), t.dim(0), dim / 2, max_period);
    return out;
}

namespace detail {
template <class T, device D>
void check_rope(const char* op, const tensor_view<T, D>& x, const tensor_view<T, D>& cos, const tensor_view<T, D>& sin) {
    require_rank(op, x, 4, "x (B, N, heads, head_dim)");
    const tensor_shape table{x.dim(1), x.dim(3)};
    if (!(cos.shape() == table) || !(sin.shape() == table) || x.dim(3) % 2 != 0)
        throw shape_error(fmt::format("{}: x {} needs cos and sin tables of shape {} (even head_dim), got {} and {}", op,
                                      x.shape(), table, cos.shape(), sin.shape()));
}
} // namespace detail

/// x·cos + rotate_half(x)·sin with rotate_half(x₂ᵢ, x₂ᵢ₊₁) = (−x₂ᵢ₊₁, x₂ᵢ); x (B, N, heads, hd).
template <class T, device D>
tensor<T, D> rope(const tensor_view<T, D>& x, const tensor_view<T, D>& cos, const tensor_view<T, D>& sin) {
    detail::check_rope("rope", x, cos, sin);
    tensor<T, D> y(x.shape());
    positional_kernels<D>::rope_forward(y.data(), x.data(), cos.data(), sin.data(), x.dim(0), x.dim(1), x.dim(2), x.dim(3));
    return y;
}

/// dx of rope from dy (B, N, heads, hd): the rotation transposed.
template <class T, device D>
tensor<T, D> rope_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& cos, const tensor_view<T, D>& sin) {
    detail::check_rope("rope_backward", dy, cos, sin);
    tensor<T, D> dx(dy.shape());
    positional_kernels<D>::rope_backward(dx.data(), dy.data(), cos.data(), sin.data(), dy.dim(0), dy.dim(1), dy.dim(2), dy.dim(3));
    return dx;
}

} // namespace vediff::ops
