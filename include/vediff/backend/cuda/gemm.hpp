#pragma once
// cuda kernels for matrix products through cuBLAS. vediff's matrices are row-major and cuBLAS's
// column-major: a row-major m × n matrix with leading dimension ld is, to cuBLAS, its n × m
// transpose with the same ld, so C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ with the
// operands swapped and no copies. Float products use FP32 math unless set_cuda_tf32(true); the
// convolutions' follow set_cuda_conv_tf32 (on by default, as PyTorch's cuDNN convolutions).
// bf16_mixed products (core/precision.hpp) round their float operands to __nv_bfloat16 (round to
// nearest even, __float2bfloat16_rn) into scratch copies of the same layout and call cuBLAS with
// bf16 inputs, an fp32 output and fp32 compute (CUBLAS_COMPUTE_32F), the tensor-core path.
// A Linear's forward is one cuBLASLt matmul with the bias fused into its epilogue.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>

#include <cuda_bf16.h>
#include <thrust/execution_policy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct cublas_types;
template <>
struct cublas_types<float> {
    static constexpr cudaDataType_t data = CUDA_R_32F;
    static cublasComputeType_t compute(bool tf32) { return tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F; }
    static cublasComputeType_t compute() { return compute(cuda_tf32()); }
};
template <>
struct cublas_types<double> {
    static constexpr cudaDataType_t data = CUDA_R_64F;
    static cublasComputeType_t compute(bool) { return CUBLAS_COMPUTE_64F; }
    static cublasComputeType_t compute() { return CUBLAS_COMPUTE_64F; }
};

inline int as_int(std::int64_t v, const char* what) {
    if (v < 0 || v > std::int64_t{0x7fffffff})
        throw shape_error(fmt::format("cuda gemm: {} = {} is beyond cuBLAS's 32-bit sizes", what, v));
    return static_cast<int>(v);
}

/// y[i] = bias[i mod out] for a rows × out output (the Linear's bias rows, before the product).
template <class T>
struct bias_rows_op {
    const T* bias;
    std::int64_t out;
    __host__ __device__ T operator()(std::int64_t i) const { return bias[index_mod(i, out)]; }
};

/// dst[i] = bf16(src[i]), round to nearest even.
struct round_to_bf16_op {
    const float* src;
    __nv_bfloat16* dst;
    __device__ void operator()(std::int64_t i) const { dst[i] = __float2bfloat16_rn(src[i]); }
};

/// c[i·stride_c + r·ldc + j] = bias[j] for every product i, row r, column j.
struct bias_fill_op {
    float* c;
    const float* bias;
    std::int64_t m, n, ldc, stride_c;
    __device__ void operator()(std::int64_t e) const {
        const std::int64_t i = index_div(e, m * n), r = index_mod(index_div(e, n), m), j = index_mod(e, n);
        c[i * stride_c + r * ldc + j] = bias[j];
    }
};

/// Elements a row-major rows × cols matrix with leading dimension ld spans.
inline std::int64_t matrix_span(std::int64_t rows, std::int64_t cols, std::int64_t ld) { return rows <= 0 || cols <= 0 ? 0 : (rows - 1) * ld + cols; }

/// The first `span` floats of src rounded to bf16, in a scratch tensor of the same layout.
inline tensor<__nv_bfloat16, cuda> rounded_copy(const float* src, std::int64_t span) {
    tensor<__nv_bfloat16, cuda> out(tensor_shape{span});
    if (span > 0) for_each_element(span, round_to_bf16_op{src, out.data()});
    return out;
}

