#pragma once
// A packed GEMM on AVX512-BF16's vdpbf16ps for the bf16_mixed precision policy
// (core/precision.hpp): C = alpha·op(A)·op(B) + bias + beta·C with float operands in memory,
// rounded to bfloat16 (to nearest, ties to even, as core/bfloat16.hpp) once, as they are packed,
// and products accumulated in fp32. One vdpbf16ps takes 16 pairs of bf16 from each operand and
// adds the 32 products into 16 fp32 sums: twice the multiply-adds of an fp32 FMA per instruction.
//
// The shape is packed_gemm.hpp's: a 12 × 32 tile of C in 24 zmm accumulators, A in panels of 12
// rows, B in panels of 32 columns, depth in slices of kc. What differs is the unit of depth: a
// pair of consecutive depth steps, packed as one 32-bit word (low half the even step). An A panel
// holds, per pair, 12 words (one broadcast per row); a B panel, per pair, 32 words (two vectors,
// word c = column c's two values). An odd depth is padded with a zero step.
//
// The kernel needs avx512_bf16 at run time (Zen 4, Zen 5, Intel Cooper Lake and Sapphire Rapids
// on): it is compiled with a target attribute whenever the build has AVX-512 and chosen by CPUID
// where it is the faster path (cpu_bf16_dot_kernel_active); otherwise gemm_kernels<cpu> rounds the
// operands to bf16 values and runs the fp32 kernel, which gives the same products (a product of
// two bf16 values is exact in fp32) summed in another order.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "vediff/backend/cpu/packed_gemm.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

/// Which kernel the cpu backend's bf16 products use: `automatic` takes vdpbf16ps where it is the
/// faster of the two (below); `dot` takes it wherever the CPU has it; `portable` always takes the
/// fallback (rounded operands through the fp32 kernel). The environment variable
/// VEDIFF_CPU_BF16_KERNEL=auto|dot|portable sets the starting choice; tests and benchmarks
/// switch with set_cpu_bf16_kernel to compare the two on one machine.
enum class cpu_bf16_kernel { automatic, dot, portable };

namespace cpu_detail {

/// The choice VEDIFF_CPU_BF16_KERNEL names (automatic when unset); anything else is an error.
inline cpu_bf16_kernel bf16_kernel_from_environment() {
    const char* v = std::getenv("VEDIFF_CPU_BF16_KERNEL");
    if (!v || !*v || std::string_view(v) == "auto") return cpu_bf16_kernel::automatic;
    if (std::string_view(v) == "dot") return cpu_bf16_kernel::dot;
    if (std::string_view(v) == "portable") return cpu_bf16_kernel::portable;
    throw std::invalid_argument(fmt::format("VEDIFF_CPU_BF16_KERNEL={}: expected auto, dot or portable", v));
}

inline std::atomic<cpu_bf16_kernel>& bf16_kernel_setting() {
    static std::atomic<cpu_bf16_kernel> setting{bf16_kernel_from_environment()};
    return setting;
}

/// Whether this CPU executes vdpbf16ps (and the AVX-512 subsets the packing uses).
inline bool cpu_has_avx512_bf16() {
#if defined(__AVX512F__)
    static const bool has = (__builtin_cpu_init(), true) && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl");
    return has;
#else
    return false;
#endif
}

/// Whether vdpbf16ps outruns the fp32 FMA on this CPU, so that `automatic` takes it. On AMD's
/// Zen 4 and Zen 5 it issues at the fp32 FMA's rate with twice the products; on Intel's (Cooper
/// Lake, Sapphire and Emerald Rapids) at half that rate, so there it only matches the FMA per
/// product: measured on an Emerald Rapids host, 90 GFLOP/s per core against the FMA's 182, and the
/// bf16 kernel at 0.52× the fp32 one (docs/benchmarks.md). The vendor decides, not a timing at
/// start-up, so a run's arithmetic does not depend on how busy the machine was.
inline bool bf16_dot_outruns_fma() {
#if defined(__AVX512F__)
    static const bool amd = (__builtin_cpu_init(), true) && __builtin_cpu_is("amd");
    return amd;
#else
    return false;
#endif
}

} // namespace cpu_detail

