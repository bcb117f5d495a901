#pragma once
// Work units shared by the cpu conv algorithms: scratch memory, how a batch is cut into groups of
// images and bands of rows, padded windows of an image and their adjoint, bias gradients.
#include <algorithm>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "vediff/backend/cpu/gemm.hpp"
#include "vediff/backend/cpu/memory.hpp"
#include "vediff/core/conv2d_geometry.hpp"
#include "vediff/core/precision.hpp"

namespace vediff {

namespace cpu_detail {

/// Uninitialized scratch memory from the cpu block cache, released on scope exit.
template <class T>
class scratch_buffer {
public:
    explicit scratch_buffer(std::int64_t n)
        : bytes_(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)) * sizeof(T)),
          data_(static_cast<T*>(memory<cpu>::allocate(bytes_))) {}
    ~scratch_buffer() { memory<cpu>::release(data_, bytes_); }
    scratch_buffer(const scratch_buffer&) = delete;
    scratch_buffer& operator=(const scratch_buffer&) = delete;
    T* data() const { return data_; }
    void zero(std::int64_t n) const { std::fill(data_, data_ + n, T(0)); }

private:
    std::size_t bytes_;
    T* data_;
};

/// A conv's matrix products under precision policy P (core/precision.hpp): the element type's
/// product under fp32; under bf16_mixed both operands rounded to bfloat16 and summed in fp32
/// (gemm_bf16), so the im2col columns and the Winograd transforms are rounded as they are packed.
template <class P>
struct conv_products {
    template <class T>
    static void gemm(std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda, bool transpose_a,
                     const T* b, std::int64_t ldb, bool transpose_b, T beta, T* c, std::int64_t ldc) {
        if constexpr (P::rounds_operands) {
            static_assert(std::is_same_v<T, float>, "bf16_mixed convolutions take float tensors (fp32 master values)");
            gemm_kernels<cpu>::gemm_bf16(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        } else {
            gemm_kernels<cpu>::gemm(m, n, k, alpha, a, lda, transpose_a, b, ldb, transpose_b, beta, c, ldc);
        }
    }

    template <class T>
    static void gemm_batched(std::int64_t batch, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                             std::int64_t lda, std::int64_t stride_a, bool transpose_a, const T* b, std::int64_t ldb,
                             std::int64_t stride_b, bool transpose_b, T beta, T* c, std::int64_t ldc, std::int64_t stride_c) {
        if constexpr (P::rounds_operands) {
            static_assert(std::is_same_v<T, float>, "bf16_mixed convolutions take float tensors (fp32 master values)");
            gemm_kernels<cpu>::gemm_batched_bf16(batch, m, n, k, alpha, a, lda, stride_a, transpose_a, b, ldb, stride_b,
                                                 transpose_b, beta, c, ldc, stride_c);
        } else {
            gemm_kernels<cpu>::gemm_batched(batch, m, n, k, alpha, a, lda, stride_a, transpose_a, b, ldb, stride_b, transpose_b,
                                            beta, c, ldc, stride_c);
        }
    }
};

/// How a batch is cut into units: `groups` groups of consecutive images (sizes differ by at most
/// one), each taken `band` rows at a time (rows of output pixels, or of Winograd tiles).
struct conv_plan {
    /// Scratch elements per unit (~8 MB of floats): one unit covers a whole image of the usual
    /// sizes, and the scratch of a large image stays bounded.
    static constexpr std::int64_t budget = std::int64_t{1} << 21;

    std::int64_t groups = 0;
    std::int64_t images = 1;  // most images in a group (> 1 only for small planes)
    std::int64_t band = 1;    // rows per unit (< rows only for large images)

    /// rows × row_pixels pixels per image, `cost` scratch elements per pixel; small images are
    /// grouped up to `target` pixels per unit, in a multiple of `threads` groups.
    conv_plan(std::int64_t batch, std::int64_t rows, std::int64_t row_pixels, std::int64_t cost, std::int64_t target,
              int threads)
        : groups(batch), band(std::max<std::int64_t>(rows, 1)) {
        const std::int64_t pixels = rows * row_pixels, per_image = std::max<std::int64_t>(1, cost * pixels);
        if (per_image > budget) {
            band = std::clamp<std::int64_t>(budget / std::max<std::int64_t>(1, cost * row_pixels), 1, rows);
        } else if (batch > 1 && pixels > 0 && pixels < target) {
            const std::int64_t wanted = std::min((target + pixels - 1) / pixels, budget / per_image);
            std::int64_t g = (batch + wanted - 1) / wanted;
            if (threads > 1) g = (g + threads - 1) / threads * threads;
            groups = std::min(g, batch);
        }
        images = groups > 0 ? (batch + groups - 1) / groups : 1;
    }

