#pragma once
// Bilinear resizing of (N, C, H, W) tensors to any (Ho, Wo), as F.interpolate(x, size=(Ho, Wo),
// mode="bilinear", align_corners=False): output pixel centres map to input coordinates
// src = (dst + ½)·(in / out) − ½, clamped below at 0; the two neighbours floor(src) and
// min(floor(src) + 1, in − 1) are weighted by the fractional part. (PyTorch uses in / out as the
// scale whenever a size, not a scale factor, is given.)
// Forward only and cpu only: it is the FID Inception's input resize (models/inception.hpp).
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// (N, C, H, W) → (N, C, out_h, out_w).
template <class T, device D>
tensor<T, D> resize_bilinear(const tensor_view<T, D>& x, std::int64_t out_h, std::int64_t out_w) {
    if (x.rank() != 4) throw shape_error(fmt::format("resize_bilinear: input must have rank 4 (N, C, H, W), got {}", x.shape()));
    if (out_h < 1 || out_w < 1 || x.dim(2) < 1 || x.dim(3) < 1)
        throw shape_error(fmt::format("resize_bilinear: cannot resize input {} to {}×{} (sizes must be ≥ 1)", x.shape(), out_h, out_w));
    tensor<T, D> y(tensor_shape{x.dim(0), x.dim(1), out_h, out_w});
    resize_kernels<D>::bilinear(y.data(), x.data(), x.dim(0) * x.dim(1), x.dim(2), x.dim(3), out_h, out_w);
    return y;
}

} // namespace vediff::ops
