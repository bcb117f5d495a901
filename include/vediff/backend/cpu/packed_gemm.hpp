#pragma once
// A packed single-precision GEMM for AVX-512, C = alpha·op(A)·op(B) + beta·C on one thread, for
// the large products of transformer layers (gemm.hpp sends float products here when they are
// large enough). Eigen 3.4's float kernel keeps a 48×4 tile of C in 12 of the 32 zmm registers;
// this one keeps a 12×32 tile in 24 (the shape of BLIS's Skylake-X kernel, transposed for
// row-major C), so each pair of B vectors loaded feeds 24 FMAs. On the 2-core Zen 5 target it
// measured ~1.3× Eigen on a DiT-S block's linear layers (8192 tokens, 384 → 1152, 1536, 384).
//
// Blocking (Goto/BLIS): depth in KC slices; rows of op(A) in MC blocks packed as MR-row panels
// (depth-major, so a panel is read in order and its MR values per step are broadcasts); columns
// of op(B) in NC blocks packed as NR-column panels. A panel (MR × KC, 18 KiB) stays in L1 while the
// B panels of the block (KC × NC, 384 KiB: half of L2, leaving room for the rows of A and C, measured 1-3% faster than 720 KiB) stream from L2. Edges are zero-padded in the packed
// panels and cut off with masked stores, so any m, n, k and leading dimensions work.
#include <algorithm>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "vediff/backend/cpu/memory.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::cpu_detail {

#if defined(__AVX512F__)
inline constexpr bool packed_gemm_available = true;
#else
inline constexpr bool packed_gemm_available = false;
#endif

struct packed_gemm_blocking {
    static constexpr std::int64_t mr = 12, nr = 32;           // register tile of C
    static constexpr std::int64_t kc = 384, mc = 1536, nc = 256;  // cache blocks (L1 / L3 / L2)
};

/// Whether a product is worth packing: large enough to amortize it, and not so narrow that
/// padding to whole 12 × 32 tiles wastes much of the work (Eigen's 48 × 4 tile serves those).
inline bool use_packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k) {
    using b = packed_gemm_blocking;
    const std::int64_t padded_n = (n + b::nr - 1) / b::nr * b::nr;
    return packed_gemm_available && m >= 8 * b::mr && k >= 32 && 5 * padded_n <= 6 * n;
}

#if defined(__AVX512F__)