    /// First image and image count of group gi.
    std::pair<std::int64_t, std::int64_t> group_images(std::int64_t batch, std::int64_t gi) const {
        const std::int64_t n0 = gi * batch / groups, n1 = (gi + 1) * batch / groups;
        return {n0, n1 - n0};
    }
};

/// Calls group(gi, workspace, parallel) for every group. Threads take whole groups when they
/// divide well among them, each with a workspace from make(private_sums); thread 0 accumulates
/// in place, the others privately, and reduce(workspace) adds those up. Otherwise one workspace
/// serves all groups in turn and `parallel` tells the group to split its own work.
template <class Make, class Group, class Reduce>
void run_conv_groups(std::int64_t groups, const Make& make, const Group& group, const Reduce& reduce) {
    const int threads = available_threads();
    const bool over_groups = threads > 1 && groups >= threads && (groups % threads == 0 || groups >= 4 * threads);
    if (!over_groups) {
        auto ws = make(false);
        for (std::int64_t gi = 0; gi < groups; ++gi) group(gi, ws, true);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const bool first = omp_get_thread_num() == 0;
#else
        const bool first = true;
#endif
        auto ws = make(!first);
#pragma omp for schedule(static)
        for (std::int64_t gi = 0; gi < groups; ++gi) group(gi, ws, false);
        if (!first) {
#pragma omp critical(vediff_conv2d_reduce)
            reduce(ws);
        }
    }
}

/// dst (C, rows, cols) = x[c, row0 + r, col0 + q] for one image, 0 outside it: a padded window.
template <class T>
void copy_window(T* dst, const T* xn, const conv2d_geometry& g, std::int64_t row0, std::int64_t rows, std::int64_t col0,
                 std::int64_t cols, bool parallel) {
    const std::int64_t q0 = std::clamp<std::int64_t>(-col0, 0, cols), q1 = std::clamp<std::int64_t>(g.in_w - col0, q0, cols);
#pragma omp parallel for schedule(static) if (parallel && g.in_channels * rows * cols > parallel_grain)
    for (std::int64_t c = 0; c < g.in_channels; ++c)
        for (std::int64_t r = 0; r < rows; ++r) {
            T* d = dst + (c * rows + r) * cols;
            const std::int64_t ih = row0 + r;
            if (ih < 0 || ih >= g.in_h) {
                std::fill(d, d + cols, T(0));
                continue;
            }
            std::fill(d, d + q0, T(0));
            std::copy_n(xn + (c * g.in_h + ih) * g.in_w + col0 + q0, q1 - q0, d + q0);
            std::fill(d + q1, d + cols, T(0));
        }
}

/// The adjoint of copy_window: dxn[c, row0 + r, col0 + q] += src where inside the image.
template <class T>
void add_window(T* dxn, const T* src, const conv2d_geometry& g, std::int64_t row0, std::int64_t rows, std::int64_t col0,
                std::int64_t cols, bool parallel) {
    const std::int64_t q0 = std::clamp<std::int64_t>(-col0, 0, cols), q1 = std::clamp<std::int64_t>(g.in_w - col0, q0, cols);
#pragma omp parallel for schedule(static) if (parallel && g.in_channels * rows * cols > parallel_grain)
    for (std::int64_t c = 0; c < g.in_channels; ++c)
        for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t ih = row0 + r;
            if (ih < 0 || ih >= g.in_h) continue;
            const T* s = src + (c * rows + r) * cols;
            T* d = dxn + (c * g.in_h + ih) * g.in_w;
#pragma omp simd
            for (std::int64_t q = q0; q < q1; ++q) d[col0 + q] += s[q];
        }
}

/// db[o] += Σ dy over the images [n0, n0 + images) and the pixels of channel o.
template <class T>
void accumulate_bias_grad(T* db, const T* dy, const conv2d_geometry& g, std::int64_t n0, std::int64_t images) {
    for (std::int64_t m = 0; m < images; ++m)
        for (std::int64_t o = 0; o < g.out_channels; ++o) {
            const T* d = dy + ((n0 + m) * g.out_channels + o) * g.out_plane();
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (std::int64_t q = 0; q < g.out_plane(); ++q) s += d[q];
            db[o] += s;
        }
}

} // namespace cpu_detail
} // namespace vediff