/// The cuBLASLt descriptors of one call, destroyed on scope exit.
struct lt_descriptors {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t preference = nullptr;
    lt_descriptors() = default;
    lt_descriptors(const lt_descriptors&) = delete;
    lt_descriptors& operator=(const lt_descriptors&) = delete;
    ~lt_descriptors() {
        if (preference) cublasLtMatmulPreferenceDestroy(preference);
        for (auto* layout : {d, b, a})
            if (layout) cublasLtMatrixLayoutDestroy(layout);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

/// The largest power of two (≤ 256) dividing the address: the alignment cuBLASLt may assume of an
/// operand (its default preference is 256 bytes, which a view into a larger tensor need not have).
inline std::uint32_t address_alignment(const void* p) {
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    std::uint32_t alignment = 256;
    while (alignment > 1 && address % alignment != 0) alignment /= 2;
    return alignment;
}

/// Workspace offered to cuBLASLt's algorithms (from the caching allocator, so reused across calls).
inline constexpr std::size_t lt_workspace_bytes = std::size_t{4} << 20;

/// What decides a Linear's cuBLASLt plan: the sizes, the types, whether a bias epilogue is on, the
/// operands' alignments and the device. Two calls with equal keys can share descriptors and the
/// heuristic's algorithm.
struct lt_plan_key {
    std::int64_t rows = 0, out = 0, in = 0;
    int input_type = 0, compute = 0;
    bool bias = false;
    std::uint32_t align_w = 0, align_x = 0, align_y = 0;
    int device = 0;
    auto fields() const { return std::tie(rows, out, in, input_type, compute, bias, align_w, align_x, align_y, device); }
    bool operator<(const lt_plan_key& other) const { return fields() < other.fields(); }
};

/// The descriptors of one key and the algorithm cuBLASLt's heuristic chose for it.
struct lt_plan {
    lt_descriptors desc;
    cublasLtMatmulHeuristicResult_t heuristic{};
};

/// A new plan for the key (descriptors, preference, one heuristic query); the bias pointer is set
/// per call.
inline std::unique_ptr<lt_plan> make_lt_plan(const lt_plan_key& key) {
    auto plan = std::make_unique<lt_plan>();
    auto& desc = plan->desc;
    const int m = as_int(key.out, "out"), n = as_int(key.rows, "rows"), k = as_int(key.in, "in");
    const auto input_type = static_cast<cudaDataType_t>(key.input_type);
    check(cublasLtMatmulDescCreate(&desc.op, static_cast<cublasComputeType_t>(key.compute), CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    check(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "cublasLt TRANSA");
    check(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep), "cublasLt TRANSB");
    if (key.bias) {
        const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;  // bias of D's type (fp32), one per row of D
        check(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "cublasLt EPILOGUE");
    }
    // A = w, stored column-major k × m (w is row-major out × in); B = x, stored k × n; D m × n.
    check(cublasLtMatrixLayoutCreate(&desc.a, input_type, k, m, k), "cublasLtMatrixLayoutCreate (w)");
    check(cublasLtMatrixLayoutCreate(&desc.b, input_type, k, n, k), "cublasLtMatrixLayoutCreate (x)");
    check(cublasLtMatrixLayoutCreate(&desc.d, CUDA_R_32F, m, n, m), "cublasLtMatrixLayoutCreate (y)");
    check(cublasLtMatmulPreferenceCreate(&desc.preference), "cublasLtMatmulPreferenceCreate");
    std::size_t workspace_bytes = lt_workspace_bytes;
    check(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                               sizeof workspace_bytes),
          "cublasLt MAX_WORKSPACE_BYTES");
    check(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &key.align_w,
                                               sizeof key.align_w),
          "cublasLt MIN_ALIGNMENT_A_BYTES");
    check(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &key.align_x,
                                               sizeof key.align_x),
          "cublasLt MIN_ALIGNMENT_B_BYTES");
    check(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_y,
                                               sizeof key.align_y),
          "cublasLt MIN_ALIGNMENT_C_BYTES");
    check(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_y,
                                               sizeof key.align_y),
          "cublasLt MIN_ALIGNMENT_D_BYTES");
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(cublas_lt(), desc.op, desc.a, desc.b, desc.d, desc.d, desc.preference, 1, &plan->heuristic,
                                         &found),
          "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0)
        throw cuda_error(fmt::format(fmt::runtime("cuBLASLt: no algorithm for a linear of {} rows, {} → {} ({} inputs{})"), key.rows,
                                     key.in, key.out, input_type == CUDA_R_16BF ? "bf16" : "fp32", key.bias ? ", bias epilogue" : ""));
    return plan;
}

/// Plans by key, built at a key's first call (a training step's Linears find theirs from the
/// second step on); at most lt_plan_cache_size, then the cache starts anew.
inline constexpr std::size_t lt_plan_cache_size = 512;

/// y (rows × out, row-major, fp32) = x·wᵀ + bias through one cublasLtMatmul, the bias added by its
/// epilogue (CUBLASLT_EPILOGUE_BIAS; null: none) instead of a separate pass. x (rows × in) and
/// w (out × in) are of `input_type` (CUDA_R_32F, or CUDA_R_16BF for bf16_mixed). In cuBLAS's
/// column-major terms: yᵀ (out × rows) = wᵀ-as-stored transposed · xᵀ, so the bias is per row of D.
inline void linear_lt(std::int64_t rows, std::int64_t out, std::int64_t in, const void* x, const void* w, cudaDataType_t input_type,
                      cublasComputeType_t compute, const float* bias, float* y) {
    const lt_plan_key key{rows, out, in, static_cast<int>(input_type), static_cast<int>(compute), bias != nullptr,
                          address_alignment(w), address_alignment(x), address_alignment(y), current_device()};
    static auto* lock = new std::mutex;
    static auto* plans = new std::map<lt_plan_key, std::unique_ptr<lt_plan>>;  // never destroyed: outlives the handles' users
    std::lock_guard guard(*lock);
    auto found = plans->find(key);
    if (found == plans->end()) {
        if (plans->size() >= lt_plan_cache_size) plans->clear();
        found = plans->emplace(key, make_lt_plan(key)).first;
    }
    lt_plan& plan = *found->second;
    if (bias)
        check(cublasLtMatmulDescSetAttribute(plan.desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "cublasLt BIAS_POINTER");
    tensor<float, cuda> workspace(tensor_shape{static_cast<std::int64_t>(lt_workspace_bytes / sizeof(float))});
    const float alpha = 1.0f, beta = 0.0f;
    check(cublasLtMatmul(cublas_lt(), plan.desc.op, &alpha, w, plan.desc.a, x, plan.desc.b, &beta, y, plan.desc.d, y, plan.desc.d,
                         &plan.heuristic.algo, workspace.data(), lt_workspace_bytes, stream()),
          "cublasLtMatmul");
}

} // namespace cuda_detail

