#pragma once
// cpu kernels for 2-D max and average pooling over (planes, H, W): one output row per task, the
// window clipped to the input (padding never wins a maximum and, unless counted, never divides).
#include <algorithm>
#include <cstdint>
#include <limits>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct pool_kernels<cpu> {
    template <class T>
    static void max_pool2d(T* out, const T* in, const pool2d_geometry& g) {
        for_each_window(out, in, g, [](const T* plane, std::int64_t y0, std::int64_t y1, std::int64_t x0, std::int64_t x1,
                                       std::int64_t W, std::int64_t) {
            T best = -std::numeric_limits<T>::infinity();
            for (std::int64_t y = y0; y < y1; ++y)
                for (std::int64_t x = x0; x < x1; ++x) best = std::max(best, plane[y * W + x]);
            return best;
        });
    }
    template <class T>
    static void avg_pool2d(T* out, const T* in, const pool2d_geometry& g, bool count_include_pad) {
        for_each_window(out, in, g, [count_include_pad](const T* plane, std::int64_t y0, std::int64_t y1, std::int64_t x0,
                                                        std::int64_t x1, std::int64_t W, std::int64_t padded_count) {
            T sum = 0;
            for (std::int64_t y = y0; y < y1; ++y)
                for (std::int64_t x = x0; x < x1; ++x) sum += plane[y * W + x];
            return sum / static_cast<T>(count_include_pad ? padded_count : (y1 - y0) * (x1 - x0));
        });
    }

    /// dx[argmax of each window] += dy[window], the argmax being the window's first largest
    /// element in row-major order (PyTorch's); dx is overwritten. One task per plane, since
    /// overlapping windows (stride < kernel) add into the same elements.
    template <class T>
    static void max_pool2d_backward(T* dx, const T* dy, const T* in, const pool2d_geometry& g) {
        cpu_detail::parallel_for(g.planes, [=](std::int64_t p) {
            const T* plane = in + p * g.in_h * g.in_w;
            T* dplane = dx + p * g.in_h * g.in_w;
            const T* dout = dy + p * g.out_h * g.out_w;
            std::fill(dplane, dplane + g.in_h * g.in_w, T(0));
            for (std::int64_t oy = 0; oy < g.out_h; ++oy)
                for (std::int64_t ox = 0; ox < g.out_w; ++ox) {
                    const std::int64_t y0 = std::max<std::int64_t>(oy * g.stride - g.padding, 0);
                    const std::int64_t y1 = std::min(oy * g.stride - g.padding + g.kernel, g.in_h);
                    const std::int64_t x0 = std::max<std::int64_t>(ox * g.stride - g.padding, 0);
                    const std::int64_t x1 = std::min(ox * g.stride - g.padding + g.kernel, g.in_w);
                    std::int64_t best = y0 * g.in_w + x0;
                    for (std::int64_t y = y0; y < y1; ++y)
                        for (std::int64_t x = x0; x < x1; ++x)
                            if (plane[y * g.in_w + x] > plane[best]) best = y * g.in_w + x;
                    dplane[best] += dout[oy * g.out_w + ox];
                }
        }, g.in_h * g.in_w);
    }

private:
    /// out[p, oy, ox] = reduce(plane p, window rows [y0, y1), columns [x0, x1) inside the input,
    /// W, the window's element count inside the padded input).
    template <class T, class Reduce>
    static void for_each_window(T* out, const T* in, const pool2d_geometry& g, Reduce reduce) {
        cpu_detail::parallel_for(g.planes * g.out_h, [=](std::int64_t r) {
            const std::int64_t p = r / g.out_h, oy = r % g.out_h;
            const T* plane = in + p * g.in_h * g.in_w;
            T* dst = out + r * g.out_w;
            const std::int64_t ys = oy * g.stride - g.padding;
            const std::int64_t ye = std::min(ys + g.kernel, g.in_h + g.padding);
            const std::int64_t y0 = std::max<std::int64_t>(ys, 0), y1 = std::min(ye, g.in_h);
            for (std::int64_t ox = 0; ox < g.out_w; ++ox) {
                const std::int64_t xs = ox * g.stride - g.padding;
                const std::int64_t xe = std::min(xs + g.kernel, g.in_w + g.padding);
                const std::int64_t x0 = std::max<std::int64_t>(xs, 0), x1 = std::min(xe, g.in_w);
                dst[ox] = reduce(plane, y0, y1, x0, x1, g.in_w, (ye - ys) * (xe - xs));
            }
        }, g.out_w * g.kernel * g.kernel);
    }
};

} // namespace vediff