namespace packed_gemm_detail {
using b = packed_gemm_blocking;

/// Rows [i0, i0 + rows) × depth [p0, p0 + depth) of op(A) as panels of mr rows, panel-major then
/// depth-major: dst[(panel·depth + p)·mr + r]; rows past the end are zero.
inline void pack_a(float* dst, const float* a, std::int64_t lda, bool transposed, std::int64_t i0, std::int64_t rows,
                   std::int64_t p0, std::int64_t depth) {
    for (std::int64_t ip = 0; ip * b::mr < rows; ++ip) {
        float* d = dst + ip * depth * b::mr;
        const std::int64_t valid = std::min(b::mr, rows - ip * b::mr);
        if (transposed) {  // op(A)(i, p) = a[p·lda + i]: each depth step reads mr consecutive values
            for (std::int64_t p = 0; p < depth; ++p) {
                const float* src = a + (p0 + p) * lda + i0 + ip * b::mr;
                for (std::int64_t r = 0; r < b::mr; ++r) d[p * b::mr + r] = r < valid ? src[r] : 0.0f;
            }
            continue;
        }
        const float* src = a + (i0 + ip * b::mr) * lda + p0;
        std::int64_t p = 0;
        if (valid == b::mr) {
            // 16 depth steps of all mr rows at a time: contiguous loads, then the transpose
            // through a small tile (one pass over A instead of mr strided ones).
            for (; p + 16 <= depth; p += 16) {
                alignas(64) float tile[b::mr][16];
                for (std::int64_t r = 0; r < b::mr; ++r) _mm512_store_ps(tile[r], _mm512_loadu_ps(src + r * lda + p));
                for (std::int64_t q = 0; q < 16; ++q)
                    for (std::int64_t r = 0; r < b::mr; ++r) d[(p + q) * b::mr + r] = tile[r][q];
            }
        }
        for (; p < depth; ++p)
            for (std::int64_t r = 0; r < b::mr; ++r) d[p * b::mr + r] = r < valid ? src[r * lda + p] : 0.0f;
    }
}

/// Depth [p0, p0 + depth) × columns [j0, j0 + cols) of op(B) as panels of nr columns:
/// dst[(panel·depth + p)·nr + c]; columns past the end are zero.
inline void pack_b(float* dst, const float* bm, std::int64_t ldb, bool transposed, std::int64_t p0, std::int64_t depth,
                   std::int64_t j0, std::int64_t cols) {
    for (std::int64_t jp = 0; jp * b::nr < cols; ++jp) {
        float* d = dst + jp * depth * b::nr;
        const std::int64_t valid = std::min(b::nr, cols - jp * b::nr);
        if (transposed) {  // op(B)(p, j) = bm[j·ldb + p] (a Linear's weight): each column is a contiguous row
            const float* src = bm + (j0 + jp * b::nr) * ldb + p0;
            std::int64_t p = 0;
            if (valid == b::nr) {
                // 16 depth steps of all nr columns at a time, transposed through a small tile, so
                // that both the reads and the writes are contiguous runs.
                for (; p + 16 <= depth; p += 16) {
                    alignas(64) float tile[b::nr][16];
                    for (std::int64_t c = 0; c < b::nr; ++c) _mm512_store_ps(tile[c], _mm512_loadu_ps(src + c * ldb + p));
                    for (std::int64_t q = 0; q < 16; ++q)
                        for (std::int64_t c = 0; c < b::nr; ++c) d[(p + q) * b::nr + c] = tile[c][q];
                }
            }
            for (; p < depth; ++p)
                for (std::int64_t c = 0; c < b::nr; ++c) d[p * b::nr + c] = c < valid ? src[c * ldb + p] : 0.0f;
        } else {
            for (std::int64_t p = 0; p < depth; ++p) {
                const float* src = bm + (p0 + p) * ldb + j0 + jp * b::nr;
                for (std::int64_t c = 0; c < b::nr; ++c) d[p * b::nr + c] = c < valid ? src[c] : 0.0f;
            }
        }
    }
}

/// Writes a 12 × 32 tile of accumulators: C = alpha·acc + bias + beta·C for the valid rows × cols
/// (bias per column or null; beta = 0: C is not read). Shared by the fp32 and bf16 kernels.
inline void store_tile(const __m512 (&acc)[b::mr][2], float* c, std::int64_t ldc, std::int64_t rows, std::int64_t cols,
                       float alpha, float beta, const float* bias) {
    const auto mask = [](std::int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); };
    const __mmask16 m0 = mask(cols), m1 = mask(cols - 16);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    for (std::int64_t r = 0; r < rows; ++r) {
        float* cr = c + r * ldc;
        __m512 y0 = _mm512_fmadd_ps(va, acc[r][0], bias0), y1 = _mm512_fmadd_ps(va, acc[r][1], bias1);
        if (beta != 0.0f) {
            y0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), y0);
            y1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), y1);
        }
        _mm512_mask_storeu_ps(cr, m0, y0);
        _mm512_mask_storeu_ps(cr + 16, m1, y1);
    }
}

/// The 12 × 32 tile: acc = A panel · B panel over `depth`, then C = alpha·acc + bias + beta·C for
/// the valid rows × cols (bias per column or null; beta = 0: C is not read). The 24 accumulators are named variables: held in
/// an array that the stores index at run time, GCC keeps them in memory and the kernel runs 3×
/// slower.
template <bool DirectA = false>
inline void micro_kernel(std::int64_t depth, const float* ap, const float* bp, float* c, std::int64_t ldc, std::int64_t rows,
                         std::int64_t cols, float alpha, float beta, const float* bias, std::int64_t lda = 0) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00,
           c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    for (std::int64_t p = 0; p < depth; ++p) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        __m512 a;
