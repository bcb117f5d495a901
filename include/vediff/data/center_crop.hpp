#pragma once
// ADM's center crop (openai/guided-diffusion, guided_diffusion/image_datasets.py:
// center_crop_arr), reproduced byte for byte. It is the field's ImageNet preprocessing: ADM's
// training data went through it, DiT, SiT and LightningDiT copy the function for theirs, and
// their FIDs are measured against ADM's reference batches (VIRTUAL_imagenet256_labeled.npz), so
// ImageNet images prepared for a comparable FID or training run must be cropped the same way,
// down to the byte; another resampler (data/image_folder.hpp's stb one) gives other pixels.
// In Python, on a PIL image and a side `image_size`:
//
//     while min(*pil_image.size) >= 2 * image_size:
//         pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
//     scale = image_size / min(*pil_image.size)
//     pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
//     arr = np.array(pil_image)
//     crop_y = (arr.shape[0] - image_size) // 2
//     crop_x = (arr.shape[1] - image_size) // 2
//     return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]
//
// i.e. halve both sides (floor) with a box filter while the short side is at least twice the
// target, then one bicubic resize that brings the short side to the target (the long side to
// round(side·scale), Python's round: half to even), then the centred square. Both resizes are
// io/resample.hpp's, which is Pillow's (9.4) arithmetic exactly; an image smaller than the target
// is enlarged by the bicubic step, as in the Python.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/io/image.hpp"
#include "vediff/io/resample.hpp"

namespace vediff::data {

namespace detail {

/// Python 3's round(v) of a finite double: the nearest integer, ties to even (independent of the
/// floating-point rounding mode).
inline double round_half_even(double v) {
    const double lower = std::floor(v);
    const double diff = v - lower;  // exact
    if (diff < 0.5) return lower;
    if (diff > 0.5) return lower + 1.0;
    return std::fmod(lower, 2.0) == 0.0 ? lower : lower + 1.0;
}

} // namespace detail

/// The size × size center crop of img as ADM's center_crop_arr makes it from the same pixels
/// (see the header comment). Throws std::invalid_argument for size < 1 or an empty image.
inline io::image adm_center_crop(const io::image& img, std::int64_t size) {
    if (size < 1) throw std::invalid_argument(fmt::format("adm_center_crop: the crop size is {}; it must be at least 1", size));
    if (img.height < 1 || img.width < 1 || img.pixels.empty())
        throw std::invalid_argument(fmt::format("adm_center_crop: the image is empty ({}×{} pixels, {} bytes)", img.height, img.width,
                                                img.pixels.size()));
    io::image halved;
    const io::image* cur = &img;
    while (std::min(cur->height, cur->width) >= 2 * size) {
        halved = io::resize(*cur, cur->height / 2, cur->width / 2, io::resample_filter::box);
        cur = &halved;
    }
    // Python: image_size / min(...) is a double division, x * scale a double product.
    const double scale = static_cast<double>(size) / static_cast<double>(std::min(cur->height, cur->width));
    const auto h = static_cast<std::int64_t>(detail::round_half_even(static_cast<double>(cur->height) * scale));
    const auto w = static_cast<std::int64_t>(detail::round_half_even(static_cast<double>(cur->width) * scale));
    // The crop of the resized image, computed without the columns and rows it drops (the same
    // bytes as resizing whole and slicing, as the Python does).
    return io::resize_and_crop(*cur, h, w, io::resample_filter::bicubic, (h - size) / 2, (w - size) / 2, size, size);
}

} // namespace vediff::data
