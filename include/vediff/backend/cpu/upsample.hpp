#pragma once
// cpu kernels for 2× resampling of (N, C, H, W) planes: nearest-neighbour upsampling, and the
// scaled sum over 2×2 blocks (its adjoint; with scale ¼ it is 2×2 average pooling).
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct upsample_kernels<cpu> {
    /// out (planes, 2H, 2W)[y, x] = scale · in (planes, H, W)[y/2, x/2].
    template <class T>
    static void nearest2x(T* out, const T* in, std::int64_t planes, std::int64_t H, std::int64_t W, T scale = T(1)) {
        cpu_detail::parallel_for(planes * H, [=](std::int64_t r) {
            const T* src = in + r * W;
            T* top = out + r * 4 * W;  // output rows 2y and 2y + 1 of the same plane
            T* bottom = top + 2 * W;
            for (std::int64_t x = 0; x < W; ++x) {
                const T v = scale * src[x];
                top[2 * x] = top[2 * x + 1] = bottom[2 * x] = bottom[2 * x + 1] = v;
            }
        }, 4 * W);
    }
    /// out (planes, H/2, W/2)[y, x] = scale · Σ of the 2×2 block at (2y, 2x) of in (planes, H, W).
    template <class T>
    static void block_sum2x2(T* out, const T* in, std::int64_t planes, std::int64_t H, std::int64_t W, T scale = T(1)) {
        const std::int64_t h = H / 2, w = W / 2;
        cpu_detail::parallel_for(planes * h, [=](std::int64_t r) {
            const T* top = in + r * 2 * W;
            const T* bottom = top + W;
            T* dst = out + r * w;
            for (std::int64_t x = 0; x < w; ++x)
                dst[x] = scale * ((top[2 * x] + top[2 * x + 1]) + (bottom[2 * x] + bottom[2 * x + 1]));
        }, 4 * w);
    }
};

} // namespace vediff
