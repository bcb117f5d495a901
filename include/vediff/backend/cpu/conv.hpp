#pragma once
// cpu kernels for 2-D convolution (NCHW, weight (out, in, kh, kw)), by one of two algorithms,
// both ending in Eigen GEMMs:
//  * im2col: the patches of a unit of work are unrolled into col (in·kh·kw, pixels) and
//    y = W·col; backward recomputes col (cheaper than keeping it) for dW += dy·colᵀ and
//    scatters dcol = Wᵀ·dy back into dx. A 1×1, stride-1, unpadded conv multiplies x directly.
//  * Winograd F(2×2, 3×3) for 3×3 stride-1 convs with enough channels: 16 products of
//    (out × in)·(in × tiles) replace 36 multiply-adds per 2×2 output tile by 16 (2.25× fewer
//    flops), and backward runs in the same transformed domain.
// A unit of work is one image, a band of rows of a large image (bounding the scratch), or
// several small images side by side (so that a 7×7 or 14×14 plane still makes a wide product).
// Threads take whole units when there are enough of them (no synchronization, private scratch);
// otherwise units run in turn and each product, or each transform, is split between threads.
#include <algorithm>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#include "vediff/backend/cpu/gemm.hpp"
#include "vediff/backend/cpu/memory.hpp"
#include "vediff/core/device.hpp"

namespace vediff {

/// Sizes of one conv2d call. Device-neutral; the op computes it once and hands it to a backend.
struct conv2d_geometry {
    std::int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
    std::int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;
    std::int64_t stride_h = 1, stride_w = 1;
    std::int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
    std::int64_t out_h = 0, out_w = 0;

    /// Rows of col: one per (input channel, kernel row, kernel column), in weight order.
    std::int64_t patch() const { return in_channels * kernel_h * kernel_w; }
    std::int64_t in_plane() const { return in_h * in_w; }
    std::int64_t out_plane() const { return out_h * out_w; }
    bool padded() const { return pad_top || pad_bottom || pad_left || pad_right; }
    /// A 1×1, stride-1, unpadded conv is a plain product with x.
    bool pointwise() const { return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && !padded(); }
};

template <device D>
struct conv_kernels;

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

/// im2col + GEMM, for any kernel, stride and padding.
struct im2col_conv {
    /// Pixels per product that small images are grouped up to.
    static constexpr std::int64_t target_pixels = 1024;

    /// Per-thread scratch: col and dcol (patch × columns), the padded input band and its
    /// gradient, tmp (out channels × columns) for grouped images, private dw/db partial sums.
    template <class T>
    struct workspace {
        scratch_buffer<T> col, dcol, pad, dpad, tmp, dw, db;
        bool private_sums;
        workspace(const conv2d_geometry& g, const conv_plan& p, bool direct, bool with_dx, bool private_dw)
            : col(direct ? 0 : g.patch() * columns(g, p)), dcol(with_dx && !direct ? g.patch() * columns(g, p) : 0),
              pad(g.padded() ? g.in_channels * band_in_rows(g, p.band) * padded_w(g) : 0),
              dpad(with_dx && g.padded() ? g.in_channels * band_in_rows(g, p.band) * padded_w(g) : 0),
              tmp(p.images > 1 ? g.out_channels * columns(g, p) : 0), dw(private_dw ? g.out_channels * g.patch() : 0),
              db(private_dw ? g.out_channels : 0), private_sums(private_dw) {
            dw.zero(private_dw ? g.out_channels * g.patch() : 0);
            db.zero(private_dw ? g.out_channels : 0);
        }
    };

    static conv_plan make_plan(const conv2d_geometry& g) {
        return {g.batch, g.out_h, g.out_w, g.patch(), target_pixels, available_threads()};
    }
    /// x and dx serve as col and dcol: pointwise, one image per unit.
    static bool direct(const conv2d_geometry& g, const conv_plan& p) { return g.pointwise() && p.images == 1; }
    static std::int64_t columns(const conv2d_geometry& g, const conv_plan& p) { return p.images * p.band * g.out_w; }
    static std::int64_t padded_w(const conv2d_geometry& g) { return g.in_w + g.pad_left + g.pad_right; }
    /// Input rows (in padded coordinates) read by a band of `band` output rows.
    static std::int64_t band_in_rows(const conv2d_geometry& g, std::int64_t band) { return (band - 1) * g.stride_h + g.kernel_h; }

