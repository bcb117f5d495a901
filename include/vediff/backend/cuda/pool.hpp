#pragma once
// cuda kernels of 2-D max and average pooling (ops/pool.hpp), with the cpu backend's windows: one
// thread per output element forward. Max-pool backward gathers instead of scattering: one thread
// per input element adds the gradients of the windows whose first largest element (PyTorch's
// argmax) it is, so overlapping windows need no atomics and the sums have a fixed order.
#include <cstdint>

#include "vediff/backend/cuda/batch_norm.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

struct pool_window {
    std::int64_t y0, y1, x0, x1, padded_count;
};

/// Output (oy, ox)'s window inside the input, and its element count inside the padded input.
__host__ __device__ inline pool_window window_of(const pool2d_geometry& g, std::int64_t oy, std::int64_t ox) {
    const std::int64_t ys = oy * g.stride - g.padding, xs = ox * g.stride - g.padding;
    const std::int64_t ye = ys + g.kernel < g.in_h + g.padding ? ys + g.kernel : g.in_h + g.padding;
    const std::int64_t xe = xs + g.kernel < g.in_w + g.padding ? xs + g.kernel : g.in_w + g.padding;
    return {ys > 0 ? ys : 0, ye < g.in_h ? ye : g.in_h, xs > 0 ? xs : 0, xe < g.in_w ? xe : g.in_w, (ye - ys) * (xe - xs)};
}

/// The index within the plane of the window's first largest element (row-major).
template <class T>
__host__ __device__ std::int64_t window_argmax(const T* plane, const pool_window& w, std::int64_t in_w) {
    std::int64_t best = w.y0 * in_w + w.x0;
    for (std::int64_t y = w.y0; y < w.y1; ++y)
        for (std::int64_t x = w.x0; x < w.x1; ++x)
            if (plane[y * in_w + x] > plane[best]) best = y * in_w + x;
    return best;
}

template <class T>
struct max_pool_op {
    T* out;
    const T* in;
    pool2d_geometry g;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t p = index_div(e, g.out_h * g.out_w), oy = index_mod(index_div(e, g.out_w), g.out_h), ox = index_mod(e, g.out_w);
        const T* plane = in + p * g.in_h * g.in_w;
        const pool_window w = window_of(g, oy, ox);
        // An empty window (all padding) gives −∞, as the cpu's does.
        T best = -static_cast<T>(INFINITY);
        for (std::int64_t y = w.y0; y < w.y1; ++y)
            for (std::int64_t x = w.x0; x < w.x1; ++x) best = plane[y * g.in_w + x] > best ? plane[y * g.in_w + x] : best;
        out[e] = best;
    }
};

template <class T>
struct avg_pool_op {
    T* out;
    const T* in;
    pool2d_geometry g;
    bool count_include_pad;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t p = index_div(e, g.out_h * g.out_w), oy = index_mod(index_div(e, g.out_w), g.out_h), ox = index_mod(e, g.out_w);
        const T* plane = in + p * g.in_h * g.in_w;
        const pool_window w = window_of(g, oy, ox);
        T sum = 0;
        for (std::int64_t y = w.y0; y < w.y1; ++y)
            for (std::int64_t x = w.x0; x < w.x1; ++x) sum += plane[y * g.in_w + x];
        out[e] = sum / static_cast<T>(count_include_pad ? w.padded_count : (w.y1 - w.y0) * (w.x1 - w.x0));
    }
};

/// dx[p, y, x] = Σ dy over the windows (in row-major order of outputs) whose argmax is (y, x).
template <class T>
struct max_pool_backward_op {
    T* dx;
    const T *dy, *in;
    pool2d_geometry g;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t p = index_div(e, g.in_h * g.in_w), y = index_mod(index_div(e, g.in_w), g.in_h), x = index_mod(e, g.in_w);
        const T* plane = in + p * g.in_h * g.in_w;
        const T* dout = dy + p * g.out_h * g.out_w;
        // Outputs whose window holds row y: oy·stride − padding ≤ y < oy·stride − padding + kernel.
        const std::int64_t oy_first = y + g.padding - g.kernel + 1 > 0 ? (y + g.padding - g.kernel + g.stride) / g.stride : 0;
        const std::int64_t oy_last = (y + g.padding) / g.stride < g.out_h - 1 ? (y + g.padding) / g.stride : g.out_h - 1;
        const std::int64_t ox_first = x + g.padding - g.kernel + 1 > 0 ? (x + g.padding - g.kernel + g.stride) / g.stride : 0;
        const std::int64_t ox_last = (x + g.padding) / g.stride < g.out_w - 1 ? (x + g.padding) / g.stride : g.out_w - 1;
        T sum = 0;
        for (std::int64_t oy = oy_first; oy <= oy_last; ++oy)
            for (std::int64_t ox = ox_first; ox <= ox_last; ++ox)
                if (window_argmax(plane, window_of(g, oy, ox), g.in_w) == y * g.in_w + x) sum += dout[oy * g.out_w + ox];
        dx[e] = sum;
    }
};

} // namespace cuda_detail

template <>
struct pool_kernels<cuda> {
    template <class T>
    static void max_pool2d(T* out, const T* in, const pool2d_geometry& g) {
        cuda_detail::for_each_element(g.planes * g.out_h * g.out_w, cuda_detail::max_pool_op<T>{out, in, g});
    }
    template <class T>
    static void avg_pool2d(T* out, const T* in, const pool2d_geometry& g, bool count_include_pad) {
        cuda_detail::for_each_element(g.planes * g.out_h * g.out_w, cuda_detail::avg_pool_op<T>{out, in, g, count_include_pad});
    }
    template <class T>
    static void max_pool2d_backward(T* dx, const T* dy, const T* in, const pool2d_geometry& g) {
        cuda_detail::for_each_element(g.planes * g.in_h * g.in_w, cuda_detail::max_pool_backward_op<T>{dx, dy, in, g});
    }
};

} // namespace vediff
