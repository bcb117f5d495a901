#pragma once
// cpu kernel for bilinear resizing of (planes, H, W) with align_corners=False (ops/resize.hpp
// states the index rule). The source rows and columns and their weights are computed once per
// call, in double, then each output row blends two input rows.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct resize_kernels<cpu> {
    template <class T>
    static void bilinear(T* out, const T* in, std::int64_t planes, std::int64_t H, std::int64_t W, std::int64_t out_h,
                         std::int64_t out_w) {
        const auto rows = taps<T>(H, out_h), cols = taps<T>(W, out_w);
        cpu_detail::parallel_for(planes * out_h, [&, out, in](std::int64_t r) {
            const std::int64_t p = r / out_h, oy = r % out_h;
            const tap<T>& ty = rows[oy];
            const T* top = in + (p * H + ty.first) * W;
            const T* bottom = in + (p * H + ty.second) * W;
            T* dst = out + r * out_w;
            for (std::int64_t ox = 0; ox < out_w; ++ox) {
                const tap<T>& tx = cols[ox];
                const T upper = (T(1) - tx.weight) * top[tx.first] + tx.weight * top[tx.second];
                const T lower = (T(1) - tx.weight) * bottom[tx.first] + tx.weight * bottom[tx.second];
                dst[ox] = (T(1) - ty.weight) * upper + ty.weight * lower;
            }
        }, 8 * out_w);
    }

private:
    template <class T>
    struct tap {
        std::int64_t first = 0, second = 0;  // the two neighbouring input indices
        T weight = 0;                        // of the second one
    };
    template <class T>
    static std::vector<tap<T>> taps(std::int64_t in, std::int64_t out) {
        const double scale = double(in) / double(out);
        std::vector<tap<T>> t(static_cast<std::size_t>(out));
        for (std::int64_t o = 0; o < out; ++o) {
            const double src = std::max((double(o) + 0.5) * scale - 0.5, 0.0);
            const auto i0 = std::min(static_cast<std::int64_t>(src), in - 1);
            t[o] = {i0, std::min(i0 + 1, in - 1), static_cast<T>(src - double(i0))};
        }
        return t;
    }
};

} // namespace vediff