    template <class T>
    static void forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const conv_plan p = make_plan(g);
        const bool in_place = direct(g, p);
        const auto make = [&](bool) { return workspace<T>(g, p, in_place, false, false); };
        const auto group = [&](std::int64_t gi, workspace<T>& ws, bool parallel) {
            const auto [n0, images] = p.group_images(g.batch, gi);
            for (std::int64_t r0 = 0; r0 < g.out_h; r0 += p.band) {
                const std::int64_t r1 = std::min(g.out_h, r0 + p.band), pixels = (r1 - r0) * g.out_w, cols = images * pixels;
                const auto [b, ldb] = patches(ws, x, g, in_place, n0, images, r0, r1, parallel);
                // One image writes its rows of y in place; a group goes through tmp (its columns
                // interleave images, which NCHW keeps apart).
                T* c = p.images == 1 ? y + n0 * g.out_channels * g.out_plane() + r0 * g.out_w : ws.tmp.data();
                const std::int64_t ldc = p.images == 1 ? g.out_plane() : cols;
                if (bias)
                    for (std::int64_t o = 0; o < g.out_channels; ++o) std::fill(c + o * ldc, c + o * ldc + cols, bias[o]);
                gemm_kernels<cpu>::gemm(g.out_channels, cols, g.patch(), T(1), w, g.patch(), false, b, ldb, false,
                                        bias ? T(1) : T(0), c, ldc);
                if (p.images > 1)
                    for (std::int64_t m = 0; m < images; ++m)
                        for (std::int64_t o = 0; o < g.out_channels; ++o)
                            std::copy_n(c + o * ldc + m * pixels, pixels, y + ((n0 + m) * g.out_channels + o) * g.out_plane());
            }
        };
        run_conv_groups(p.groups, make, group, [](workspace<T>&) {});
    }