template <>
struct gemm_kernels<cuda> {
    /// C = alpha·op(A)·op(B) + beta·C, row-major with leading dimensions lda, ldb, ldc (as the
    /// cpu kernel); with beta = 0, C is not read.
    template <class T>
    static void gemm(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                     bool transpose_a, const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
        gemm_with_math(cuda_tf32(), m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
    }

    /// gemm with TF32 math for float where `tf32` (the convolutions pass cuda_conv_tf32()).
    template <class T>
    static void gemm_with_math(bool tf32, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                               bool transpose_a, const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda gemm: float or double");
        if (m <= 0 || n <= 0) return;
        using types = cuda_detail::cublas_types<T>;
        cuda_detail::check(cublasGemmEx(cuda_detail::cublas(), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, cuda_detail::as_int(n, "n"),
                                        cuda_detail::as_int(m, "m"), cuda_detail::as_int(k, "k"), &alpha, b, types::data,
                                        cuda_detail::as_int(ldb, "ldb"), a, types::data, cuda_detail::as_int(lda, "lda"), &beta,
                                        c, types::data, cuda_detail::as_int(ldc, "ldc"), types::compute(tf32), CUBLAS_GEMM_DEFAULT),
                           "cublasGemmEx");
    }

    /// y = x·wᵀ + bias: x (rows × in), w (out × in), bias (out) or null, y (rows × out). float:
    /// one cuBLASLt call with the bias in its epilogue (FP32 math, or TF32 with set_cuda_tf32);
    /// double: the bias rows, then a GEMM accumulating onto them.
    template <class T>
    static void linear(std::int64_t rows, std::int64_t out, std::int64_t in, const T* x, const T* w, const T* bias, T* y) {
        if (rows <= 0 || out <= 0) return;
        if constexpr (std::is_same_v<T, float>) {
            if (in > 0) {
                cuda_detail::linear_lt(rows, out, in, x, w, CUDA_R_32F, cuda_detail::cublas_types<float>::compute(), bias, y);
                return;
            }
        }
        if (bias)
            cuda_detail::thrust_call("thrust::transform", [&] {
                return thrust::transform(
                    thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                    thrust::counting_iterator<std::int64_t>(rows * out), y, cuda_detail::bias_rows_op<T>{bias, out});
            });
        gemm(rows, out, in, T(1), x, in, false, w, in, true, bias ? T(1) : T(0), y, out);
    }

    /// `batch` independent products, operand i at a + i·stride_a (and so on); a stride of 0
    /// shares one operand between all products.
    template <class T>
    static void gemm_batched(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                             std::int64_t lda, std::int64_t stride_a, bool transpose_a, const T* b, std::int64_t ldb,
                             std::int64_t stride_b, bool transpose_b, T beta, T* c, std::int64_t ldc, std::int64_t stride_c) {
        gemm_batched_with_math(cuda_tf32(), batch, m, n, k, alpha, a, lda, stride_a, transpose_a, b, ldb, stride_b, transpose_b, beta,
                               c, ldc, stride_c);
    }

    /// gemm_batched with TF32 math for float where `tf32` (the 1×1 convolutions pass cuda_conv_tf32()).
    template <class T>
    static void gemm_batched_with_math(bool tf32, std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                                       const T* a, std::int64_t lda, std::int64_t stride_a, bool transpose_a, const T* b,
                                       std::int64_t ldb, std::int64_t stride_b, bool transpose_b, T beta, T* c, std::int64_t ldc,
                                       std::int64_t stride_c) {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "cuda gemm: float or double");
        if (batch <= 0 || m <= 0 || n <= 0) return;
        using types = cuda_detail::cublas_types<T>;
        cuda_detail::check(cublasGemmStridedBatchedEx(cuda_detail::cublas(), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                      transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, cuda_detail::as_int(n, "n"),
                                                      cuda_detail::as_int(m, "m"), cuda_detail::as_int(k, "k"), &alpha, b,
                                                      types::data, cuda_detail::as_int(ldb, "ldb"), stride_b, a, types::data,
                                                      cuda_detail::as_int(lda, "lda"), stride_a, &beta, c, types::data,
                                                      cuda_detail::as_int(ldc, "ldc"), stride_c, cuda_detail::as_int(batch, "batch"),
                                                      types::compute(tf32), CUBLAS_GEMM_DEFAULT),
                           "cublasGemmStridedBatchedEx");
    }

