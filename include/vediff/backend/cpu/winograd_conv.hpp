#pragma once
// Winograd F(2×2, 3×3) convolution on the cpu, for 3×3 stride-1 convs with enough channels.
#include "vediff/backend/cpu/conv_units.hpp"

namespace vediff::cpu_detail {

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
    static constexpr std::int64_t target_tiles = 128;

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

    template <class P, class T>
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
                conv_products<P>::gemm_batched(16, co, cols, ci, T(1), u.data(), ci, co * ci, false, ws.v.data(), cols, vs,
                                                false, T(0), ws.m.data(), cols, ms);
                for (std::int64_t m = 0; m < images; ++m)
                    transform_output(y + (n0 + m) * co * g.out_plane(), ws.m.data() + m * tiles, cols, ms, bias, g, t0, t1,
                                     parallel);
            }
        };
        run_conv_groups(p.groups, make, group, [](workspace<T>&) {});
    }

    template <class P, class T>
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
                conv_products<P>::gemm_batched(16, co, ci, cols, T(1), ws.m.data(), cols, ms, false, ws.v.data(), cols, vs,
                                                true, T(1), du_acc, ci, co * ci);
                if (!dx) continue;
                conv_products<P>::gemm_batched(16, ci, cols, co, T(1), u.data(), ci, co * ci, true, ws.m.data(), cols, ms,
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


} // namespace vediff::cpu_detail