    template <class T>
    static void backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const conv_plan p = make_plan(g);
        const bool in_place = direct(g, p);
        const std::int64_t K = g.patch();
        const auto make = [&](bool private_dw) { return workspace<T>(g, p, in_place, dx != nullptr, private_dw); };
        const auto group = [&](std::int64_t gi, workspace<T>& ws, bool parallel) {
            T* dw_acc = ws.private_sums ? ws.dw.data() : dw;
            T* db_acc = ws.private_sums && db ? ws.db.data() : db;
            const auto [n0, images] = p.group_images(g.batch, gi);
            if (db_acc) accumulate_bias_grad(db_acc, dy, g, n0, images);
            if (dx && !in_place)
                std::fill(dx + n0 * g.in_channels * g.in_plane(), dx + (n0 + images) * g.in_channels * g.in_plane(), T(0));
            for (std::int64_t r0 = 0; r0 < g.out_h; r0 += p.band) {
                const std::int64_t r1 = std::min(g.out_h, r0 + p.band), pixels = (r1 - r0) * g.out_w, cols = images * pixels;
                const T* a = dy + n0 * g.out_channels * g.out_plane() + r0 * g.out_w;
                std::int64_t lda = g.out_plane();
                if (p.images > 1) {
                    for (std::int64_t m = 0; m < images; ++m)
                        for (std::int64_t o = 0; o < g.out_channels; ++o)
                            std::copy_n(dy + ((n0 + m) * g.out_channels + o) * g.out_plane(), pixels,
                                        ws.tmp.data() + o * cols + m * pixels);
                    a = ws.tmp.data();
                    lda = cols;
                }
                const auto [b, ldb] = patches(ws, x, g, in_place, n0, images, r0, r1, parallel);
                gemm_kernels<cpu>::gemm(g.out_channels, K, cols, T(1), a, lda, false, b, ldb, true, T(1), dw_acc, K);
                if (!dx) continue;
                if (in_place) {
                    gemm_kernels<cpu>::gemm(K, cols, g.out_channels, T(1), w, K, true, a, lda, false, T(0),
                                            dx + n0 * g.in_channels * g.in_plane() + r0 * g.out_w, g.in_plane());
                    continue;
                }
                gemm_kernels<cpu>::gemm(K, cols, g.out_channels, T(1), w, K, true, a, lda, false, T(0), ws.dcol.data(), cols);
                for (std::int64_t m = 0; m < images; ++m)
                    col2im(dx + (n0 + m) * g.in_channels * g.in_plane(), ws.dcol.data() + m * pixels, cols, g, r0, r1,
                           ws.dpad.data(), parallel);
            }
        };
        const auto reduce = [&](workspace<T>& ws) {
            for (std::int64_t i = 0; i < g.out_channels * K; ++i) dw[i] += ws.dw.data()[i];
            if (db)
                for (std::int64_t i = 0; i < g.out_channels; ++i) db[i] += ws.db.data()[i];
        };
        run_conv_groups(p.groups, make, group, reduce);
    }

    template <class T>
    struct patch_matrix {
        const T* data;
        std::int64_t ld;  // row stride of the (patch, columns) matrix
    };

    /// The patch matrix of images [n0, n0 + images), output rows [r0, r1): x itself when in
    /// place, else im2col into ws.col with image m in columns [m·pixels, (m + 1)·pixels).
    template <class T>
    static patch_matrix<T> patches(workspace<T>& ws, const T* x, const conv2d_geometry& g, bool in_place, std::int64_t n0,
                                   std::int64_t images, std::int64_t r0, std::int64_t r1, bool parallel) {
        const std::int64_t pixels = (r1 - r0) * g.out_w, cols = images * pixels;
        if (in_place) return {x + n0 * g.in_channels * g.in_plane() + r0 * g.out_w, g.in_plane()};
        for (std::int64_t m = 0; m < images; ++m)
            im2col(ws.col.data() + m * pixels, cols, x + (n0 + m) * g.in_channels * g.in_plane(), g, r0, r1, ws.pad.data(),
                   parallel);
        return {ws.col.data(), cols};
    }

    /// col row (c, i, j), column (oh − r0)·Wo + ow, holds padded x[c, oh·s + i, ow·s + j]; rows
    /// have stride ld, so images of a group sit side by side. A padded conv reads a zero-padded
    /// copy of the band's input rows, so the loops need no bounds checks.
    template <class T>
    static void im2col(T* col, std::int64_t ld, const T* xn, const conv2d_geometry& g, std::int64_t r0, std::int64_t r1,
                       T* pad, bool parallel) {
        const std::int64_t first = r0 * g.stride_h - g.pad_top, rows = band_in_rows(g, r1 - r0);
        const T* src = xn + first * g.in_w;
        std::int64_t plane = g.in_plane(), width = g.in_w;
        if (g.padded()) {
            copy_window(pad, xn, g, first, rows, -g.pad_left, padded_w(g), parallel);
            src = pad;
            plane = rows * padded_w(g);
            width = padded_w(g);
        }
        const std::int64_t kk = g.kernel_h * g.kernel_w, wo = g.out_w, sh = g.stride_h, sw = g.stride_w;
#pragma omp parallel for schedule(static) if (parallel && g.patch() * (r1 - r0) * wo > parallel_grain)
        for (std::int64_t c = 0; c < g.in_channels; ++c)
            for (std::int64_t i = 0; i < g.kernel_h; ++i)
                for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                    T* dst = col + (c * kk + i * g.kernel_w + j) * ld;
                    for (std::int64_t oh = 0; oh < r1 - r0; ++oh) {
                        const T* s = src + c * plane + (oh * sh + i) * width + j;
                        T* d = dst + oh * wo;
                        if (sw == 1) {
#pragma omp simd
                            for (std::int64_t ow = 0; ow < wo; ++ow) d[ow] = s[ow];
                        } else {
                            for (std::int64_t ow = 0; ow < wo; ++ow) d[ow] = s[ow * sw];
                        }
                    }
                }
    }

    /// dxn += the adjoint of im2col for output rows [r0, r1) (dcol rows have stride ld). A padded
    /// conv scatters into a zeroed padded band first and adds its inside to dxn.
    template <class T>
    static void col2im(T* dxn, const T* dcol, std::int64_t ld, const conv2d_geometry& g, std::int64_t r0, std::int64_t r1,
                       T* dpad, bool parallel) {
        const std::int64_t first = r0 * g.stride_h - g.pad_top, rows = band_in_rows(g, r1 - r0);
        T* base = g.padded() ? dpad : dxn + first * g.in_w;
        const std::int64_t plane = g.padded() ? rows * padded_w(g) : g.in_plane(), width = g.padded() ? padded_w(g) : g.in_w;
        const std::int64_t kk = g.kernel_h * g.kernel_w, wo = g.out_w, sh = g.stride_h, sw = g.stride_w;
        // Channels are independent, so they split between threads without races.
#pragma omp parallel for schedule(static) if (parallel && g.patch() * (r1 - r0) * wo > parallel_grain)
        for (std::int64_t c = 0; c < g.in_channels; ++c) {
            T* out = base + c * plane;
            if (g.padded()) std::fill(out, out + plane, T(0));
            for (std::int64_t i = 0; i < g.kernel_h; ++i)
                for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                    const T* src = dcol + (c * kk + i * g.kernel_w + j) * ld;
                    for (std::int64_t oh = 0; oh < r1 - r0; ++oh) {
                        const T* s = src + oh * wo;
                        T* d = out + (oh * sh + i) * width + j;
                        if (sw == 1) {
#pragma omp simd
                            for (std::int64_t ow = 0; ow < wo; ++ow) d[ow] += s[ow];
                        } else {
                            for (std::int64_t ow = 0; ow < wo; ++ow) d[ow * sw] += s[ow];
                        }
                    }
                }
        }
        if (g.padded()) add_window(dxn, dpad, g, first, rows, -g.pad_left, padded_w(g), parallel);
    }
};