#define VEDIFF_PACKED_GEMM_ROW(r, x0, x1) \
    a = _mm512_set1_ps(DirectA ? ap[r * lda] : ap[r]); \
    x0 = _mm512_fmadd_ps(a, b0, x0);      \
    x1 = _mm512_fmadd_ps(a, b1, x1);
        VEDIFF_PACKED_GEMM_ROW(0, c00, c01) VEDIFF_PACKED_GEMM_ROW(1, c10, c11) VEDIFF_PACKED_GEMM_ROW(2, c20, c21)
        VEDIFF_PACKED_GEMM_ROW(3, c30, c31) VEDIFF_PACKED_GEMM_ROW(4, c40, c41) VEDIFF_PACKED_GEMM_ROW(5, c50, c51)
        VEDIFF_PACKED_GEMM_ROW(6, c60, c61) VEDIFF_PACKED_GEMM_ROW(7, c70, c71) VEDIFF_PACKED_GEMM_ROW(8, c80, c81)
        VEDIFF_PACKED_GEMM_ROW(9, c90, c91) VEDIFF_PACKED_GEMM_ROW(10, ca0, ca1) VEDIFF_PACKED_GEMM_ROW(11, cb0, cb1)
#undef VEDIFF_PACKED_GEMM_ROW
        ap += DirectA ? 1 : b::mr;
        bp += b::nr;
    }
    const __m512 acc[b::mr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                                  {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    store_tile(acc, c, ldc, rows, cols, alpha, beta, bias);
}
} // namespace packed_gemm_detail

/// Floats of op(B) (k × n) packed whole by pack_b_whole.
inline std::int64_t packed_b_floats(std::int64_t k, std::int64_t n) {
    using b = packed_gemm_blocking;
    return k * ((n + b::nr - 1) / b::nr * b::nr);
}

/// Panels [panel_lo, panel_hi) (of nr columns) of every depth slice of op(B), packed whole, so
/// that threads computing different rows of C share one packing: the slice starting at depth p0
/// lies at p0·n_padded, and its panel of columns [j, j + nr) at p0·n_padded + j·depth, the layout
/// packed_gemm_prepacked reads. Threads may pack disjoint panel ranges concurrently.
inline void pack_b_whole(float* dst, const float* bm, std::int64_t ldb, bool transposed, std::int64_t k, std::int64_t n,
                         std::int64_t panel_lo, std::int64_t panel_hi) {
    using b = packed_gemm_blocking;
    const std::int64_t n_padded = (n + b::nr - 1) / b::nr * b::nr;
    for (std::int64_t p0 = 0; p0 < k; p0 += b::kc) {
        const std::int64_t depth = std::min(b::kc, k - p0);
        for (std::int64_t jp = panel_lo; jp < panel_hi; ++jp)
            packed_gemm_detail::pack_b(dst + p0 * n_padded + jp * b::nr * depth, bm, ldb, transposed, p0, depth, jp * b::nr,
                                       std::min(b::nr, n - jp * b::nr));
    }
}

