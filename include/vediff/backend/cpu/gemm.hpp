#pragma once
// cpu kernels for matrix products: Eigen's GEMM on Eigen::Map views of row-major memory (no
// copies), or for large float products with AVX-512 the packed kernel of packed_gemm.hpp,
// threaded by vediff rather than by Eigen. On the 2-core target, splitting the output
// between threads that each run a single-threaded Eigen GEMM measured ~310 GFLOP/s against
// ~260 for Eigen's own OpenMP GEMM (whose threads synchronize after every packed panel), and
// independent products of a batch parallelize better still.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "vediff/backend/cpu/eigen.hpp"
#ifdef _OPENMP
#include <omp.h>
#endif

#include "vediff/backend/cpu/bf16_gemm.hpp"
#include "vediff/backend/cpu/packed_gemm.hpp"
#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cpu_detail {

/// Threads a kernel may start: 1 inside a parallel region (nested teams are not used).
inline int available_threads() {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

/// Multiply-adds each thread should get before a product is split (team start-up costs ~µs).
/// Eigen's own per-thread minimum (kMinTaskSize in Parallelizer.h), so Eigen never threads a
/// product that vediff left on one thread.
inline constexpr std::int64_t gemm_parallel_work = 50000;

} // namespace cpu_detail

template <>
struct gemm_kernels<cpu> {
    /// C = alpha·op(A)·op(B) + beta·C for row-major matrices with leading dimensions (row
    /// strides) lda, ldb, ldc; op(A) is m×k, op(B) k×n. A transposed A is stored k×m. With
    /// beta = 0, C is not read (it may hold garbage). Threads split C when the work is large.
    template <class T>
    static void gemm(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                     bool transpose_a, const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c,
                     std::int64_t ldc) {
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
            if (packed_row_parts(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc, nullptr)) return;
        }
#endif
        split(m, n, k, [&](bool rows, std::int64_t lo, std::int64_t hi) {
            if (rows) {
                const T* a_part = transpose_a ? a + lo : a + lo * lda;
                gemm_serial(hi - lo, n, k, alpha, a_part, lda, transpose_a, b, ldb, transpose_b, beta, c + lo * ldc, ldc);
            } else {
                const T* b_part = transpose_b ? b + lo * ldb : b + lo;
                gemm_serial(m, hi - lo, k, alpha, a, lda, transpose_a, b_part, ldb, transpose_b, beta, c + lo, ldc);
            }
        });
    }

    /// y = x·wᵀ + bias (a Linear's forward): x (rows × in), w (out × in), bias (out) or null,
    /// y (rows × out), all contiguous. The packed kernel adds the bias as it writes y; Eigen's
    /// path writes the bias rows first and accumulates the product onto them.
    template <class T>
    static void linear(std::int64_t rows, std::int64_t out, std::int64_t in, const T* x, const T* w, const T* bias, T* y) {
        if (rows <= 0 || out <= 0) return;
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
            if (packed_row_parts(rows, out, in, 1.0f, x, in, false, w, in, true, 0.0f, y, out, bias)) return;
        }
