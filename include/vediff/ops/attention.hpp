#pragma once
// Scaled dot-product attention, softmax(scale·q·kᵀ)·v with scale = d^−½ by default, in three
// layouts of the same computation:
//   attention          q (B, H, Nq, d), k (B, H, Nk, d), v (B, H, Nk, dv) → (B, H, Nq, dv);
//   packed_attention   qkv (B, N, 3·D) as a DiT block's qkv Linear gives it (reshape to
//                      (B, N, 3, heads, hd): [q | k | v], heads contiguous) → (B, N, D);
//   spatial_attention  channels-first q (B, C, Sq), k (B, C, Sk), v (B, Cv, Sk) → (B, Cv, Sq), one
//                      head over positions: LDM's AttnBlock after its 1×1 q, k, v convolutions.
// Each forward returns the output and the backend's saved state for its backward (the cpu keeps
// the probabilities (B, H, Nq, Nk) there; the cuda backend only each row's log Σ exp).
// packed_attention_output computes the output alone, keeping nothing; packed_attention does
// that itself under nn::no_grad, so a layer has one forward for training and inference.
// The packed forms take a precision policy first (core/precision.hpp): under bf16_mixed the
// products q·kᵀ and p·v (and the backward's four) round their operands to bfloat16 and
// accumulate in fp32, while the softmax, its backward and the saved probabilities stay fp32.
#include <cmath>
#include <cstdint>
#include <optional>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/nn/grad_mode.hpp"

