#pragma once
// cpu kernels for scaled dot-product attention. Per (batch, head): P = softmax(scale·Q·Kᵀ) over
// keys, O = P·V, with Eigen products on Maps of the caller's memory. Operands are addressed by
// strides, so the packed qkv of a transformer block (B, N, 3·D) and the channels-first feature
// maps of a convolutional attention block (B, C, H·W) are read and written in place, never
// rearranged into (B, H, N, hd) copies.
#include <cstdint>
#include <type_traits>

#include <fmt/format.h>

#include "vediff/backend/cpu/eigen.hpp"

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/backend/cpu/softmax.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cpu_detail {

/// A (tokens × features) operand: row-major with an outer stride (tokens-major), or column-major
/// (channels-first: the memory holds features × tokens).
template <class T, bool ChannelsFirst>
using attention_matrix =
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, ChannelsFirst ? Eigen::ColMajor : Eigen::RowMajor>;
template <class T, bool ChannelsFirst>
using attention_map = Eigen::Map<attention_matrix<T, ChannelsFirst>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T, bool ChannelsFirst>
using const_attention_map = Eigen::Map<const attention_matrix<T, ChannelsFirst>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using probability_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using probability_map = Eigen::Map<probability_matrix<T>>;
template <class T>
using const_probability_map = Eigen::Map<const probability_matrix<T>>;

template <class T, bool ChannelsFirst, class P>
auto operand_map(P* base, const attention_operand& o, std::int64_t b, std::int64_t h, std::int64_t tokens, std::int64_t features) {
    using map = std::conditional_t<std::is_const_v<P>, const_attention_map<T, ChannelsFirst>, attention_map<T, ChannelsFirst>>;
    return map(base + b * o.batch_stride + h * o.head_stride, tokens, features, Eigen::OuterStride<>(o.outer_stride));
}

} // namespace cpu_detail

template <>
struct attention_kernels<cpu> {
    /// What the forward keeps for the backward: on the cpu the probabilities themselves (a GPU
    /// kernel keeps only per-row softmax statistics and recomputes them, as flash attention does).
    template <class T>
    struct saved_state {
        tensor<T, cpu> probs;  // (B, H, Nq, Nk): softmax over keys
    };

    /// out = softmax(scale·q·kᵀ)·v; the returned state holds the softmax for the backward.
    template <bool ChannelsFirst, class T>
    static saved_state<T> forward(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        saved_state<T> saved{tensor<T, cpu>(tensor_shape{l.batch, l.heads, l.queries, l.keys})};
        T* probs = saved.probs.data();
        const std::int64_t nq = l.queries, nk = l.keys;
        cpu_detail::parallel_for(l.batch * l.heads, [&](std::int64_t bh) {
            head_forward<ChannelsFirst>(probs + bh * nq * nk, out, q, k, v, l, bh, scale);
        }, nq * nk * (l.key_dim + l.value_dim));
        return saved;
    }

    /// out alone, keeping nothing for a backward (inference): each thread's probabilities live in
    /// one (Nq, Nk) scratch block it reuses for all its (batch, head) pairs.
    template <bool ChannelsFirst, class T>
    static void forward_output(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        const std::int64_t nq = l.queries, nk = l.keys, pairs = l.batch * l.heads;
        const std::int64_t work = nq * nk * (l.key_dim + l.value_dim);
#pragma omp parallel if (pairs > 1 && pairs * work > cpu_detail::parallel_grain)
        {
            tensor<T, cpu> scratch(tensor_shape{nq, nk});
#pragma omp for schedule(static)
            for (std::int64_t bh = 0; bh < pairs; ++bh) head_forward<ChannelsFirst>(scratch.data(), out, q, k, v, l, bh, scale);
        }
    }
    /// Throws shape_error naming the op unless `saved` belongs to a forward of layout l.
    template <class T>
    static void check_saved(const char* op, const saved_state<T>& saved, const attention_layout& l) {
        const tensor_shape expected{l.batch, l.heads, l.queries, l.keys};
        if (!(saved.probs.shape() == expected))
            throw shape_error(fmt::format("{}: the saved probabilities must have shape {}, got {}", op, expected, saved.probs.shape()));
    }

    /// dv = Pᵀ·dout; dS = scale·P∘(dP − rowsum(dP∘P)) with dP = dout·vᵀ; dq = dS·k; dk = dSᵀ·q.
    /// dq, dk, dv are overwritten and laid out like q, k, v.
    template <bool ChannelsFirst, class T>
    static void backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const saved_state<T>& saved,
                         const attention_layout& l, T scale) {
        using namespace cpu_detail;
        const T* probs = saved.probs.data();
        const std::int64_t nq = l.queries, nk = l.keys;
        parallel_for(l.batch * l.heads, [&](std::int64_t bh) {
            const std::int64_t b = bh / l.heads, h = bh % l.heads;
            const auto Q = operand_map<T, ChannelsFirst>(q, l.q, b, h, nq, l.key_dim);
            const auto K = operand_map<T, ChannelsFirst>(k, l.k, b, h, nk, l.key_dim);
            const auto V = operand_map<T, ChannelsFirst>(v, l.v, b, h, nk, l.value_dim);
            const auto dO = operand_map<T, ChannelsFirst>(dout, l.out, b, h, nq, l.value_dim);
            auto dQ = operand_map<T, ChannelsFirst>(dq, l.q, b, h, nq, l.key_dim);
            auto dK = operand_map<T, ChannelsFirst>(dk, l.k, b, h, nk, l.key_dim);
            auto dV = operand_map<T, ChannelsFirst>(dv, l.v, b, h, nk, l.value_dim);
            const const_probability_map<T> P(probs + bh * nq * nk, nq, nk);
            // Per-(b, h) scratch from the recycling host allocator: no page faults after the first step.
            tensor<T, cpu> scratch(tensor_shape{nq, nk});
            probability_map<T> dS(scratch.data(), nq, nk);
            dV.noalias() = P.transpose() * dO;
            dS.noalias() = dO * V.transpose();
            for (std::int64_t i = 0; i < nq; ++i)
                softmax_backward_row(dS.data() + i * nk, dS.data() + i * nk, P.data() + i * nk, nk, scale);
            dQ.noalias() = dS * K;
            dK.noalias() = dS.transpose() * Q;
        }, nq * nk * (2 * l.key_dim + 2 * l.value_dim));
    }

private:
    /// One (batch, head) pair: P = softmax(scale·Q·Kᵀ) into probs (Nq, Nk), O = P·V.
    template <bool ChannelsFirst, class T>
    static void head_forward(T* probs, T* out, const T* q, const T* k, const T* v, const attention_layout& l, std::int64_t bh,
                             T scale) {
        using namespace cpu_detail;
        const std::int64_t b = bh / l.heads, h = bh % l.heads, nq = l.queries, nk = l.keys;
        const auto Q = operand_map<T, ChannelsFirst>(q, l.q, b, h, nq, l.key_dim);
        const auto K = operand_map<T, ChannelsFirst>(k, l.k, b, h, nk, l.key_dim);
        const auto V = operand_map<T, ChannelsFirst>(v, l.v, b, h, nk, l.value_dim);
        auto O = operand_map<T, ChannelsFirst>(out, l.out, b, h, nq, l.value_dim);
        probability_map<T> P(probs, nq, nk);
        P.noalias() = Q * K.transpose();
        // The scale is applied inside the softmax's exp, saving a pass over P.
        for (std::int64_t i = 0; i < nq; ++i) softmax_row(P.data() + i * nk, P.data() + i * nk, nk, scale);
        O.noalias() = P * V;
    }
};

} // namespace vediff