/// Winograd F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
/// CVPR 2016): the 2×2 output tile at (2ty, 2tx) is Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for the 4×4 padded
/// input tile d at the same corner and the 3×3 kernel g. Summed over input channels, each of the
/// 16 transformed positions ξ is one product M_ξ (out × tiles) = U_ξ (out × in)·V_ξ (in × tiles).
/// Backward is the adjoint of each step: dM = A dy Aᵀ, dU_ξ += dM_ξ·V_ξᵀ then dw += Gᵀ dU G,
/// dV_ξ = U_ξᵀ·dM_ξ then dx += B dV Bᵀ. The transform entries are 0, ±1 and ±½, so rounding stays
/// close to direct convolution's. The transforms run along a tile row at a time, so that every
/// inner loop is over consecutive tiles (SIMD lanes).
struct winograd_conv {
    /// Tiles per product that small images are grouped up to.
    static constexpr std::int64_t target_tiles = 256;

    static std::int64_t tile_rows(const conv2d_geometry& g) { return (g.out_h + 1) / 2; }
    static std::int64_t tile_cols(const conv2d_geometry& g) { return (g.out_w + 1) / 2; }
    static std::int64_t window_w(const conv2d_geometry& g) { return 2 * tile_cols(g) + 2; }
    static std::int64_t window_h(std::int64_t band) { return 2 * band + 2; }
    /// Stride between the 16 matrices of V, M or dV: one cache line more than their size, so
    /// that the 16 streams a transform writes do not share cache sets (the size is often 2^k).
    static std::int64_t xi_stride(std::int64_t channels, std::int64_t tiles) { return channels * tiles + 16; }

    /// Per-thread scratch: V, M (dM in backward) and dV of a unit, the padded input window and its
    /// gradient, private dU/db partial sums.
    template <class T>
    struct workspace {
        scratch_buffer<T> v, m, dv, pad, dpad, du, db;
        bool private_sums;
        workspace(const conv2d_geometry& g, const conv_plan& p, bool with_dx, bool private_du)
            : v(16 * xi_stride(g.in_channels, tiles(g, p))), m(16 * xi_stride(g.out_channels, tiles(g, p))),
              dv(with_dx ? 16 * xi_stride(g.in_channels, tiles(g, p)) : 0),
              pad(g.in_channels * window_h(p.band) * window_w(g)),
              dpad(with_dx ? g.in_channels * window_h(p.band) * window_w(g) : 0),
              du(private_du ? 16 * g.out_channels * g.in_channels : 0), db(private_du ? g.out_channels : 0),
              private_sums(private_du) {
            du.zero(private_du ? 16 * g.out_channels * g.in_channels : 0);
            db.zero(private_du ? g.out_channels : 0);
        }
        static std::int64_t tiles(const conv2d_geometry& g, const conv_plan& p) { return p.images * p.band * tile_cols(g); }
    };

    static conv_plan make_plan(const conv2d_geometry& g) {
        return {g.batch, tile_rows(g), tile_cols(g), 16 * std::max(g.in_channels, g.out_channels), target_tiles,
                available_threads()};
    }