    /// bf16_mixed: C = alpha·bf16(op(A))·bf16(op(B)) + bias + beta·C with fp32 accumulation.
    static void gemm_bf16(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                          bool transpose_a, const float* b, std::int64_t ldb, bool transpose_b, float beta, float* c,
                          std::int64_t ldc, const float* bias = nullptr) {
        gemm_batched_bf16(1, m, n, k, alpha, a, lda, 0, transpose_a, b, ldb, 0, transpose_b, beta, c, ldc, 0, bias);
    }

    /// y = bf16(x)·bf16(w)ᵀ + bias, fp32 sums: bf16 copies of x and w into one cuBLASLt call with
    /// the bias in its epilogue.
    static void linear_bf16(std::int64_t rows, std::int64_t out, std::int64_t in, const float* x, const float* w, const float* bias,
                            float* y) {
        if (rows <= 0 || out <= 0) return;
        if (in <= 0) {
            gemm_bf16(rows, out, in, 1.0f, x, in, false, w, in, true, 0.0f, y, out, bias);
            return;
        }
        const auto x16 = cuda_detail::rounded_copy(x, rows * in), w16 = cuda_detail::rounded_copy(w, out * in);
        cuda_detail::linear_lt(rows, out, in, x16.data(), w16.data(), CUDA_R_16BF, CUBLAS_COMPUTE_32F, bias, y);
    }

    /// gemm_batched under bf16_mixed (bias, when given, added to every product's rows).
    static void gemm_batched_bf16(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                                  std::int64_t lda, std::int64_t stride_a, bool transpose_a, const float* b, std::int64_t ldb,
                                  std::int64_t stride_b, bool transpose_b, float beta, float* c, std::int64_t ldc,
                                  std::int64_t stride_c, const float* bias = nullptr) {
        if (batch <= 0 || m <= 0 || n <= 0) return;
        if (bias) {  // C = the bias rows first, then the product accumulates onto them
            if (beta != 0.0f) throw std::invalid_argument("cuda gemm_bf16: a bias with beta != 0 is not supported");
            cuda_detail::for_each_element(batch * m * n, cuda_detail::bias_fill_op{c, bias, m, n, ldc, stride_c});
            beta = 1.0f;
        }
        // Stored extents: A is k×m when transposed, else m×k; B is n×k when transposed, else k×n.
        const std::int64_t span_a = (batch - 1) * stride_a + cuda_detail::matrix_span(transpose_a ? k : m, transpose_a ? m : k, lda);
        const std::int64_t span_b = (batch - 1) * stride_b + cuda_detail::matrix_span(transpose_b ? n : k, transpose_b ? k : n, ldb);
        const auto a16 = cuda_detail::rounded_copy(a, span_a), b16 = cuda_detail::rounded_copy(b, span_b);
        cuda_detail::check(cublasGemmStridedBatchedEx(cuda_detail::cublas(), transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                      transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, cuda_detail::as_int(n, "n"),
                                                      cuda_detail::as_int(m, "m"), cuda_detail::as_int(k, "k"), &alpha, b16.data(),
                                                      CUDA_R_16BF, cuda_detail::as_int(ldb, "ldb"), stride_b, a16.data(), CUDA_R_16BF,
                                                      cuda_detail::as_int(lda, "lda"), stride_a, &beta, c, CUDA_R_32F,
                                                      cuda_detail::as_int(ldc, "ldc"), stride_c, cuda_detail::as_int(batch, "batch"),
                                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                           "cublasGemmStridedBatchedEx (bf16)");
    }

    /// out[j] += Σ_r x[r, j] over a row-major rows × cols matrix (bias gradients): one product
    /// with a vector of ones.
    template <class T>
    static void accumulate_column_sums(T* out, const T* x, std::int64_t rows, std::int64_t cols) {
        if (rows <= 0 || cols <= 0) return;
        tensor<T, cuda> ones = tensor<T, cuda>::full(tensor_shape{rows, 1}, T(1));
        gemm(cols, 1, rows, T(1), x, cols, true, ones.data(), 1, false, T(1), out, 1);
    }
};

} // namespace vediff