/// packed_gemm with op(B) already packed whole (pack_b_whole). A row-major A is not packed: its
/// full 12-row tiles are read in place (the broadcasts then come from 12 rows' cache lines, which
/// measured ~3% faster on the DiT's linears than packing), only a last partial tile is packed; a
/// transposed A is packed.
inline void packed_gemm_prepacked(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                                  std::int64_t lda, bool transpose_a, const float* b_packed, float beta, float* c,
                                  std::int64_t ldc, const float* bias = nullptr) {
    using namespace packed_gemm_detail;
    const std::int64_t n_padded = (n + b::nr - 1) / b::nr * b::nr;
    const std::int64_t depth_max = std::min(k, b::kc);
    const std::int64_t rows_max = (std::min(m, b::mc) + b::mr - 1) / b::mr * b::mr;
    tensor<float, cpu> a_pack(tensor_shape{transpose_a ? rows_max * depth_max : m % b::mr != 0 ? b::mr * depth_max : 0});
    for (std::int64_t p0 = 0; p0 < k; p0 += b::kc) {
        const std::int64_t depth = std::min(b::kc, k - p0);
        const float step_beta = p0 == 0 ? beta : 1.0f;
        const float* step_bias = p0 == 0 ? bias : nullptr;
        const float* slice = b_packed + p0 * n_padded;
        for (std::int64_t i0 = 0; i0 < m; i0 += b::mc) {
            const std::int64_t rows = std::min(b::mc, m - i0), full_rows = rows / b::mr * b::mr;
            if (transpose_a)
                pack_a(a_pack.data(), a, lda, true, i0, rows, p0, depth);
            else if (full_rows < rows)
                pack_a(a_pack.data(), a, lda, false, i0 + full_rows, rows - full_rows, p0, depth);
            // Column blocks of nc keep the B panels a row panel meets within L2.
            for (std::int64_t j0 = 0; j0 < n; j0 += b::nc) {
                const std::int64_t cols = std::min(b::nc, n - j0);
                for (std::int64_t i = 0; i < rows; i += b::mr)
                    for (std::int64_t j = j0; j < j0 + cols; j += b::nr) {
                        float* ct = c + (i0 + i) * ldc + j;
                        const float* bt = slice + j * depth;
                        const float* tile_bias = step_bias ? step_bias + j : nullptr;
                        if (!transpose_a && i < full_rows)
                            micro_kernel<true>(depth, a + (i0 + i) * lda + p0, bt, ct, ldc, b::mr, std::min(b::nr, n - j), alpha,
                                               step_beta, tile_bias, lda);
                        else
                            micro_kernel(depth, a_pack.data() + (transpose_a ? i * depth : 0), bt, ct, ldc, std::min(b::mr, rows - i),
                                         std::min(b::nr, n - j), alpha, step_beta, tile_bias);
                    }
            }
        }
    }
}

/// C = alpha·op(A)·op(B) + bias + beta·C (row-major, leading dimensions lda, ldb, ldc; a
/// transposed operand stored as its transpose; bias (n) added to every row, or null), on the
/// calling thread. With beta = 0, C is not read. The bias is added as the tiles are written: a
/// Linear's output is not first filled with it and then read back.
inline void packed_gemm(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                        bool transpose_a, const float* bm, std::int64_t ldb, bool transpose_b, float beta, float* c,
                        std::int64_t ldc, const float* bias = nullptr) {
    using namespace packed_gemm_detail;
    const std::int64_t depth_max = std::min(k, b::kc);
    const std::int64_t rows_max = (std::min(m, b::mc) + b::mr - 1) / b::mr * b::mr;
    const std::int64_t cols_max = (std::min(n, b::nc) + b::nr - 1) / b::nr * b::nr;
    // Packing buffers from the recycling allocator (64-byte aligned, as the aligned B loads need).
    tensor<float, cpu> a_pack(tensor_shape{rows_max * depth_max}), b_pack(tensor_shape{cols_max * depth_max});
    for (std::int64_t p0 = 0; p0 < k; p0 += b::kc) {
        const std::int64_t depth = std::min(b::kc, k - p0);
        const float step_beta = p0 == 0 ? beta : 1.0f;  // later depth slices accumulate
        const float* step_bias = p0 == 0 ? bias : nullptr;
        for (std::int64_t i0 = 0; i0 < m; i0 += b::mc) {
            const std::int64_t rows = std::min(b::mc, m - i0);
            pack_a(a_pack.data(), a, lda, transpose_a, i0, rows, p0, depth);
            for (std::int64_t j0 = 0; j0 < n; j0 += b::nc) {
                const std::int64_t cols = std::min(b::nc, n - j0);
                pack_b(b_pack.data(), bm, ldb, transpose_b, p0, depth, j0, cols);
                for (std::int64_t i = 0; i < rows; i += b::mr)
                    for (std::int64_t j = 0; j < cols; j += b::nr)
                        micro_kernel(depth, a_pack.data() + i * depth, b_pack.data() + j * depth, c + (i0 + i) * ldc + j0 + j, ldc,
                                     std::min(b::mr, rows - i), std::min(b::nr, cols - j), alpha, step_beta,
                                     step_bias ? step_bias + j0 + j : nullptr);
            }
        }
    }
}

#endif

} // namespace vediff::cpu_detail
