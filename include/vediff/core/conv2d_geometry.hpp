#pragma once
// The sizes of one 2-D convolution, computed once by ops::conv2d and handed to a backend.
#include <cstdint>

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

} // namespace vediff
