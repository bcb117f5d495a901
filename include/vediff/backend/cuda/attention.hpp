#pragma once
// cuda kernels for scaled dot-product attention: per (batch, head) P = softmax(scale·Q·Kᵀ),
// O = P·V, as cuBLAS batched products (one call for all B·H pairs, through device tables of
// pointers, since an operand's batch and head strides differ) and the softmax rows of
// softmax.hpp's jobs. Operands are addressed by strides, tokens-major or channels-first, as on the cpu.
// The forward keeps only each row's log Σ exp for the backward, which recomputes the
// probabilities from the scores (one more batched product), so that a training step holds one
// layer's (B, H, Nq, Nk) at a time rather than every layer's. Float attention with heads up to
// 128 wide whose probabilities would take 1 GiB or more takes the fused kernels of
// fused_attention.hpp instead, which never write them (set_cuda_attention_path chooses either
// path for every call). Under bf16_mixed
// (core/precision.hpp) each product's two operands are rounded to bf16 copies of their layout
// and multiplied by cuBLAS with fp32 compute and fp32 output; the softmax and its backward stay
// fp32.
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <fmt/format.h>

#include "vediff/backend/cuda/fused_attention.hpp"
#include "vediff/backend/cuda/gemm.hpp"
#include "vediff/backend/cuda/layout.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/backend/cuda/softmax.hpp"
#include "vediff/core/error.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/precision.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

/// ptrs[b·heads + h] = base + b·batch_stride + h·head_stride
template <class T>
struct pointer_table_op {
    T** ptrs;
    T* base;
    std::int64_t heads, batch_stride, head_stride;
    __host__ __device__ void operator()(std::int64_t e) const { ptrs[e] = base + (e / heads) * batch_stride + (e % heads) * head_stride; }
};

/// One matrix of every (batch, head) pair: where each starts, its leading dimension, and whether
/// it is stored row-major (a tokens-major operand, the probabilities) or column-major (a
/// channels-first operand).
template <class T>
struct batched_matrix {
    T* base;
    std::int64_t batch_stride, head_stride, ld;
    bool row_major;
    batched_matrix transposed() const { return {base, batch_stride, head_stride, ld, !row_major}; }
};

template <class T>
T** pointer_table(tensor<T*, cuda>& storage, std::int64_t offset, const batched_matrix<T>& m, std::int64_t batch, std::int64_t heads) {
    T** ptrs = storage.data() + offset;
    for_each_element(batch * heads, pointer_table_op<T>{ptrs, m.base, heads, m.batch_stride, m.head_stride});
    return ptrs;
}

