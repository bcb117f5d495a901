#pragma once
// cpu kernels for scaled dot-product attention. Per (batch, head): P = softmax(scale·Q·Kᵀ) over
// keys, O = P·V. Operands are addressed by strides, so the packed qkv of a transformer block
// (B, N, 3·D) and the channels-first feature maps of a convolutional attention block (B, C, H·W)
// are read and written in place, never rearranged into (B, H, N, hd) copies. Tokens-major float
// operands go through small_gemm.hpp's unpacked AVX-512 kernel (only K, or V in the backward, is
// transposed, into a per-head scratch); other layouts and types through Eigen products on Maps.
// Under a rounding precision policy (bf16_mixed, tokens-major operands) every product goes
// through gemm_kernels<cpu>::gemm_bf16_serial, its operands in place through their strides.
#include <cstdint>
#include <type_traits>

#include <fmt/format.h>

#include "vediff/backend/cpu/eigen.hpp"
#include "vediff/backend/cpu/gemm.hpp"
#include "vediff/core/precision.hpp"

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/backend/cpu/small_gemm.hpp"
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
    template <bool ChannelsFirst, class Precision = fp32, class T>
    static saved_state<T> forward(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        saved_state<T> saved{tensor<T, cpu>(tensor_shape{l.batch, l.heads, l.queries, l.keys})};
        T* probs = saved.probs.data();
        const std::int64_t nq = l.queries, nk = l.keys;
        for_each_pair<T>(l, nq * nk * (l.key_dim + l.value_dim), direct_products<ChannelsFirst, T>() ? l.key_dim * nk : 0,
                         [&](std::int64_t bh, T* keys_transposed) {
                             head_forward<ChannelsFirst, Precision>(probs + bh * nq * nk, keys_transposed, out, q, k, v, l, bh, scale);
                         });
        return saved;
    }

    /// out alone, keeping nothing for a backward (inference): each thread's probabilities live in
    /// its scratch block, reused for all its (batch, head) pairs.
    template <bool ChannelsFirst, class Precision = fp32, class T>
    static void forward_output(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        const std::int64_t nq = l.queries, nk = l.keys;
        for_each_pair<T>(l, nq * nk * (l.key_dim + l.value_dim), nq * nk + (direct_products<ChannelsFirst, T>() ? l.key_dim * nk : 0),
                         [&](std::int64_t bh, T* scratch) {
                             head_forward<ChannelsFirst, Precision>(scratch, scratch + nq * nk, out, q, k, v, l, bh, scale);
                         });
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
    template <bool ChannelsFirst, class Precision = fp32, class T>
    static void backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const saved_state<T>& saved,
                         const attention_layout& l, T scale) {
        using namespace cpu_detail;
        const T* probs = saved.probs.data();
        const std::int64_t nq = l.queries, nk = l.keys;
        if constexpr (Precision::rounds_operands) {
            static_assert(!ChannelsFirst && std::is_same_v<T, float>,
                          "bf16_mixed attention on the cpu: tokens-major float operands (channels-first attention stays fp32)");
            for_each_pair<T>(l, nq * nk * (2 * l.key_dim + 2 * l.value_dim), nq * nk, [&](std::int64_t bh, T* ds) {
                head_backward_bf16(dq, dk, dv, dout, q, k, v, probs + bh * nq * nk, ds, l, bh / l.heads, bh % l.heads, scale);
            });
            return;
        }
        // Per-thread scratch: dS (Nq, Nk), and Vᵀ for the direct products.
        const std::int64_t scratch = nq * nk + (direct_products<ChannelsFirst, T>() ? l.value_dim * nk : 0);
        for_each_pair<T>(l, nq * nk * (2 * l.key_dim + 2 * l.value_dim), scratch, [&](std::int64_t bh, T* ds) {
            const std::int64_t b = bh / l.heads, h = bh % l.heads;
#if defined(__AVX512F__)
            if constexpr (direct_products<ChannelsFirst, T>()) {
                head_backward_direct(dq, dk, dv, dout, q, k, v, probs + bh * nq * nk, ds, l, b, h, scale);
                return;
            }
#endif
            const auto Q = operand_map<T, ChannelsFirst>(q, l.q, b, h, nq, l.key_dim);
            const auto K = operand_map<T, ChannelsFirst>(k, l.k, b, h, nk, l.key_dim);
            const auto V = operand_map<T, ChannelsFirst>(v, l.v, b, h, nk, l.value_dim);
            const auto dO = operand_map<T, ChannelsFirst>(dout, l.out, b, h, nq, l.value_dim);
            auto dQ = operand_map<T, ChannelsFirst>(dq, l.q, b, h, nq, l.key_dim);
            auto dK = operand_map<T, ChannelsFirst>(dk, l.k, b, h, nk, l.key_dim);
            auto dV = operand_map<T, ChannelsFirst>(dv, l.v, b, h, nk, l.value_dim);
            const const_probability_map<T> P(probs + bh * nq * nk, nq, nk);
            probability_map<T> dS(ds, nq, nk);
            dV.noalias() = P.transpose() * dO;
            dS.noalias() = dO * V.transpose();
            for (std::int64_t i = 0; i < nq; ++i)
                softmax_backward_row(dS.data() + i * nk, dS.data() + i * nk, P.data() + i * nk, nk, scale);
            dQ.noalias() = dS * K;
            dK.noalias() = dS.transpose() * Q;
        });
    }