/// Sets the bf16 kernel choice for the whole process (tests and benchmarks).
inline void set_cpu_bf16_kernel(cpu_bf16_kernel k) { cpu_detail::bf16_kernel_setting().store(k); }

/// Whether bf16 products run on vdpbf16ps now: the CPU has it, and it is chosen (`dot`) or
/// faster than the fp32 FMA here (`automatic`).
inline bool cpu_bf16_dot_kernel_active() {
    const cpu_bf16_kernel k = cpu_detail::bf16_kernel_setting().load();
    return cpu_detail::cpu_has_avx512_bf16() &&
           (k == cpu_bf16_kernel::dot || (k == cpu_bf16_kernel::automatic && cpu_detail::bf16_dot_outruns_fma()));
}

/// The bf16 kernel in use, in words (for logs and benchmark tables).
inline const char* cpu_bf16_kernel_name() {
    return cpu_bf16_dot_kernel_active() ? "avx512_bf16 (vdpbf16ps)" : "portable (bf16-rounded operands, fp32 FMA)";
}

namespace cpu_detail {

struct bf16_gemm_blocking {
    static constexpr std::int64_t mr = 12, nr = 32;           // register tile of C, as the fp32 kernel
    static constexpr std::int64_t kc = 768, mc = 1536, nc = 256;  // kc even: slices hold whole pairs; same bytes as fp32's 384
};

/// Words (pairs of bf16) of op(B) (k × n) packed whole by pack_b_bf16_whole.
inline std::int64_t bf16_packed_b_words(std::int64_t k, std::int64_t n) {
    using b = bf16_gemm_blocking;
    return (k + 1) / 2 * ((n + b::nr - 1) / b::nr * b::nr);
}

#if defined(__AVX512F__)

#define VEDIFF_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace bf16_gemm_detail {
using b = bf16_gemm_blocking;

/// 16 floats rounded to bfloat16, each result in the upper half of its 32-bit lane (the lower
/// half is not cleared): the same rule as bfloat16_detail::round_bits, NaN kept quiet. AVX-512F
/// only, so the portable path uses it too.
inline __m512i rounded_high(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

/// Words of 16 pairs: low half bf16(even[i]), high half bf16(odd[i]).
VEDIFF_BF16_TARGET inline __m512i pair_words(__m512 even, __m512 odd) {
    return _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(rounded_high(even), 16), rounded_high(odd));
}

inline __mmask16 lanes(std::int64_t n) {
    return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

/// Lines [0, width) of a panel whose line l holds `depth` consecutive floats at src + l·ld
/// (rows of a row-major A, columns of a transposed B): dst[q·width + l] = the pair q of line l.
/// Lines at or past `count`, and the pad step of an odd depth, are zero.
VEDIFF_BF16_TARGET inline void pack_contiguous_pairs(std::uint32_t* dst, std::int64_t width, const float* src, std::int64_t ld,
                                                     std::int64_t count, std::int64_t depth) {
    const std::int64_t pairs = (depth + 1) / 2;
    alignas(64) std::uint16_t line[b::kc + 32];
    for (std::int64_t l = 0; l < width; ++l) {
        if (l >= count) {
            for (std::int64_t q = 0; q < pairs; ++q) dst[q * width + l] = 0;
            continue;
        }
        const float* s = src + l * ld;
        for (std::int64_t p = 0; p < depth; p += 16) {
            const __mmask16 m = lanes(depth - p);
            const __m512i h = _mm512_srli_epi32(rounded_high(_mm512_maskz_loadu_ps(m, s + p)), 16);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(line + p), _mm512_cvtepi32_epi16(h));
        }
        line[depth] = 0;  // the pad step of an odd depth (overwritten by nothing when depth is even)
        for (std::int64_t q = 0; q < pairs; ++q) {
            std::uint32_t w;
            std::memcpy(&w, line + 2 * q, sizeof w);
            dst[q * width + l] = w;
        }
    }
}

/// Lines [0, width) of a panel whose depth step p holds the lines' values at src + p·ld,
/// consecutive (rows of a transposed A, columns of a row-major B): dst[q·width + l] as above.
VEDIFF_BF16_TARGET inline void pack_strided_pairs(std::uint32_t* dst, std::int64_t width, const float* src, std::int64_t ld,
                                                  std::int64_t count, std::int64_t depth) {
    const std::int64_t pairs = (depth + 1) / 2;
    for (std::int64_t q = 0; q < pairs; ++q) {
        const float* even = src + 2 * q * ld;
        const bool has_odd = 2 * q + 1 < depth;
        for (std::int64_t l = 0; l < width; l += 16) {
            const __mmask16 m = lanes(std::min(count, width) - l);
            const __m512 e = _mm512_maskz_loadu_ps(m, even + l);
            const __m512 o = has_odd ? _mm512_maskz_loadu_ps(m, even + ld + l) : _mm512_setzero_ps();
            _mm512_mask_storeu_epi32(dst + q * width + l, lanes(width - l), pair_words(e, o));
        }
    }
}

/// The 12 × 32 tile over `pairs` depth pairs, then packed_gemm's store (alpha, bias, beta).
VEDIFF_BF16_TARGET inline void micro_kernel(std::int64_t pairs, const std::uint32_t* ap, const std::uint32_t* bp, float* c,
                                            std::int64_t ldc, std::int64_t rows, std::int64_t cols, float alpha, float beta,
                                            const float* bias) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00,
           c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;
    for (std::int64_t q = 0; q < pairs; ++q) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512(bp), b1 = (__m512bh)_mm512_load_si512(bp + 16);
        __m512bh a;
#define VEDIFF_BF16_GEMM_ROW(r, x0, x1)                                  \
    a = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[r])); \
    x0 = _mm512_dpbf16_ps(x0, a, b0);                                    \
    x1 = _mm512_dpbf16_ps(x1, a, b1);
        VEDIFF_BF16_GEMM_ROW(0, c00, c01) VEDIFF_BF16_GEMM_ROW(1, c10, c11) VEDIFF_BF16_GEMM_ROW(2, c20, c21)
        VEDIFF_BF16_GEMM_ROW(3, c30, c31) VEDIFF_BF16_GEMM_ROW(4, c40, c41) VEDIFF_BF16_GEMM_ROW(5, c50, c51)
        VEDIFF_BF16_GEMM_ROW(6, c60, c61) VEDIFF_BF16_GEMM_ROW(7, c70, c71) VEDIFF_BF16_GEMM_ROW(8, c80, c81)
        VEDIFF_BF16_GEMM_ROW(9, c90, c91) VEDIFF_BF16_GEMM_ROW(10, ca0, ca1) VEDIFF_BF16_GEMM_ROW(11, cb0, cb1)
