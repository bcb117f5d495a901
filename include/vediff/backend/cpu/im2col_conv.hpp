#pragma once
// im2col + GEMM convolution on the cpu: the patches of a unit of work are unrolled into col
// (in·kh·kw, pixels) and y = W·col; backward recomputes col (cheaper than keeping it) for
// dW += dy·colᵀ and scatters dcol = Wᵀ·dy back into dx. A 1×1, stride-1, unpadded conv
// multiplies x directly.
#include "vediff/backend/cpu/conv_units.hpp"

namespace vediff::cpu_detail {

/// im2col + GEMM, for any kernel, stride and padding.
struct im2col_conv {
    /// Pixels per product that small images are grouped up to.
    static constexpr std::int64_t target_pixels = 256;

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

    template <class P, class T>
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
                conv_products<P>::gemm(g.out_channels, cols, g.patch(), T(1), w, g.patch(), false, b, ldb, false,
                                        bias ? T(1) : T(0), c, ldc);
                if (p.images > 1)
                    for (std::int64_t m = 0; m < images; ++m)
                        for (std::int64_t o = 0; o < g.out_channels; ++o)
                            std::copy_n(c + o * ldc + m * pixels, pixels, y + ((n0 + m) * g.out_channels + o) * g.out_plane());
            }
        };
        run_conv_groups(p.groups, make, group, [](workspace<T>&) {});
    }

    template <class P, class T>
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
                conv_products<P>::gemm(g.out_channels, K, cols, T(1), a, lda, false, b, ldb, true, T(1), dw_acc, K);
                if (!dx) continue;
                if (in_place) {
                    conv_products<P>::gemm(K, cols, g.out_channels, T(1), w, K, true, a, lda, false, T(0),
                                            dx + n0 * g.in_channels * g.in_plane() + r0 * g.out_w, g.in_plane());
                    continue;
                }
                conv_products<P>::gemm(K, cols, g.out_channels, T(1), w, K, true, a, lda, false, T(0), ws.dcol.data(), cols);
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


} // namespace vediff::cpu_detail