private:
    /// f(bh, scratch) for every (batch, head) pair, in parallel when the work is large; each
    /// thread allocates one scratch block of `scratch_size` elements and reuses it for all its
    /// pairs (one allocation per thread, not one per pair). work: the multiply-adds of one pair.
    template <class T, class F>
    static void for_each_pair(const attention_layout& l, std::int64_t work, std::int64_t scratch_size, F&& f) {
        const std::int64_t pairs = l.batch * l.heads;
#pragma omp parallel if (pairs > 1 && pairs * work > cpu_detail::parallel_grain)
        {
            tensor<T, cpu> scratch(tensor_shape{scratch_size});
#pragma omp for schedule(static)
            for (std::int64_t bh = 0; bh < pairs; ++bh) f(bh, scratch.data());
        }
    }

    /// Whether the products go through small_gemm (tokens-major float operands with AVX-512).
    template <bool ChannelsFirst, class T>
    static constexpr bool direct_products() {
        return !ChannelsFirst && std::is_same_v<T, float> && cpu_detail::small_gemm_available;
    }

    /// rows × cols of a row-major matrix (leading dimension ld) into dst (cols × rows), contiguous.
    template <class T>
    static void transpose_into(T* dst, const T* src, std::int64_t ld, std::int64_t rows, std::int64_t cols) {
        for (std::int64_t c = 0; c < cols; ++c)
            for (std::int64_t r = 0; r < rows; ++r) dst[c * rows + r] = src[r * ld + c];
    }

    /// One (batch, head) pair: P = softmax(scale·Q·Kᵀ) into probs (Nq, Nk), O = P·V.
    /// keys_transposed: scratch of key_dim × Nk for the direct products (unused otherwise).
    template <bool ChannelsFirst, class Precision, class T>
    static void head_forward(T* probs, T* keys_transposed, T* out, const T* q, const T* k, const T* v, const attention_layout& l,
                             std::int64_t bh, T scale) {
        using namespace cpu_detail;
        const std::int64_t b = bh / l.heads, h = bh % l.heads, nq = l.queries, nk = l.keys;
        if constexpr (Precision::rounds_operands) {
            static_assert(!ChannelsFirst && std::is_same_v<T, float>,
                          "bf16_mixed attention on the cpu: tokens-major float operands (channels-first attention stays fp32)");
            const float* qb = q + b * l.q.batch_stride + h * l.q.head_stride;
            const float* kb = k + b * l.k.batch_stride + h * l.k.head_stride;
            const float* vb = v + b * l.v.batch_stride + h * l.v.head_stride;
            float* ob = out + b * l.out.batch_stride + h * l.out.head_stride;
            // S = bf16(Q)·bf16(K)ᵀ, P = softmax(scale·S) in fp32, O = bf16(P)·bf16(V).
            gemm_kernels<cpu>::gemm_bf16_serial(nq, nk, l.key_dim, 1.0f, qb, l.q.outer_stride, false, kb, l.k.outer_stride, true, 0.0f,
                                                probs, nk);
            for (std::int64_t i = 0; i < nq; ++i) softmax_row(probs + i * nk, probs + i * nk, nk, scale);
            gemm_kernels<cpu>::gemm_bf16_serial(nq, l.value_dim, nk, 1.0f, probs, nk, false, vb, l.v.outer_stride, false, 0.0f, ob,
                                                l.out.outer_stride);
            return;
        }
#if defined(__AVX512F__)
        if constexpr (direct_products<ChannelsFirst, T>()) {
            const T* qb = q + b * l.q.batch_stride + h * l.q.head_stride;
            const T* kb = k + b * l.k.batch_stride + h * l.k.head_stride;
            const T* vb = v + b * l.v.batch_stride + h * l.v.head_stride;
            T* ob = out + b * l.out.batch_stride + h * l.out.head_stride;
            transpose_into(keys_transposed, kb, l.k.outer_stride, nk, l.key_dim);
            small_gemm(nq, nk, l.key_dim, 1.0f, qb, l.q.outer_stride, 1, keys_transposed, nk, probs, nk);
            for (std::int64_t i = 0; i < nq; ++i) softmax_row(probs + i * nk, probs + i * nk, nk, scale);
            small_gemm(nq, l.value_dim, nk, 1.0f, probs, nk, 1, vb, l.v.outer_stride, ob, l.out.outer_stride);
            return;
        }
#endif
        (void)keys_transposed;
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

    /// backward for one (batch, head) pair under bf16_mixed: the four products from bf16-rounded
    /// operands (dO, V, P, dS, K, Q) with fp32 sums; the softmax backward in fp32.
    static void head_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                                   const float* probs, float* ds, const attention_layout& l, std::int64_t b, std::int64_t h,
                                   float scale) {
        using namespace cpu_detail;
        const std::int64_t nq = l.queries, nk = l.keys, dkey = l.key_dim, dval = l.value_dim;
        const auto at = [&](auto* base, const attention_operand& o) { return base + b * o.batch_stride + h * o.head_stride; };
        const float *qb = at(q, l.q), *kb = at(k, l.k), *vb = at(v, l.v), *dob = at(dout, l.out);
        float *dqb = at(dq, l.q), *dkb = at(dk, l.k), *dvb = at(dv, l.v);
        using g = gemm_kernels<cpu>;
        g::gemm_bf16_serial(nk, dval, nq, 1.0f, probs, nk, true, dob, l.out.outer_stride, false, 0.0f, dvb, l.v.outer_stride);  // dV = Pᵀ·dO
        g::gemm_bf16_serial(nq, nk, dval, 1.0f, dob, l.out.outer_stride, false, vb, l.v.outer_stride, true, 0.0f, ds, nk);     // dP = dO·Vᵀ
        for (std::int64_t i = 0; i < nq; ++i) softmax_backward_row(ds + i * nk, ds + i * nk, probs + i * nk, nk, scale);
        g::gemm_bf16_serial(nq, dkey, nk, 1.0f, ds, nk, false, kb, l.k.outer_stride, false, 0.0f, dqb, l.q.outer_stride);  // dQ = dS·K
        g::gemm_bf16_serial(nk, dkey, nq, 1.0f, ds, nk, true, qb, l.q.outer_stride, false, 0.0f, dkb, l.k.outer_stride);   // dK = dSᵀ·Q
    }