/// C = A·B for every (batch, head) pair, C (m × n), A (m × k), B (k × n), each in its own storage
/// order; cuBLAS computes column-major, so a row-major C is computed as Cᵀ = Bᵀ·Aᵀ.
template <class T>
void batched_product(std::int64_t batch, std::int64_t heads, std::int64_t m, std::int64_t n, std::int64_t k, batched_matrix<T> a,
                     batched_matrix<T> b, batched_matrix<T> c) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda attention: float or double");
    const std::int64_t count = batch * heads;
    if (count <= 0 || m <= 0 || n <= 0) return;
    tensor<T*, cuda> ptrs(tensor_shape{3 * count});
    T** pa = pointer_table(ptrs, 0, a, batch, heads);
    T** pb = pointer_table(ptrs, count, b, batch, heads);
    T** pc = pointer_table(ptrs, 2 * count, c, batch, heads);
    using types = cublas_types<T>;
    const T one = T(1), zero = T(0);
    // Column-major view: a matrix stored row-major is its own transpose there.
    if (c.row_major) {  // Cᵀ (n × m) = Bᵀ (n × k) · Aᵀ (k × m)
        check(cublasGemmBatchedEx(cublas(), b.row_major ? CUBLAS_OP_N : CUBLAS_OP_T, a.row_major ? CUBLAS_OP_N : CUBLAS_OP_T,
                                  as_int(n, "n"), as_int(m, "m"), as_int(k, "k"), &one, reinterpret_cast<const void* const*>(pb),
                                  types::data, as_int(b.ld, "ldb"), reinterpret_cast<const void* const*>(pa), types::data,
                                  as_int(a.ld, "lda"), &zero, reinterpret_cast<void* const*>(pc), types::data, as_int(c.ld, "ldc"),
                                  as_int(count, "batch"), types::compute(), CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx");
    } else {  // C (m × n) = A (m × k) · B (k × n)
        check(cublasGemmBatchedEx(cublas(), a.row_major ? CUBLAS_OP_T : CUBLAS_OP_N, b.row_major ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), &one, reinterpret_cast<const void* const*>(pa),
                                  types::data, as_int(a.ld, "lda"), reinterpret_cast<const void* const*>(pb), types::data,
                                  as_int(b.ld, "ldb"), &zero, reinterpret_cast<void* const*>(pc), types::data, as_int(c.ld, "ldc"),
                                  as_int(count, "batch"), types::compute(), CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx");
    }
}

/// Elements one operand of all (batch, head) pairs spans: the last pair's matrix (rows × cols as
/// the product uses it) ends there.
template <class T>
std::int64_t batched_span(const batched_matrix<T>& x, std::int64_t batch, std::int64_t heads, std::int64_t rows, std::int64_t cols) {
    const std::int64_t extent = x.row_major ? matrix_span(rows, cols, x.ld) : matrix_span(cols, rows, x.ld);
    return (batch - 1) * x.batch_stride + (heads - 1) * x.head_stride + extent;
}

/// batched_product under bf16_mixed: A and B rounded to bf16 copies of their layout, C in fp32.
inline void batched_product_bf16(std::int64_t batch, std::int64_t heads, std::int64_t m, std::int64_t n, std::int64_t k,
                                 batched_matrix<float> a, batched_matrix<float> b, batched_matrix<float> c) {
    const std::int64_t count = batch * heads;
    if (count <= 0 || m <= 0 || n <= 0) return;
    auto a16 = rounded_copy(a.base, batched_span(a, batch, heads, m, k));
    auto b16 = rounded_copy(b.base, batched_span(b, batch, heads, k, n));
    const auto as_bf16 = [](const batched_matrix<float>& x, __nv_bfloat16* base) {
        return batched_matrix<__nv_bfloat16>{base, x.batch_stride, x.head_stride, x.ld, x.row_major};
    };
    tensor<__nv_bfloat16*, cuda> ptrs16(tensor_shape{2 * count});
    tensor<float*, cuda> ptrs32(tensor_shape{count});
    __nv_bfloat16** pa = pointer_table(ptrs16, 0, as_bf16(a, a16.data()), batch, heads);
    __nv_bfloat16** pb = pointer_table(ptrs16, count, as_bf16(b, b16.data()), batch, heads);
    float** pc = pointer_table(ptrs32, 0, c, batch, heads);
    const float one = 1.0f, zero = 0.0f;
    if (c.row_major) {  // Cᵀ (n × m) = Bᵀ (n × k) · Aᵀ (k × m)
        check(cublasGemmBatchedEx(cublas(), b.row_major ? CUBLAS_OP_N : CUBLAS_OP_T, a.row_major ? CUBLAS_OP_N : CUBLAS_OP_T,
                                  as_int(n, "n"), as_int(m, "m"), as_int(k, "k"), &one, reinterpret_cast<const void* const*>(pb),
                                  CUDA_R_16BF, as_int(b.ld, "ldb"), reinterpret_cast<const void* const*>(pa), CUDA_R_16BF,
                                  as_int(a.ld, "lda"), &zero, reinterpret_cast<void* const*>(pc), CUDA_R_32F, as_int(c.ld, "ldc"),
                                  as_int(count, "batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx (bf16)");
    } else {  // C (m × n) = A (m × k) · B (k × n)
        check(cublasGemmBatchedEx(cublas(), a.row_major ? CUBLAS_OP_T : CUBLAS_OP_N, b.row_major ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  as_int(m, "m"), as_int(n, "n"), as_int(k, "k"), &one, reinterpret_cast<const void* const*>(pa),
                                  CUDA_R_16BF, as_int(a.ld, "lda"), reinterpret_cast<const void* const*>(pb), CUDA_R_16BF,
                                  as_int(b.ld, "ldb"), &zero, reinterpret_cast<void* const*>(pc), CUDA_R_32F, as_int(c.ld, "ldc"),
                                  as_int(count, "batch"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx (bf16)");
    }
}

/// batched_product, or batched_product_bf16 when Round.
template <bool Round, class T>
void product(std::int64_t batch, std::int64_t heads, std::int64_t m, std::int64_t n, std::int64_t k, batched_matrix<T> a,
             batched_matrix<T> b, batched_matrix<T> c) {
    if constexpr (Round) {
        static_assert(std::is_same_v<T, float>, "bf16_mixed attention takes float operands");
        batched_product_bf16(batch, heads, m, n, k, a, b, c);
    } else {
        batched_product(batch, heads, m, n, k, a, b, c);
    }
}

/// Where the automatic choice turns to the fused kernels: one layer's probabilities of 1 GiB or
/// more (DiT-B/2 at batch 256 writes 0.8 GiB; at 512 × 512 pixels, 3.2 GiB).
inline constexpr double fused_attention_from_bytes = double(std::int64_t{1} << 30);

/// Whether this call takes the fused kernels (fused_attention.hpp), by set_cuda_attention_path.
template <class T>
bool takes_fused_attention(const attention_layout& l) {
    if (!std::is_same_v<T, float> || !fused_attention_fits(l)) return false;
    switch (cuda_attention()) {
    case cuda_attention_path::fused: return true;
    case cuda_attention_path::unfused: return false;
    case cuda_attention_path::automatic: break;
    }
    return double(l.batch) * double(l.heads) * double(l.queries) * double(l.keys) * sizeof(float) >= fused_attention_from_bytes;
}

template <bool ChannelsFirst, class T>
batched_matrix<T> operand(const T* base, const attention_operand& o) {
    return {const_cast<T*>(base), o.batch_stride, o.head_stride, o.outer_stride, !ChannelsFirst};
}

} // namespace cuda_detail

template <>
struct attention_kernels<cuda> {
    /// log Σ_k exp(scale·q·kᵀ) per query row (B, H, Nq): the probabilities are recomputed from it.
    template <class T>
    struct saved_state {
        tensor<T, cuda> log_sum;
    };

    template <bool ChannelsFirst, class Precision = fp32, class T>
    static saved_state<T> forward(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        saved_state<T> saved{tensor<T, cuda>(tensor_shape{l.batch, l.heads, l.queries})};
        compute<Precision::rounds_operands>(saved.log_sum.data(), out, q, k, v, l, scale, std::bool_constant<ChannelsFirst>{});
        return saved;
    }
    /// out alone (inference).
    template <bool ChannelsFirst, class Precision = fp32, class T>
    static void forward_output(T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale) {
        compute<Precision::rounds_operands>(static_cast<T*>(nullptr), out, q, k, v, l, scale, std::bool_constant<ChannelsFirst>{});
    }

    template <class T>
    static void check_saved(const char* op, const saved_state<T>& saved, const attention_layout& l) {
        const tensor_shape expected{l.batch, l.heads, l.queries};
        if (!(saved.log_sum.shape() == expected))
            throw shape_error(fmt::format(fmt::runtime("{}: the saved row statistics must have shape {}, got {}"), op, expected,
                                          saved.log_sum.shape()));
    }

    /// dv = Pᵀ·dout; dS = scale·P∘(dP − rowsum(dP∘P)) with dP = dout·vᵀ; dq = dS·k; dk = dSᵀ·q.
    template <bool ChannelsFirst, class Precision = fp32, class T>
    static void backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const saved_state<T>& saved,
                         const attention_layout& l, T scale) {
        using namespace cuda_detail;
        constexpr bool round = Precision::rounds_operands;
        if constexpr (std::is_same_v<T, float>) {
            if (takes_fused_attention<T>(l)) {
                tensor<float, cuda> row_dot(tensor_shape{l.batch, l.heads, l.queries});
                fused_attention_backward_run<round>(fused_rows_on_device{}, dq, dk, dv, row_dot.data(), dout, q, k, v,
                                                    saved.log_sum.data(), l, scale, ChannelsFirst);
                return;
            }
        }
        const std::int64_t B = l.batch, H = l.heads, nq = l.queries, nk = l.keys, pair = nq * nk;
        tensor<T, cuda> p_storage(tensor_shape{B, H, nq, nk}), ds_storage(tensor_shape{B, H, nq, nk});
        const batched_matrix<T> P{p_storage.data(), H * pair, pair, nk, true};
        const batched_matrix<T> dS{ds_storage.data(), H * pair, pair, nk, true};
        const auto Q = operand<ChannelsFirst>(q, l.q), K = operand<ChannelsFirst>(k, l.k), V = operand<ChannelsFirst>(v, l.v);
        const auto dO = operand<ChannelsFirst>(dout, l.out);
        const auto dQ = operand<ChannelsFirst>(dq, l.q), dK = operand<ChannelsFirst>(dk, l.k), dV = operand<ChannelsFirst>(dv, l.v);
        product<round>(B, H, nq, nk, l.key_dim, Q, K.transposed(), P);       // S = Q·Kᵀ again
        for_each_element(B * H * pair, softmax_from_log_sum_op<T>{p_storage.data(), saved.log_sum.data(), nk, scale});
        product<round>(B, H, nk, l.value_dim, nq, P.transposed(), dO, dV);   // dV = Pᵀ·dO
        product<round>(B, H, nq, nk, l.value_dim, dO, V.transposed(), dS);   // dP = dO·Vᵀ
        reduce_rows(softmax_backward_job<T>{ds_storage.data(), ds_storage.data(), p_storage.data(), nk, scale}, B * H * nq, nk);
        product<round>(B, H, nq, l.key_dim, nk, dS, K, dQ);                  // dQ = dS·K
        product<round>(B, H, nk, l.key_dim, nq, dS.transposed(), Q, dK);     // dK = dSᵀ·Q
    }

private:
    /// out, and log_sum (B, H, Nq) unless null; the probabilities live in a scratch tensor.
    template <bool Round, class T, bool ChannelsFirst>
    static void compute(T* log_sum, T* out, const T* q, const T* k, const T* v, const attention_layout& l, T scale,
                        std::bool_constant<ChannelsFirst>) {
        using namespace cuda_detail;
        if constexpr (std::is_same_v<T, float>) {
            if (takes_fused_attention<T>(l)) {
                fused_attention_forward_run<Round>(fused_rows_on_device{}, out, log_sum, q, k, v, l, scale, ChannelsFirst);
                return;
            }
        }
        const std::int64_t B = l.batch, H = l.heads, nq = l.queries, nk = l.keys, pair = nq * nk;
        tensor<T, cuda> p_storage(tensor_shape{B, H, nq, nk});
        T* probs = p_storage.data();
        const batched_matrix<T> P{probs, H * pair, pair, nk, true};
        const auto Q = operand<ChannelsFirst>(q, l.q), K = operand<ChannelsFirst>(k, l.k), V = operand<ChannelsFirst>(v, l.v);
        const auto O = operand<ChannelsFirst>(out, l.out);
        product<Round>(B, H, nq, nk, l.key_dim, Q, K.transposed(), P);  // S = Q·Kᵀ
        // The scale is applied inside the softmax's exp, as on the cpu.
        reduce_rows(softmax_job<T>{probs, probs, nk, scale, log_sum}, B * H * nq, nk);
        product<Round>(B, H, nq, l.value_dim, nk, P, V, O);             // O = P·V
    }
};

} // namespace vediff