#endif
        split(rows, out, in, [&](bool split_rows, std::int64_t lo, std::int64_t hi) {
            const std::int64_t m = split_rows ? hi - lo : rows, n = split_rows ? out : hi - lo;
            const T* xp = split_rows ? x + lo * in : x;
            const T* wp = split_rows ? w : w + lo * in;
            const T* bp = bias && !split_rows ? bias + lo : bias;
            T* yp = split_rows ? y + lo * out : y + lo;
#if defined(__AVX512F__)
            if constexpr (std::is_same_v<T, float>) {
                if (in > 0 && cpu_detail::use_packed_gemm(m, n, in)) {
                    cpu_detail::packed_gemm(m, n, in, 1.0f, xp, in, false, wp, in, true, 0.0f, yp, out, bp);
                    return;
                }
            }
#endif
            if (bp)
                for (std::int64_t r = 0; r < m; ++r) std::copy(bp, bp + n, yp + r * out);
            gemm_serial(m, n, in, T(1), xp, in, false, wp, in, true, bp ? T(1) : T(0), yp, out);
        });
    }

    /// `batch` independent products, operand i at a + i·stride_a (and so on). Threads take
    /// whole products when the batch divides well among them, otherwise each product is split.
    template <class T>
    static void gemm_batched(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                             const T* a, std::int64_t lda, std::int64_t stride_a, bool transpose_a, const T* b,
                             std::int64_t ldb, std::int64_t stride_b, bool transpose_b, T beta, T* c,
                             std::int64_t ldc, std::int64_t stride_c) {
        const int threads = cpu_detail::available_threads();
        const bool over_batch = threads > 1 && batch >= threads && (batch % threads == 0 || batch >= 4 * threads) &&
                                batch * m * n * k >= cpu_detail::gemm_parallel_work;
        if (over_batch) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (std::int64_t i = 0; i < batch; ++i)
                gemm_serial(m, n, k, alpha, a + i * stride_a, lda, transpose_a, b + i * stride_b, ldb, transpose_b,
                            beta, c + i * stride_c, ldc);
        } else {
            for (std::int64_t i = 0; i < batch; ++i)
                gemm(m, n, k, alpha, a + i * stride_a, lda, transpose_a, b + i * stride_b, ldb, transpose_b, beta,
                     c + i * stride_c, ldc);
        }
    }

    /// The bf16_mixed policy's product (core/precision.hpp): C = alpha·bf16(op(A))·bf16(op(B)) +
    /// bias + beta·C with fp32 accumulation; operands as gemm's, bias (n) per column or null. On
    /// vdpbf16ps where the CPU has it (bf16_gemm.hpp), op(B) rounded and packed once and shared by
    /// the threads that split the rows; otherwise the portable path.
    static void gemm_bf16(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                          bool transpose_a, const float* b, std::int64_t ldb, bool transpose_b, float beta, float* c,
                          std::int64_t ldc, const float* bias = nullptr) {
        if (m <= 0 || n <= 0) return;
#if defined(__AVX512F__)
        if (k > 0 && cpu_bf16_dot_kernel_active()) {
            using blocking = cpu_detail::bf16_gemm_blocking;
            const split_plan s = plan_split(m, n, k);
            const std::int64_t tiles = (m + blocking::mr - 1) / blocking::mr;
            if (s.threads <= 1 || tiles < 2) {
                cpu_detail::bf16_gemm_serial(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc, bias);
                return;
            }
            tensor<float, cpu> b_buffer(tensor_shape{cpu_detail::bf16_packed_b_words(k, n)});
            auto* packed = reinterpret_cast<std::uint32_t*>(b_buffer.data());
            const std::int64_t panels = (n + blocking::nr - 1) / blocking::nr;
            std::atomic<std::int64_t> next_tile{0};
#pragma omp parallel num_threads(s.threads)
            {
#pragma omp for schedule(static)
                for (std::int64_t jp = 0; jp < panels; ++jp) cpu_detail::pack_b_bf16_whole(packed, b, ldb, transpose_b, k, n, jp, jp + 1);
                take_row_chunks(next_tile, tiles, blocking::mr, m, s.threads, [&](std::int64_t lo, std::int64_t hi) {
                    cpu_detail::bf16_gemm_prepacked(hi - lo, n, k, alpha, transpose_a ? a + lo : a + lo * lda, lda, transpose_a,
                                                    packed, beta, c + lo * ldc, ldc, bias);
                });
            }
            return;
        }
#endif
        gemm_bf16_portable(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc, bias, true);
    }

    /// gemm_bf16 on the calling thread (inside a parallel loop over independent products).
    static void gemm_bf16_serial(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                                 bool transpose_a, const float* b, std::int64_t ldb, bool transpose_b, float beta, float* c,
                                 std::int64_t ldc, const float* bias = nullptr) {
        if (m <= 0 || n <= 0) return;
#if defined(__AVX512F__)
        if (k > 0 && cpu_bf16_dot_kernel_active()) {
            cpu_detail::bf16_gemm_serial(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc, bias);
            return;
        }
#endif
        gemm_bf16_portable(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc, bias, false);
    }

    /// y = bf16(x)·bf16(w)ᵀ + bias with fp32 accumulation (a Linear's forward under bf16_mixed).
    static void linear_bf16(std::int64_t rows, std::int64_t out, std::int64_t in, const float* x, const float* w, const float* bias,
                            float* y) {
        gemm_bf16(rows, out, in, 1.0f, x, in, false, w, in, true, 0.0f, y, out, bias);
    }

    /// gemm_batched under bf16_mixed.
    static void gemm_batched_bf16(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                                  std::int64_t lda, std::int64_t stride_a, bool transpose_a, const float* b, std::int64_t ldb,
                                  std::int64_t stride_b, bool transpose_b, float beta, float* c, std::int64_t ldc,
                                  std::int64_t stride_c) {
        const int threads = cpu_detail::available_threads();
        const bool over_batch = threads > 1 && batch >= threads && (batch % threads == 0 || batch >= 4 * threads) &&
                                batch * m * n * k >= cpu_detail::gemm_parallel_work;
        if (over_batch) {
#pragma omp parallel for schedule(static) num_threads(threads)
            for (std::int64_t i = 0; i < batch; ++i)
                gemm_bf16_serial(m, n, k, alpha, a + i * stride_a, lda, transpose_a, b + i * stride_b, ldb, transpose_b, beta,
                                 c + i * stride_c, ldc);
        } else {
            for (std::int64_t i = 0; i < batch; ++i)
                gemm_bf16(m, n, k, alpha, a + i * stride_a, lda, transpose_a, b + i * stride_b, ldb, transpose_b, beta,
                          c + i * stride_c, ldc);
        }
    }

    /// out[j] += Σ_r x[r, j] over a row-major rows×cols matrix (bias gradients).
    template <class T>
    static void accumulate_column_sums(T* out, const T* x, std::int64_t rows, std::int64_t cols) {
        // Threads take column blocks, so each output element has one writer; rows stream in order.
        const std::int64_t block = 256;
        const std::int64_t blocks = (cols + block - 1) / block;
        cpu_detail::parallel_for(blocks, [=](std::int64_t bi) {
            const std::int64_t j0 = bi * block, j1 = std::min(cols, j0 + block);
            for (std::int64_t r = 0; r < rows; ++r) {
                const T* row = x + r * cols;
#pragma omp simd
                for (std::int64_t j = j0; j < j1; ++j) out[j] += row[j];
            }
        }, rows * block);
    }

    /// One product on the calling thread (Eigen sees no team, or is inside one, and stays serial).
    template <class T>
    static void gemm_serial(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
                            bool transpose_a, const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c,
                            std::int64_t ldc) {
        using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        using stride = Eigen::OuterStride<>;
        Eigen::Map<matrix, Eigen::Unaligned, stride> cm(c, m, n, stride(ldc));
        if (k == 0) {
            scale_in_place(cm, beta);
            return;
        }
#if defined(__AVX512F__)
        if constexpr (std::is_same_v<T, float>) {
            if (cpu_detail::use_packed_gemm(m, n, k)) {
                cpu_detail::packed_gemm(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
                return;
            }
        }
#endif
        // A stored transposed is a k×m map seen through .transpose(): Eigen picks the kernel.
        const auto with_a = [&](auto&& op_b) {
            if (transpose_a) {
                Eigen::Map<const matrix, Eigen::Unaligned, stride> am(a, k, m, stride(lda));
                accumulate(cm, am.transpose(), op_b, alpha, beta);
            } else {
                Eigen::Map<const matrix, Eigen::Unaligned, stride> am(a, m, k, stride(lda));
                accumulate(cm, am, op_b, alpha, beta);
            }
        };
        if (transpose_b) {
            Eigen::Map<const matrix, Eigen::Unaligned, stride> bm(b, n, k, stride(ldb));
            with_a(bm.transpose());
        } else {
            Eigen::Map<const matrix, Eigen::Unaligned, stride> bm(b, k, n, stride(ldb));
            with_a(bm);
        }
    }

private:
    /// Parts of the longer side of an m × n output of depth k for `threads` threads: boundaries
    /// on multiples of `unit`, `parts` of them (see split).
    struct split_plan {
        int threads;
        bool split_rows;
        std::int64_t extent, unit, units, parts;
        std::int64_t lo(std::int64_t p) const { return std::min(extent, units * p / parts * unit); }
    };

    static split_plan plan_split(std::int64_t m, std::int64_t n, std::int64_t k) {
        split_plan s{};
        s.threads = static_cast<int>(std::min<std::int64_t>(
            cpu_detail::available_threads(), std::max<std::int64_t>(1, m * n * k / cpu_detail::gemm_parallel_work)));
        s.split_rows = m >= n;  // each thread then re-packs only the smaller operand
        s.extent = s.split_rows ? m : n;
        // Part boundaries on multiples of 16 keep Eigen's panels full SIMD width; long sides use
        // multiples of the packed kernel's tile (96 rows, 32 columns) and several parts per
        // thread, taken as threads come free: a thread the OS preempts for other work then
        // delays the product by at most one part, not by its whole half.
        const std::int64_t tile = s.split_rows ? 96 : 32;
        s.unit = s.extent >= 8 * s.threads * tile ? tile : 16;
        s.units = (s.extent + s.unit - 1) / s.unit;
        s.parts = s.threads <= 1 ? 1 : s.unit == tile ? std::clamp<std::int64_t>(s.units / 8, s.threads, 4 * s.threads) : s.threads;
        return s;
    }

    /// Inside a parallel region: rows of C in guided chunks of whole tiles of `mr` rows, each
    /// thread taking half its fair share of what is left (at least 4 tiles), so the threads finish
    /// within a few tiles of each other and one the OS preempts only makes the others take more.
    /// Calls rows(lo, hi) for each chunk taken.
    template <class Rows>
    static void take_row_chunks(std::atomic<std::int64_t>& next_tile, std::int64_t tiles, std::int64_t mr, std::int64_t m, int threads,
                                Rows&& rows) {
        for (;;) {
            std::int64_t first = next_tile.load(std::memory_order_relaxed), count = 0;
            do {
                if (first >= tiles) break;
                count = std::min(tiles - first, std::max<std::int64_t>(4, (tiles - first) / (2 * threads)));
            } while (!next_tile.compare_exchange_weak(first, first + count, std::memory_order_relaxed));
            if (first >= tiles) break;
            rows(first * mr, std::min(m, (first + count) * mr));
        }
    }

#if defined(__AVX512F__)
    /// A product for the packed kernel whose rows are split among threads: op(B) is packed once,
    /// by all threads, and shared, instead of once per part (for a Linear at 8192 tokens, 8
    /// packings of its weight). Returns false, doing nothing, for any other product.
    static bool packed_row_parts(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                                 std::int64_t lda, bool transpose_a, const float* b, std::int64_t ldb, bool transpose_b,
                                 float beta, float* c, std::int64_t ldc, const float* bias) {
        if (m <= 0 || n <= 0 || k <= 0 || !cpu_detail::use_packed_gemm(m, n, k)) return false;
        const split_plan s = plan_split(m, n, k);
        if (s.threads <= 1 || !s.split_rows) return false;
        using blocking = cpu_detail::packed_gemm_blocking;
        tensor<float, cpu> b_packed(tensor_shape{cpu_detail::packed_b_floats(k, n)});
        float* packed = b_packed.data();
        const std::int64_t panels = (n + blocking::nr - 1) / blocking::nr;
        // Rows go out in guided chunks of whole row tiles: each thread takes half its fair share
        // of what is left (at least 4 tiles), so the threads finish within a few tiles of each
        // other, and one the OS preempts only makes the others take more chunks.
        const std::int64_t tiles = (m + blocking::mr - 1) / blocking::mr;
        std::atomic<std::int64_t> next_tile{0};
#pragma omp parallel num_threads(s.threads)
        {
#pragma omp for schedule(static)
            for (std::int64_t jp = 0; jp < panels; ++jp) cpu_detail::pack_b_whole(packed, b, ldb, transpose_b, k, n, jp, jp + 1);
            take_row_chunks(next_tile, tiles, blocking::mr, m, s.threads, [&](std::int64_t lo, std::int64_t hi) {
                cpu_detail::packed_gemm_prepacked(hi - lo, n, k, alpha, transpose_a ? a + lo : a + lo * lda, lda, transpose_a,
                                                  packed, beta, c + lo * ldc, ldc, bias);
            });
        }
        return true;
    }
#endif

    /// Runs part(split_rows, lo, hi) over parts of the longer side of an m × n output of depth k,
    /// on as many threads as the work deserves (one part, on the calling thread, for small work).
    template <class Part>
    static void split(std::int64_t m, std::int64_t n, std::int64_t k, Part&& part) {
        if (m <= 0 || n <= 0) return;
        const split_plan s = plan_split(m, n, k);
        if (s.threads <= 1) {
            part(s.split_rows, std::int64_t{0}, s.extent);
            return;
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(s.threads)
        for (std::int64_t p = 0; p < s.parts; ++p) {
            const std::int64_t lo = s.lo(p), hi = s.lo(p + 1);
            if (hi > lo) part(s.split_rows, lo, hi);
        }
    }

    /// gemm_bf16 without vdpbf16ps: both operands rounded to bf16 values (kept as floats, in a
    /// compact copy of their stored layout) and multiplied by the fp32 kernel. A product of two
    /// bf16 values is exact in fp32, so this differs from the vdpbf16ps kernel only in the order
    /// of the fp32 sums.
    static void gemm_bf16_portable(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                                   bool transpose_a, const float* b, std::int64_t ldb, bool transpose_b, float beta, float* c,
                                   std::int64_t ldc, const float* bias, bool threaded) {
        // Stored extents: A is k×m when transposed, else m×k; B is n×k when transposed, else k×n.
        const std::int64_t a_rows = transpose_a ? k : m, a_cols = transpose_a ? m : k;
        const std::int64_t b_rows = transpose_b ? n : k, b_cols = transpose_b ? k : n;
        tensor<float, cpu> a_rounded(tensor_shape{a_rows * a_cols}), b_rounded(tensor_shape{b_rows * b_cols});
        const auto round_rows = [threaded](float* dst, const float* src, std::int64_t ld, std::int64_t rows, std::int64_t cols) {
            cpu_detail::parallel_for(threaded ? rows : 1, [&](std::int64_t r0) {
                for (std::int64_t r = threaded ? r0 : 0; r < (threaded ? r0 + 1 : rows); ++r) {
#if defined(__AVX512F__)
                    cpu_detail::bf16_gemm_detail::round_to_bf16_values(dst + r * cols, src + r * ld, cols);
#else
                    for (std::int64_t j = 0; j < cols; ++j) dst[r * cols + j] = static_cast<float>(bfloat16(src[r * ld + j]));
#endif
                }
            }, cols);
        };
        round_rows(a_rounded.data(), a, lda, a_rows, a_cols);
        round_rows(b_rounded.data(), b, ldb, b_rows, b_cols);
        float product_beta = beta;
        if (bias) {  // C = bias + beta·C first, then the product accumulates onto it
            for (std::int64_t r = 0; r < m; ++r)
                for (std::int64_t j = 0; j < n; ++j) c[r * ldc + j] = bias[j] + (beta == 0.0f ? 0.0f : beta * c[r * ldc + j]);
            product_beta = 1.0f;
        }
        if (threaded)
            gemm(m, n, k, alpha, a_rounded.data(), a_cols, transpose_a, b_rounded.data(), b_cols, transpose_b, product_beta, c, ldc);
        else
            gemm_serial(m, n, k, alpha, a_rounded.data(), a_cols, transpose_a, b_rounded.data(), b_cols, transpose_b, product_beta, c,
                        ldc);
    }

    template <class C, class T>
    static void scale_in_place(C& c, T beta) {
        if (beta == T(0)) c.setZero();  // not c *= 0: C may hold NaN when beta is 0
        else if (beta != T(1)) c *= beta;
    }

    template <class C, class A, class B, class T>
    static void accumulate(C& c, const A& a, const B& b, T alpha, T beta) {
        if (beta == T(0)) {
            c.noalias() = alpha * (a * b);
        } else {
            scale_in_place(c, beta);
            c.noalias() += alpha * (a * b);
        }
    }
};

} // namespace vediff