#undef VEDIFF_BF16_GEMM_ROW
        ap += b::mr;
        bp += b::nr;
    }
    const __m512 acc[b::mr][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                                  {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    packed_gemm_detail::store_tile(acc, c, ldc, rows, cols, alpha, beta, bias);
}

/// dst[i] = float(bfloat16(src[i])): n values rounded to bf16 values, kept as floats (the
/// portable path's operands).
inline void round_to_bf16_values(float* dst, const float* src, std::int64_t n) {
    std::int64_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 m = lanes(n - i);
        const __m512i r = _mm512_and_si512(rounded_high(_mm512_maskz_loadu_ps(m, src + i)), _mm512_set1_epi32(int(0xFFFF0000u)));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(r));
    }
}

} // namespace bf16_gemm_detail

/// Panels [panel_lo, panel_hi) (of nr columns) of every depth slice of op(B), rounded and packed
/// whole: the slice starting at depth p0 lies at (p0/2)·n_padded words, its panel of columns
/// [j, j + nr) at j·⌈depth/2⌉ words after that. Threads may pack disjoint panel ranges at once.
VEDIFF_BF16_TARGET inline void pack_b_bf16_whole(std::uint32_t* dst, const float* bm, std::int64_t ldb, bool transposed, std::int64_t k,
                                                 std::int64_t n, std::int64_t panel_lo, std::int64_t panel_hi) {
    using b = bf16_gemm_blocking;
    const std::int64_t n_padded = (n + b::nr - 1) / b::nr * b::nr;
    for (std::int64_t p0 = 0; p0 < k; p0 += b::kc) {
        const std::int64_t depth = std::min(b::kc, k - p0), pairs = (depth + 1) / 2;
        for (std::int64_t jp = panel_lo; jp < panel_hi; ++jp) {
            const std::int64_t j0 = jp * b::nr, cols = std::min(b::nr, n - j0);
            std::uint32_t* d = dst + p0 / 2 * n_padded + j0 * pairs;
            if (transposed) bf16_gemm_detail::pack_contiguous_pairs(d, b::nr, bm + j0 * ldb + p0, ldb, cols, depth);
            else bf16_gemm_detail::pack_strided_pairs(d, b::nr, bm + p0 * ldb + j0, ldb, cols, depth);
        }
    }
}