#if defined(__AVX512F__)
    /// backward's products for one (batch, head) pair through small_gemm (direct_products).
    static void head_backward_direct(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                                     const float* v, const float* probs, float* ds, const attention_layout& l, std::int64_t b,
                                     std::int64_t h, float scale) {
        using namespace cpu_detail;
        const std::int64_t nq = l.queries, nk = l.keys, dkey = l.key_dim, dval = l.value_dim;
        const auto at = [&](auto* base, const attention_operand& o) { return base + b * o.batch_stride + h * o.head_stride; };
        const float *qb = at(q, l.q), *kb = at(k, l.k), *vb = at(v, l.v), *dob = at(dout, l.out);
        float *dqb = at(dq, l.q), *dkb = at(dk, l.k), *dvb = at(dv, l.v);
        float* values_transposed = ds + nq * nk;  // ds: the caller's scratch of nq·nk + dval·nk
        // dV = Pᵀ·dO (Pᵀ read through its strides), dS = dO·Vᵀ, then the softmax's backward.
        small_gemm(nk, dval, nq, 1.0f, probs, 1, nk, dob, l.out.outer_stride, dvb, l.v.outer_stride);
        transpose_into(values_transposed, vb, l.v.outer_stride, nk, dval);
        small_gemm(nq, nk, dval, 1.0f, dob, l.out.outer_stride, 1, values_transposed, nk, ds, nk);
        for (std::int64_t i = 0; i < nq; ++i) softmax_backward_row(ds + i * nk, ds + i * nk, probs + i * nk, nk, scale);
        // dQ = dS·K, dK = dSᵀ·Q.
        small_gemm(nq, dkey, nk, 1.0f, ds, nk, 1, kb, l.k.outer_stride, dqb, l.q.outer_stride);
        small_gemm(nk, dkey, nq, 1.0f, ds, 1, nk, qb, l.q.outer_stride, dkb, l.k.outer_stride);
    }
#endif
};

} // namespace vediff