    template <class T>
    static void forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        const conv_plan p = make_plan(g);
        const std::int64_t ci = g.in_channels, co = g.out_channels, th = tile_rows(g), tw = tile_cols(g);
        scratch_buffer<T> u(16 * co * ci);  // (16, out, in)
        transform_weights(u.data(), w, g);
        const auto make = [&](bool) { return workspace<T>(g, p, false, false); };
        const auto group = [&](std::int64_t gi, workspace<T>& ws, bool parallel) {
            const auto [n0, images] = p.group_images(g.batch, gi);
            for (std::int64_t t0 = 0; t0 < th; t0 += p.band) {
                const std::int64_t t1 = std::min(th, t0 + p.band), tiles = (t1 - t0) * tw, cols = images * tiles;
                const std::int64_t vs = xi_stride(ci, cols), ms = xi_stride(co, cols);
                for (std::int64_t m = 0; m < images; ++m)
                    transform_input(ws.v.data() + m * tiles, cols, vs, x + (n0 + m) * ci * g.in_plane(), g, t0, t1,
                                    ws.pad.data(), parallel);
                gemm_kernels<cpu>::gemm_batched(16, co, cols, ci, T(1), u.data(), ci, co * ci, false, ws.v.data(), cols, vs,
                                                false, T(0), ws.m.data(), cols, ms);
                for (std::int64_t m = 0; m < images; ++m)
                    transform_output(y + (n0 + m) * co * g.out_plane(), ws.m.data() + m * tiles, cols, ms, bias, g, t0, t1,
                                     parallel);
            }
        };
        run_conv_groups(p.groups, make, group, [](workspace<T>&) {});
    }

    template <class T>
    static void backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        const conv_plan p = make_plan(g);
        const std::int64_t ci = g.in_channels, co = g.out_channels, th = tile_rows(g), tw = tile_cols(g);
        scratch_buffer<T> u(16 * co * ci), du(16 * co * ci);  // (16, out, in)
        transform_weights(u.data(), w, g);
        du.zero(16 * co * ci);
        const auto make = [&](bool private_du) { return workspace<T>(g, p, dx != nullptr, private_du); };
        const auto group = [&](std::int64_t gi, workspace<T>& ws, bool parallel) {
            T* du_acc = ws.private_sums ? ws.du.data() : du.data();
            T* db_acc = ws.private_sums && db ? ws.db.data() : db;
            const auto [n0, images] = p.group_images(g.batch, gi);
            if (db_acc) accumulate_bias_grad(db_acc, dy, g, n0, images);
            if (dx) std::fill(dx + n0 * ci * g.in_plane(), dx + (n0 + images) * ci * g.in_plane(), T(0));
            for (std::int64_t t0 = 0; t0 < th; t0 += p.band) {
                const std::int64_t t1 = std::min(th, t0 + p.band), tiles = (t1 - t0) * tw, cols = images * tiles;
                const std::int64_t vs = xi_stride(ci, cols), ms = xi_stride(co, cols);
                for (std::int64_t m = 0; m < images; ++m) {
                    transform_input(ws.v.data() + m * tiles, cols, vs, x + (n0 + m) * ci * g.in_plane(), g, t0, t1,
                                    ws.pad.data(), parallel);
                    transform_output_grad(ws.m.data() + m * tiles, cols, ms, dy + (n0 + m) * co * g.out_plane(), g, t0, t1,
                                          parallel);
                }
                gemm_kernels<cpu>::gemm_batched(16, co, ci, cols, T(1), ws.m.data(), cols, ms, false, ws.v.data(), cols, vs,
                                                true, T(1), du_acc, ci, co * ci);
                if (!dx) continue;
                gemm_kernels<cpu>::gemm_batched(16, ci, cols, co, T(1), u.data(), ci, co * ci, true, ws.m.data(), cols, ms,
                                                false, T(0), ws.dv.data(), cols, vs);
                for (std::int64_t m = 0; m < images; ++m)
                    transform_input_grad(dx + (n0 + m) * ci * g.in_plane(), ws.dv.data() + m * tiles, cols, vs, g, t0, t1,
                                         ws.dpad.data(), parallel);
            }
        };
        const auto reduce = [&](workspace<T>& ws) {
            for (std::int64_t i = 0; i < 16 * co * ci; ++i) du.data()[i] += ws.du.data()[i];
            if (db)
                for (std::int64_t i = 0; i < co; ++i) db[i] += ws.db.data()[i];
        };
        run_conv_groups(p.groups, make, group, reduce);
        transform_weights_grad(dw, du.data(), g);
    }

    /// U[ξ, o, c] = (G g Gᵀ)[ξ] for the kernel g = w[o, c]; G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
    template <class T>
    static void transform_weights(T* u, const T* w, const conv2d_geometry& g) {
        const std::int64_t pairs = g.out_channels * g.in_channels;
        parallel_for(pairs, [=](std::int64_t oc) {
            const T* k = w + oc * 9;
            T gk[12];  // G·g, 4×3
            for (int j = 0; j < 3; ++j) {
                gk[j] = k[j];
                gk[3 + j] = T(0.5) * (k[j] + k[3 + j] + k[6 + j]);
                gk[6 + j] = T(0.5) * (k[j] - k[3 + j] + k[6 + j]);
                gk[9 + j] = k[6 + j];
            }
            for (int r = 0; r < 4; ++r) {
                const T* row = gk + 3 * r;
                u[(4 * r + 0) * pairs + oc] = row[0];
                u[(4 * r + 1) * pairs + oc] = T(0.5) * (row[0] + row[1] + row[2]);
                u[(4 * r + 2) * pairs + oc] = T(0.5) * (row[0] - row[1] + row[2]);
                u[(4 * r + 3) * pairs + oc] = row[2];
            }
        }, 64);
    }

    /// dw[o, c] += Gᵀ dU[·, o, c] G.
    template <class T>
    static void transform_weights_grad(T* dw, const T* du, const conv2d_geometry& g) {
        const std::int64_t pairs = g.out_channels * g.in_channels;
        parallel_for(pairs, [=](std::int64_t oc) {
            T h[12];  // dU·G, 4×3
            for (int r = 0; r < 4; ++r) {
                const T d0 = du[(4 * r) * pairs + oc], d1 = du[(4 * r + 1) * pairs + oc];
                const T d2 = du[(4 * r + 2) * pairs + oc], d3 = du[(4 * r + 3) * pairs + oc];
                h[3 * r] = d0 + T(0.5) * (d1 + d2);
                h[3 * r + 1] = T(0.5) * (d1 - d2);
                h[3 * r + 2] = T(0.5) * (d1 + d2) + d3;
            }
            T* k = dw + oc * 9;
            for (int j = 0; j < 3; ++j) {
                k[j] += h[j] + T(0.5) * (h[3 + j] + h[6 + j]);
                k[3 + j] += T(0.5) * (h[3 + j] - h[6 + j]);
                k[6 + j] += T(0.5) * (h[3 + j] + h[6 + j]) + h[9 + j];
            }
        }, 64);
    }

    /// V[ξ, c, t] = (Bᵀ d B)[ξ] for the tiles of tile rows [t0, t1) of one image (row stride ld,
    /// ξ stride xs); Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1].
    template <class T>
    static void transform_input(T* v, std::int64_t ld, std::int64_t xs, const T* xn, const conv2d_geometry& g,
                                std::int64_t t0, std::int64_t t1, T* pad, bool parallel) {
        const std::int64_t rows = window_h(t1 - t0), cols = window_w(g), tw = tile_cols(g);
        copy_window(pad, xn, g, 2 * t0 - g.pad_top, rows, -g.pad_left, cols, parallel);
#pragma omp parallel if (parallel && 16 * g.in_channels * (t1 - t0) * tw > parallel_grain)
        {
            // Bᵀ applied down each column of a tile row's 4 window rows, split into even and odd
            // columns: e[i][q] is row i at column 2q, o[i][q] at column 2q + 1.
            std::vector<T> buffer(8 * static_cast<std::size_t>(tw + 1));
            T* e[4] = {buffer.data(), buffer.data() + (tw + 1), buffer.data() + 2 * (tw + 1), buffer.data() + 3 * (tw + 1)};
            T* o[4] = {e[0] + 4 * (tw + 1), e[1] + 4 * (tw + 1), e[2] + 4 * (tw + 1), e[3] + 4 * (tw + 1)};
#pragma omp for schedule(static)
            for (std::int64_t c = 0; c < g.in_channels; ++c)
                for (std::int64_t ty = 0; ty < t1 - t0; ++ty) {
                    const T* r0 = pad + (c * rows + 2 * ty) * cols;
                    const T *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
#pragma omp simd
                    for (std::int64_t q = 0; q <= tw; ++q) {
                        e[0][q] = r0[2 * q] - r2[2 * q];
                        e[1][q] = r1[2 * q] + r2[2 * q];
                        e[2][q] = r2[2 * q] - r1[2 * q];
                        e[3][q] = r1[2 * q] - r3[2 * q];
                        o[0][q] = r0[2 * q + 1] - r2[2 * q + 1];
                        o[1][q] = r1[2 * q + 1] + r2[2 * q + 1];
                        o[2][q] = r2[2 * q + 1] - r1[2 * q + 1];
                        o[3][q] = r1[2 * q + 1] - r3[2 * q + 1];
                    }
                    // Then Bᵀ along each row: tile tx spans columns 2tx … 2tx + 3 = e[tx], o[tx], e[tx+1], o[tx+1].
                    for (int i = 0; i < 4; ++i) {
                        T* d = v + (4 * i) * xs + c * ld + ty * tw;
                        const T *ei = e[i], *oi = o[i];
#pragma omp simd
                        for (std::int64_t tx = 0; tx < tw; ++tx) {
                            d[tx] = ei[tx] - ei[tx + 1];
                            d[xs + tx] = oi[tx] + ei[tx + 1];
                            d[2 * xs + tx] = ei[tx + 1] - oi[tx];
                            d[3 * xs + tx] = oi[tx] - oi[tx + 1];
                        }
                    }
                }
        }
    }

    /// dx += the adjoint of transform_input: B dV Bᵀ added onto the overlapping 4×4 windows.
    template <class T>
    static void transform_input_grad(T* dxn, const T* dv, std::int64_t ld, std::int64_t xs, const conv2d_geometry& g,
                                     std::int64_t t0, std::int64_t t1, T* dpad, bool parallel) {
        const std::int64_t rows = window_h(t1 - t0), cols = window_w(g), tw = tile_cols(g);
#pragma omp parallel if (parallel && 16 * g.in_channels * (t1 - t0) * tw > parallel_grain)
        {
            // h[i][j] = (dV row i)·Bᵀ column j per tile, for one tile row. The window columns of
            // tile tx are 2tx + j, so column 2q collects j = 0 of tile q and j = 2 of tile q − 1:
            // arrays for j = 2, 3 are stored one place later, with zeros at both ends.
            std::vector<T> buffer(16 * static_cast<std::size_t>(tw + 1));
            const auto h = [&](int i, int j) { return buffer.data() + (4 * i + j) * (tw + 1); };
#pragma omp for schedule(static)
            for (std::int64_t c = 0; c < g.in_channels; ++c) {
                T* out = dpad + c * rows * cols;
                std::fill(out, out + rows * cols, T(0));
                for (std::int64_t ty = 0; ty < t1 - t0; ++ty) {
                    for (int i = 0; i < 4; ++i) {
                        const T* s = dv + (4 * i) * xs + c * ld + ty * tw;
                        T *h0 = h(i, 0), *h1 = h(i, 1), *h2 = h(i, 2) + 1, *h3 = h(i, 3) + 1;
                        h0[tw] = h1[tw] = h(i, 2)[0] = h(i, 3)[0] = T(0);
                        // B = [1 0 0 0; 0 1 −1 1; −1 1 1 0; 0 0 0 −1] applied along the row.
#pragma omp simd
                        for (std::int64_t tx = 0; tx < tw; ++tx) {
                            const T w0 = s[tx], w1 = s[xs + tx], w2 = s[2 * xs + tx], w3 = s[3 * xs + tx];
                            h0[tx] = w0;
                            h1[tx] = w1 - w2 + w3;
                            h2[tx] = w1 + w2 - w0;
                            h3[tx] = -w3;
                        }
                    }
                    // Then B down the columns. Window column 2q collects j = 0 of tile q and j = 2 of
                    // tile q − 1 (e0…e3), column 2q + 1 collects j = 1 and j = 3 (o0…o3).
                    const T *h00 = h(0, 0), *h01 = h(0, 1), *h02 = h(0, 2), *h03 = h(0, 3);
                    const T *h10 = h(1, 0), *h11 = h(1, 1), *h12 = h(1, 2), *h13 = h(1, 3);
                    const T *h20 = h(2, 0), *h21 = h(2, 1), *h22 = h(2, 2), *h23 = h(2, 3);
                    const T *h30 = h(3, 0), *h31 = h(3, 1), *h32 = h(3, 2), *h33 = h(3, 3);
                    T* r0 = out + 2 * ty * cols;
                    T *r1 = r0 + cols, *r2 = r1 + cols, *r3 = r2 + cols;
#pragma omp simd
                    for (std::int64_t q = 0; q <= tw; ++q) {
                        const T e0 = h00[q] + h02[q], e1 = h10[q] + h12[q], e2 = h20[q] + h22[q], e3 = h30[q] + h32[q];
                        const T o0 = h01[q] + h03[q], o1 = h11[q] + h13[q], o2 = h21[q] + h23[q], o3 = h31[q] + h33[q];
                        r0[2 * q] += e0;
                        r0[2 * q + 1] += o0;
                        r1[2 * q] += e1 - e2 + e3;
                        r1[2 * q + 1] += o1 - o2 + o3;
                        r2[2 * q] += e1 + e2 - e0;
                        r2[2 * q + 1] += o1 + o2 - o0;
                        r3[2 * q] -= e3;
                        r3[2 * q + 1] -= o3;
                    }
                }
            }
        }
        add_window(dxn, dpad, g, 2 * t0 - g.pad_top, rows, -g.pad_left, cols, parallel);
    }

    /// y[o] tiles of tile rows [t0, t1) = Aᵀ M A (+ bias), Aᵀ = [1 1 1 0; 0 1 −1 −1]; tiles past
    /// the image's edge are cut.
    template <class T>
    static void transform_output(T* yn, const T* mm, std::int64_t ld, std::int64_t xs, const T* bias,
                                 const conv2d_geometry& g, std::int64_t t0, std::int64_t t1, bool parallel) {
        const std::int64_t tw = tile_cols(g);
#pragma omp parallel if (parallel && 16 * g.out_channels * (t1 - t0) * tw > parallel_grain)
        {
            std::vector<T> buffer(4 * static_cast<std::size_t>(tw));  // two output rows, even and odd columns
            T *y0e = buffer.data(), *y0o = y0e + tw, *y1e = y0o + tw, *y1o = y1e + tw;
#pragma omp for schedule(static)
            for (std::int64_t o = 0; o < g.out_channels; ++o) {
                const T shift = bias ? bias[o] : T(0);
                for (std::int64_t ty = 0; ty < t1 - t0; ++ty) {
                    const T* s = mm + o * ld + ty * tw;
#pragma omp simd
                    for (std::int64_t tx = 0; tx < tw; ++tx) {
                        T a[4], b[4];  // Aᵀ down the columns: rows 0 + 1 + 2 and 1 − 2 − 3
                        for (int k = 0; k < 4; ++k) {
                            const T m0 = s[k * xs + tx], m1 = s[(4 + k) * xs + tx], m2 = s[(8 + k) * xs + tx],
                                    m3 = s[(12 + k) * xs + tx];
                            a[k] = m0 + m1 + m2;
                            b[k] = m1 - m2 - m3;
                        }
                        y0e[tx] = a[0] + a[1] + a[2] + shift;
                        y0o[tx] = a[1] - a[2] - a[3] + shift;
                        y1e[tx] = b[0] + b[1] + b[2] + shift;
                        y1o[tx] = b[1] - b[2] - b[3] + shift;
                    }
                    const std::int64_t oh = 2 * (t0 + ty);
                    for (int r = 0; r < 2 && oh + r < g.out_h; ++r) {
                        T* dst = yn + (o * g.out_h + oh + r) * g.out_w;
                        const T *ev = r ? y1e : y0e, *od = r ? y1o : y0o;
                        for (std::int64_t tx = 0; tx < g.out_w / 2; ++tx) {
                            dst[2 * tx] = ev[tx];
                            dst[2 * tx + 1] = od[tx];
                        }
                        if (g.out_w % 2) dst[g.out_w - 1] = ev[tw - 1];
                    }
                }
            }
        }
    }

    /// dM[ξ, o, t] = (A dy Aᵀ)[ξ], the adjoint of transform_output (dy is 0 past the edge);
    /// A = [1 0; 1 1; 1 −1; 0 −1].
    template <class T>
    static void transform_output_grad(T* dm, std::int64_t ld, std::int64_t xs, const T* dyn, const conv2d_geometry& g,
                                      std::int64_t t0, std::int64_t t1, bool parallel) {
        const std::int64_t tw = tile_cols(g);
#pragma omp parallel if (parallel && 16 * g.out_channels * (t1 - t0) * tw > parallel_grain)
        {
            std::vector<T> buffer(4 * static_cast<std::size_t>(tw), T(0));  // dy rows 2ty, 2ty + 1: even, odd columns
            T *d0e = buffer.data(), *d0o = d0e + tw, *d1e = d0o + tw, *d1o = d1e + tw;
#pragma omp for schedule(static)
            for (std::int64_t o = 0; o < g.out_channels; ++o)
                for (std::int64_t ty = 0; ty < t1 - t0; ++ty) {
                    const std::int64_t oh = 2 * (t0 + ty);
                    for (int r = 0; r < 2; ++r) {
                        T *ev = r ? d1e : d0e, *od = r ? d1o : d0o;
                        if (oh + r >= g.out_h) {
                            std::fill(ev, ev + tw, T(0));
                            std::fill(od, od + tw, T(0));
                            continue;
                        }
                        const T* src = dyn + (o * g.out_h + oh + r) * g.out_w;
                        for (std::int64_t tx = 0; tx < g.out_w / 2; ++tx) {
                            ev[tx] = src[2 * tx];
                            od[tx] = src[2 * tx + 1];
                        }
                        if (g.out_w % 2) {
                            ev[tw - 1] = src[g.out_w - 1];
                            od[tw - 1] = T(0);
                        }
                    }
                    T* d = dm + o * ld + ty * tw;
#pragma omp simd
                    for (std::int64_t tx = 0; tx < tw; ++tx) {
                        // A down the columns: (v0, v0 + v1, v0 − v1, −v1) of the rows (d0, d1).
                        const T c0[4] = {d0e[tx], d0e[tx] + d1e[tx], d0e[tx] - d1e[tx], -d1e[tx]};
                        const T c1[4] = {d0o[tx], d0o[tx] + d1o[tx], d0o[tx] - d1o[tx], -d1o[tx]};
                        // Then along each row.
                        for (int i = 0; i < 4; ++i) {
                            d[(4 * i) * xs + tx] = c0[i];
                            d[(4 * i + 1) * xs + tx] = c0[i] + c1[i];
                            d[(4 * i + 2) * xs + tx] = c0[i] - c1[i];
                            d[(4 * i + 3) * xs + tx] = -c1[i];
                        }
                    }
                }
        }
    }
};

} // namespace cpu_detail