namespace vediff::ops {

/// What a device's attention forward keeps for its backward.
template <class T, device D>
using attention_saved = typename attention_kernels<D>::template saved_state<T>;

template <class T, device D>
struct attention_result {
    tensor<T, D> out;             // (B, H, Nq, dv); (B, N, D) packed; (B, Cv, Sq) spatial
    attention_saved<T, D> saved;  // the backend's state for the backward
};

template <class T, device D>
struct attention_gradients {
    tensor<T, D> dq;  // shape of q
    tensor<T, D> dk;  // shape of k
    tensor<T, D> dv;  // shape of v
};

namespace detail {

inline double attention_scale(std::optional<double> scale, std::int64_t key_dim) {
    return scale ? *scale : 1.0 / std::sqrt(double(key_dim));
}

template <class T, device D>
void check_dout(const char* op, const tensor_view<T, D>& dout, const tensor_shape& expected) {
    if (!(dout.shape() == expected))
        throw shape_error(fmt::format("{}: dout must have the output's shape {}, got {}", op, expected, dout.shape()));
}

/// (B, H, N, d) operands, contiguous.
template <class T, device D>
attention_layout heads_layout(const char* op, const tensor_view<T, D>& q, const tensor_view<T, D>& k, const tensor_view<T, D>& v) {
    const bool ok = q.rank() == 4 && k.rank() == 4 && v.rank() == 4 && k.dim(0) == q.dim(0) && v.dim(0) == q.dim(0) &&
                    k.dim(1) == q.dim(1) && v.dim(1) == q.dim(1) && k.dim(3) == q.dim(3) && v.dim(2) == k.dim(2) &&
                    k.dim(2) > 0;
    if (!ok)
        throw shape_error(fmt::format("{}: q {}, k {}, v {} must be (B, H, Nq, d), (B, H, Nk, d), (B, H, Nk, dv), Nk > 0", op,
                                      q.shape(), k.shape(), v.shape()));
    attention_layout l;
    l.batch = q.dim(0);
    l.heads = q.dim(1);
    l.queries = q.dim(2);
    l.keys = k.dim(2);
    l.key_dim = q.dim(3);
    l.value_dim = v.dim(3);
    const auto contiguous = [&](std::int64_t tokens, std::int64_t features) {
        return attention_operand{l.heads * tokens * features, tokens * features, features};
    };
    l.q = contiguous(l.queries, l.key_dim);
    l.k = contiguous(l.keys, l.key_dim);
    l.v = contiguous(l.keys, l.value_dim);
    l.out = contiguous(l.queries, l.value_dim);
    return l;
}

/// qkv (B, N, 3·D): q, k, v start at columns 0, D, 2·D of each token's row; head h at h·hd.
template <class T, device D>
attention_layout packed_layout(const char* op, const tensor_view<T, D>& qkv, std::int64_t heads) {
    if (qkv.rank() != 3 || heads <= 0 || qkv.dim(2) % (3 * heads) != 0)
        throw shape_error(fmt::format("{}: qkv {} must be (B, N, 3·D) with D divisible by {} heads", op, qkv.shape(), heads));
    const std::int64_t n = qkv.dim(1), d = qkv.dim(2) / 3, hd = d / heads;
    attention_layout l;
    l.batch = qkv.dim(0);
    l.heads = heads;
    l.queries = l.keys = n;
    l.key_dim = l.value_dim = hd;
    l.q = l.k = l.v = attention_operand{n * 3 * d, hd, 3 * d};
    l.out = attention_operand{n * d, hd, d};
    return l;
}

/// Channels-first (B, C, S) operands, one head.
template <class T, device D>
attention_layout spatial_layout(const char* op, const tensor_view<T, D>& q, const tensor_view<T, D>& k, const tensor_view<T, D>& v) {
    const bool ok = q.rank() == 3 && k.rank() == 3 && v.rank() == 3 && k.dim(0) == q.dim(0) && v.dim(0) == q.dim(0) &&
                    k.dim(1) == q.dim(1) && v.dim(2) == k.dim(2) && k.dim(2) > 0;
    if (!ok)
        throw shape_error(fmt::format("{}: q {}, k {}, v {} must be (B, C, Sq), (B, C, Sk), (B, Cv, Sk), Sk > 0", op, q.shape(),
                                      k.shape(), v.shape()));
    attention_layout l;
    l.batch = q.dim(0);
    l.heads = 1;
    l.queries = q.dim(2);
    l.keys = k.dim(2);
    l.key_dim = q.dim(1);
    l.value_dim = v.dim(1);
    l.q = attention_operand{l.key_dim * l.queries, 0, l.queries};
    l.k = attention_operand{l.key_dim * l.keys, 0, l.keys};
    l.v = attention_operand{l.value_dim * l.keys, 0, l.keys};
    l.out = attention_operand{l.value_dim * l.queries, 0, l.queries};
    return l;
}

template <bool ChannelsFirst, class T, device D>
attention_result<T, D> attention_forward(const attention_layout& l, tensor_shape out_shape, const T* q, const T* k,
                                         const T* v, double scale) {
    tensor<T, D> out(out_shape);
    auto saved = attention_kernels<D>::template forward<ChannelsFirst>(out.data(), q, k, v, l, T(scale));
    return {std::move(out), std::move(saved)};
}

/// Gradients of separate q, k, v operands (the layouts whose gradients are three tensors).
template <bool ChannelsFirst, class T, device D>
attention_gradients<T, D> attention_backward(const char* op, const attention_layout& l, const tensor_shape& out_shape,
                                             const tensor_view<T, D>& dout, const tensor_view<T, D>& q,
                                             const tensor_view<T, D>& k, const tensor_view<T, D>& v,
                                             const attention_saved<T, D>& saved, double scale) {
    attention_kernels<D>::check_saved(op, saved, l);
    check_dout(op, dout, out_shape);
    attention_gradients<T, D> g{tensor<T, D>(q.shape()), tensor<T, D>(k.shape()), tensor<T, D>(v.shape())};
    attention_kernels<D>::template backward<ChannelsFirst>(g.dq.data(), g.dk.data(), g.dv.data(), dout.data(), q.data(),
                                                           k.data(), v.data(), saved, l, T(scale));
    return g;
}

} // namespace detail

/// softmax(scale·q·kᵀ)·v per (batch, head); q (B, H, Nq, d), k (B, H, Nk, d), v (B, H, Nk, dv).
template <class T, device D>
attention_result<T, D> attention(const tensor_view<T, D>& q, const tensor_view<T, D>& k, const tensor_view<T, D>& v,
                                 std::optional<double> scale = std::nullopt) {
    const auto l = detail::heads_layout("attention", q, k, v);
    return detail::attention_forward<false, T, D>(l, tensor_shape{l.batch, l.heads, l.queries, l.value_dim}, q.data(),
                                                  k.data(), v.data(), detail::attention_scale(scale, l.key_dim));
}

/// dq, dk, dv from dout (B, H, Nq, dv) and the forward's saved state.
template <class T, device D>
attention_gradients<T, D> attention_backward(const tensor_view<T, D>& dout, const tensor_view<T, D>& q,
                                             const tensor_view<T, D>& k, const tensor_view<T, D>& v,
                                             const attention_saved<T, D>& saved, std::optional<double> scale = std::nullopt) {
    const auto l = detail::heads_layout("attention_backward", q, k, v);
    return detail::attention_backward<false>("attention_backward", l, tensor_shape{l.batch, l.heads, l.queries, l.value_dim},
                                             dout, q, k, v, saved, detail::attention_scale(scale, l.key_dim));
}

/// packed_attention's output alone, with no state kept for a backward (inference, nn::no_grad).
template <precision_policy P = fp32, class T, device D>
tensor<T, D> packed_attention_output(const tensor_view<T, D>& qkv, std::int64_t heads, std::optional<double> scale = std::nullopt) {
    const auto l = detail::packed_layout("packed_attention_output", qkv, heads);
    const T* base = qkv.data();
    const std::int64_t d = l.heads * l.key_dim;
    tensor<T, D> out(tensor_shape{l.batch, l.queries, d});
    const T s = T(detail::attention_scale(scale, l.key_dim));
    if constexpr (P::rounds_operands) attention_kernels<D>::template forward_output<false, P>(out.data(), base, base + d, base + 2 * d, l, s);
    else attention_kernels<D>::template forward_output<false>(out.data(), base, base + d, base + 2 * d, l, s);
    return out;
}

/// Multi-head self-attention on a packed qkv (B, N, 3·D) → (B, N, D), heads concatenated. Under
/// nn::no_grad the saved state stays empty: the output-only kernel, the same arithmetic, runs
/// without storing what a backward would read (on the cpu, every head's probabilities).
template <precision_policy P = fp32, class T, device D>
attention_result<T, D> packed_attention(const tensor_view<T, D>& qkv, std::int64_t heads,
                                        std::optional<double> scale = std::nullopt) {
    if (!nn::grad_enabled()) return {packed_attention_output<P>(qkv, heads, scale), {}};
    const auto l = detail::packed_layout("packed_attention", qkv, heads);
    const T* base = qkv.data();
    const std::int64_t d = l.heads * l.key_dim;
    if constexpr (P::rounds_operands) {
        tensor<T, D> out(tensor_shape{l.batch, l.queries, d});
        auto saved = attention_kernels<D>::template forward<false, P>(out.data(), base, base + d, base + 2 * d, l,
                                                                      T(detail::attention_scale(scale, l.key_dim)));
        return {std::move(out), std::move(saved)};
    } else {
        return detail::attention_forward<false, T, D>(l, tensor_shape{l.batch, l.queries, d}, base, base + d, base + 2 * d,
                                                      detail::attention_scale(scale, l.key_dim));
    }
}

/// dqkv (B, N, 3·D) from dout (B, N, D) and the forward's saved state.
template <precision_policy P = fp32, class T, device D>
tensor<T, D> packed_attention_backward(const tensor_view<T, D>& dout, const tensor_view<T, D>& qkv,
                                       const attention_saved<T, D>& saved, std::int64_t heads,
                                       std::optional<double> scale = std::nullopt) {
    const auto l = detail::packed_layout("packed_attention_backward", qkv, heads);
    attention_kernels<D>::check_saved("packed_attention_backward", saved, l);
    const std::int64_t d = l.heads * l.key_dim;
    detail::check_dout("packed_attention_backward", dout, tensor_shape{l.batch, l.queries, d});
    tensor<T, D> dqkv(qkv.shape());
    const T* base = qkv.data();
    const T s = T(detail::attention_scale(scale, l.key_dim));
    if constexpr (P::rounds_operands)
        attention_kernels<D>::template backward<false, P>(dqkv.data(), dqkv.data() + d, dqkv.data() + 2 * d, dout.data(), base, base + d,
                                                          base + 2 * d, saved, l, s);
    else
        attention_kernels<D>::template backward<false>(dqkv.data(), dqkv.data() + d, dqkv.data() + 2 * d, dout.data(), base, base + d,
                                                       base + 2 * d, saved, l, s);
    return dqkv;
}

/// Single-head attention over positions of channels-first maps: q (B, C, Sq), k (B, C, Sk),
/// v (B, Cv, Sk) → (B, Cv, Sq); scale C^−½ by default. 
template <class T, device D>
attention_result<T, D> spatial_attention(const tensor_view<T, D>& q, const tensor_view<T, D>& k, const tensor_view<T, D>& v,
                                         std::optional<double> scale = std::nullopt) {
    const auto l = detail::spatial_layout("spatial_attention", q, k, v);
    return detail::attention_forward<true, T, D>(l, tensor_shape{l.batch, l.value_dim, l.queries}, q.data(), k.data(),
                                                 v.data(), detail::attention_scale(scale, l.key_dim));
}

/// dq, dk, dv of spatial_attention from dout (B, Cv, Sq) and the forward's saved state.
template <class T, device D>
attention_gradients<T, D> spatial_attention_backward(const tensor_view<T, D>& dout, const tensor_view<T, D>& q,
                                                     const tensor_view<T, D>& k, const tensor_view<T, D>& v,
                                                     const attention_saved<T, D>& saved,
                                                     std::optional<double> scale = std::nullopt) {
    const auto l = detail::spatial_layout("spatial_attention_backward", q, k, v);
    return detail::attention_backward<true>("spatial_attention_backward", l, tensor_shape{l.batch, l.value_dim, l.queries},
                                            dout, q, k, v, saved, detail::attention_scale(scale, l.key_dim));
}

} // namespace vediff::ops