/// Rows [0, m) of C from op(B) packed whole (pack_b_bf16_whole), on the calling thread: A is
/// rounded and packed a block at a time.
VEDIFF_BF16_TARGET inline void bf16_gemm_prepacked(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                                                   std::int64_t lda, bool transpose_a, const std::uint32_t* b_packed, float beta,
                                                   float* c, std::int64_t ldc, const float* bias = nullptr) {
    using b = bf16_gemm_blocking;
    const std::int64_t n_padded = (n + b::nr - 1) / b::nr * b::nr;
    const std::int64_t rows_max = (std::min(m, b::mc) + b::mr - 1) / b::mr * b::mr;
    tensor<float, cpu> a_buffer(tensor_shape{rows_max * ((std::min(k, b::kc) + 1) / 2)});
    auto* a_pack = reinterpret_cast<std::uint32_t*>(a_buffer.data());
    for (std::int64_t p0 = 0; p0 < k; p0 += b::kc) {
        const std::int64_t depth = std::min(b::kc, k - p0), pairs = (depth + 1) / 2;
        const float step_beta = p0 == 0 ? beta : 1.0f;  // later depth slices accumulate
        const float* step_bias = p0 == 0 ? bias : nullptr;
        const std::uint32_t* slice = b_packed + p0 / 2 * n_padded;
        for (std::int64_t i0 = 0; i0 < m; i0 += b::mc) {
            const std::int64_t rows = std::min(b::mc, m - i0);
            for (std::int64_t ip = 0; ip * b::mr < rows; ++ip) {
                const std::int64_t r0 = i0 + ip * b::mr, valid = std::min(b::mr, rows - ip * b::mr);
                std::uint32_t* d = a_pack + ip * b::mr * pairs;
                if (transpose_a) bf16_gemm_detail::pack_strided_pairs(d, b::mr, a + p0 * lda + r0, lda, valid, depth);
                else bf16_gemm_detail::pack_contiguous_pairs(d, b::mr, a + r0 * lda + p0, lda, valid, depth);
            }
            // Column blocks of nc keep the B panels a row panel meets within L2.
            for (std::int64_t j0 = 0; j0 < n; j0 += b::nc) {
                const std::int64_t cols = std::min(b::nc, n - j0);
                for (std::int64_t i = 0; i < rows; i += b::mr)
                    for (std::int64_t j = j0; j < j0 + cols; j += b::nr)
                        bf16_gemm_detail::micro_kernel(pairs, a_pack + i * pairs, slice + j * pairs, c + (i0 + i) * ldc + j, ldc,
                                                       std::min(b::mr, rows - i), std::min(b::nr, n - j), alpha, step_beta,
                                                       step_bias ? step_bias + j : nullptr);
            }
        }
    }
}

/// One product on the calling thread (k > 0): op(B) packed whole, then the rows.
inline void bf16_gemm_serial(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda,
                             bool transpose_a, const float* bm, std::int64_t ldb, bool transpose_b, float beta, float* c,
                             std::int64_t ldc, const float* bias = nullptr) {
    using b = bf16_gemm_blocking;
    tensor<float, cpu> b_buffer(tensor_shape{bf16_packed_b_words(k, n)});
    auto* packed = reinterpret_cast<std::uint32_t*>(b_buffer.data());
    pack_b_bf16_whole(packed, bm, ldb, transpose_b, k, n, 0, (n + b::nr - 1) / b::nr);
    bf16_gemm_prepacked(m, n, k, alpha, a, lda, transpose_a, packed, beta, c, ldc, bias);
}

#undef VEDIFF_BF16_TARGET

#endif

} // namespace cpu_detail
} // namespace vediff