template <>
struct conv_kernels<cpu> {
    /// Winograd needs enough channels for its 16 products to be efficient (in = their depth).
    static constexpr std::int64_t winograd_min_channels = 16;

    static bool uses_winograd(const conv2d_geometry& g) {
        return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1 &&
               g.in_channels >= winograd_min_channels && g.out_channels >= winograd_min_channels;
    }

    /// y (N, Cout, Ho, Wo) = conv(x (N, Cin, H, W), w (Cout, Cin, kh, kw)) + bias (Cout); bias may be null.
    template <class T>
    static void conv2d_forward(T* y, const T* x, const T* w, const T* bias, const conv2d_geometry& g) {
        if (uses_winograd(g)) cpu_detail::winograd_conv::forward(y, x, w, bias, g);
        else cpu_detail::im2col_conv::forward(y, x, w, bias, g);
    }

    /// Given dy (N, Cout, Ho, Wo): writes dx (may be null: not needed) and accumulates
    /// dw += ∂/∂w and db += ∂/∂bias (db may be null: no bias).
    template <class T>
    static void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const conv2d_geometry& g) {
        if (uses_winograd(g)) cpu_detail::winograd_conv::backward(dx, dw, db, dy, x, w, g);
        else cpu_detail::im2col_conv::backward(dx, dw, db, dy, x, w, g);
    }
};

} // namespace vediff
