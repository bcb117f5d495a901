#pragma once
// An unpacked single-precision product for AVX-512, C = A·B, for the per-head products of
// attention (64 × 64 × 64 in a DiT-S block): too small for packing to pay, and too many (768 per
// block at batch 128) for Eigen's per-call packing and blocking. A is read in place through two
// strides, one value at a time and broadcast, so a transposed A costs nothing; B is read in place
// as rows of n contiguous values; C is written in tiles of 8 rows × 32 columns kept in 16 zmm
// registers, with masked loads and stores at the column edge, so any m, n, k work.
#include <cstdint>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace vediff::cpu_detail {

#if defined(__AVX512F__)
inline constexpr bool small_gemm_available = true;

namespace small_gemm_detail {

/// f(0), f(1), ..., f(R − 1), unrolled by the compiler whatever it is (a fold, not a loop: the
/// rows' accumulators must stay in registers, and nvcc's front end drops `#pragma GCC unroll`).
template <int R, class F>
inline void for_each_row(F&& f) {
    [&]<int... r>(std::integer_sequence<int, r...>) { (f(r), ...); }(std::make_integer_sequence<int, R>{});
}

inline __mmask16 column_mask(std::int64_t n) {
    return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// Rows [0, R) of one tile: c(r, 0..cols) = alpha·Σ_p a(r, p)·b(p, 0..cols) (+ beta·c when accumulating).
template <int R>
inline void tile(std::int64_t k, const float* a, std::int64_t a_row, std::int64_t a_depth, const float* b, std::int64_t ldb,
                 float* c, std::int64_t ldc, std::int64_t cols, float alpha, bool accumulate) {
    const __mmask16 m0 = column_mask(cols), m1 = column_mask(cols - 16);
    __m512 acc0[R], acc1[R];
    for_each_row<R>([&](int r) { acc0[r] = acc1[r] = _mm512_setzero_ps(); });
    for (std::int64_t p = 0; p < k; ++p) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * ldb), b1 = _mm512_maskz_loadu_ps(m1, b + p * ldb + 16);
        const float* ap = a + p * a_depth;
        for_each_row<R>([&](int r) {
            const __m512 x = _mm512_set1_ps(ap[r * a_row]);
            acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
        });
    }
    const __m512 va = _mm512_set1_ps(alpha);
    for_each_row<R>([&](int r) {
        float* cr = c + r * ldc;
        __m512 y0 = _mm512_mul_ps(va, acc0[r]), y1 = _mm512_mul_ps(va, acc1[r]);
        if (accumulate) {
            y0 = _mm512_add_ps(y0, _mm512_maskz_loadu_ps(m0, cr));
            y1 = _mm512_add_ps(y1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, y0);
        _mm512_mask_storeu_ps(cr + 16, m1, y1);
    });
}

} // namespace small_gemm_detail

/// C = alpha·A·B (or C += alpha·A·B when `accumulate`), on the calling thread. A (m × k) holds
/// a(i, p) at a[i·a_row + p·a_depth]; B (k × n) is row-major with leading dimension ldb; C (m × n)
/// row-major with leading dimension ldc. Without `accumulate`, C is not read.
inline void small_gemm(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t a_row,
                       std::int64_t a_depth, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
                       bool accumulate = false) {
    using namespace small_gemm_detail;
    for (std::int64_t j = 0; j < n; j += 32) {
        const std::int64_t cols = std::min<std::int64_t>(32, n - j);
        std::int64_t i = 0;
        for (; i + 8 <= m; i += 8) tile<8>(k, a + i * a_row, a_row, a_depth, b + j, ldb, c + i * ldc + j, ldc, cols, alpha, accumulate);
        const float* ai = a + i * a_row;
        float* ci = c + i * ldc + j;
        switch (m - i) {  // the last rows, in one narrower tile
        case 7: tile<7>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 6: tile<6>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 5: tile<5>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 4: tile<4>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 3: tile<3>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 2: tile<2>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        case 1: tile<1>(k, ai, a_row, a_depth, b + j, ldb, ci, ldc, cols, alpha, accumulate); break;
        default: break;
        }
    }
}
#else
inline constexpr bool small_gemm_available = false;
#endif

} // namespace vediff::cpu_detail
