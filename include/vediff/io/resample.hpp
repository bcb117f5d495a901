#pragma once
// Resizing of 8-bit images exactly as Pillow 9.4's Image.resize(size, resample) does it, byte for
// byte, for the BOX, BILINEAR, BICUBIC and LANCZOS filters: the field's ImageNet preprocessing
// (ADM's center_crop_arr, data/center_crop.hpp) runs through Pillow, and reference batches made
// with it are only comparable to images made the same way.
//
// What Pillow does (libImaging/Resample.c, Image.py), and so what this file does:
//  - The filter is separable. Per axis, output sample i is centred at (i + 0.5)·scale in input
//    coordinates, scale = in/out. When shrinking, the filter is stretched by scale (antialiasing):
//    support = filter support · max(scale, 1). The input samples used are [first, first + count)
//    with first = trunc(centre − support + 0.5) and end = trunc(centre + support + 0.5), clamped
//    to the image; sample j gets the weight filter((j − centre + 0.5) / max(scale, 1)) (computed
//    as a product with the reciprocal, as Pillow does), and the weights are divided by their sum.
//  - The normalized weights become 22-bit fixed point, k = trunc(w·2²² ± 0.5) (away from zero).
//    A sample is 2²¹ + Σ pixel·k in a 32-bit integer, shifted right by 22 and clamped to [0, 255].
//  - The horizontal pass runs first (only over the input rows the vertical pass will read) and
//    writes 8-bit pixels; the vertical pass reads those. A pass whose size does not change is
//    skipped; when neither changes, the image is copied unchanged.
//  - Images with alpha (2 channels, LA; 4 channels, RGBA) are resized premultiplied, as Pillow
//    9.4 converts LA→La and RGBA→RGBa, resizes, and converts back: c' = c·a/255 rounded by
//    Pillow's MULDIV255 ((t + (t >> 8)) >> 8 with t = c·a + 128), and after resizing
//    c = min(255, ⌊255·c'/a⌋) where 0 < a < 255, unchanged where a is 0 or 255. The alpha channel
//    is resized like the others. (An image of the same size is copied without the round trip.)
// Each channel is otherwise filtered independently, as Pillow filters each band.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/io/image.hpp"

namespace vediff::io {

/// Pillow's resampling filters (PIL.Image.Resampling) that resize reproduces.
enum class resample_filter {
    box,       ///< Image.BOX: each output pixel the (area-weighted) mean of the input pixels it covers
    bilinear,  ///< Image.BILINEAR: the triangle filter, support 1
    bicubic,   ///< Image.BICUBIC: Keys' cubic convolution with a = −0.5, support 2
    lanczos,   ///< Image.LANCZOS: Lanczos-3 windowed sinc, support 3
};

inline const char* resample_filter_name(resample_filter f) {
    switch (f) {
    case resample_filter::box: return "box";
    case resample_filter::bilinear: return "bilinear";
    case resample_filter::bicubic: return "bicubic";
    case resample_filter::lanczos: return "lanczos";
    }
    return "unknown";
}

namespace detail {

/// Fraction bits of the fixed-point weights: 32 bits less 8 for the pixel and 2 for the filters'
/// overshoot (Pillow's PRECISION_BITS).
inline constexpr int resample_precision_bits = 22;

/// v as a double held in memory: a barrier that keeps the compiler from fusing the multiply
/// before it with the add after it (-ffp-contract=fast, GCC's default, does so under
/// -march=native), which would round differently from Pillow's build, which has no FMA.
inline double resample_rounded(double v) {
    volatile double held = v;
    return held;
}

inline double resample_support(resample_filter f) {
    switch (f) {
    case resample_filter::box: return 0.5;
    case resample_filter::bilinear: return 1.0;
    case resample_filter::bicubic: return 2.0;
    case resample_filter::lanczos: return 3.0;
    }
    return 0.0;
}

inline double resample_sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * std::numbers::pi;
    return std::sin(x) / x;
}

/// The filter's value at x (in units of input samples, unstretched), each evaluated in Pillow's
/// order of operations.
inline double resample_kernel(resample_filter f, double x) {
    switch (f) {
    case resample_filter::box: return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
    case resample_filter::bilinear:
        x = std::fabs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
    case resample_filter::bicubic: {
        constexpr double a = -0.5;
        x = std::fabs(x);
        if (x < 1.0) {
            const double inner = resample_rounded(resample_rounded((a + 2.0) * x) - (a + 3.0));
            return resample_rounded(resample_rounded(inner * x) * x) + 1.0;
        }
        if (x < 2.0) {
            const double p = resample_rounded(resample_rounded((x - 5.0) * x) + 8.0);
            return resample_rounded(resample_rounded(p * x) - 4.0) * a;
        }
        return 0.0;
    }
    case resample_filter::lanczos: return -3.0 <= x && x < 3.0 ? resample_sinc(x) * resample_sinc(x / 3.0) : 0.0;
    }
    return 0.0;
}

/// One axis's resampling: output sample i reads input samples [first[i], first[i] + count[i])
/// with the fixed-point weights coeffs[i·taps .. i·taps + count[i]).
struct resample_axis {
    int taps = 0;
    std::vector<int> first;
    std::vector<int> count;
    std::vector<std::int32_t> coeffs;  // (out, taps)
};

/// Pillow's weights (precompute_coeffs and normalize_coeffs_8bpc) for in_size → out_size
/// samples, of the outputs [begin, begin + n) only (entry i of the result is output begin + i).
inline resample_axis resample_weights(int in_size, int out_size, resample_filter f, int begin, int n_out) {
    // Every product that an addition follows passes through resample_rounded (see there).
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = std::max(scale, 1.0);
    const double support = resample_rounded(resample_support(f) * filterscale);
    const double inverse = 1.0 / filterscale;
    resample_axis axis;
    axis.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
    axis.first.resize(static_cast<std::size_t>(n_out));
    axis.count.resize(static_cast<std::size_t>(n_out));
    axis.coeffs.assign(static_cast<std::size_t>(n_out) * static_cast<std::size_t>(axis.taps), 0);
    std::vector<double> w(static_cast<std::size_t>(axis.taps));
    const double one = static_cast<double>(1 << resample_precision_bits);
    for (int i = 0; i < n_out; ++i) {
        const double center = resample_rounded((begin + i + 0.5) * scale);
        const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
        const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
        const int n = hi - lo;
        double sum = 0.0;
        for (int j = 0; j < n; ++j) {
            w[static_cast<std::size_t>(j)] = resample_rounded(resample_kernel(f, (static_cast<double>(j + lo) - center + 0.5) * inverse));
            sum += w[static_cast<std::size_t>(j)];
        }
        std::int32_t* k = axis.coeffs.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(axis.taps);
        for (int j = 0; j < n; ++j) {
            double v = w[static_cast<std::size_t>(j)];
            if (sum != 0.0) v /= sum;
            k[j] = static_cast<std::int32_t>(v < 0 ? -0.5 + v * one : 0.5 + v * one);
        }
        axis.first[static_cast<std::size_t>(i)] = lo;
        axis.count[static_cast<std::size_t>(i)] = std::max(n, 0);
    }
    return axis;
}

/// The byte of an accumulated fixed-point sum (Pillow's clip8).
inline std::uint8_t resample_clip(std::int32_t acc) {
    return static_cast<std::uint8_t>(std::clamp(acc >> resample_precision_bits, 0, 255));
}

/// Horizontal pass over the input rows [row0, row0 + rows): out is (rows, axis out, C).
/// Rows go in blocks of resample_block: the block is first transposed so that each input column
/// holds its block's pixels contiguously, and an output column is then the weighted sum of a
/// few such columns, a loop over resample_block·C lanes that vectorizes (the same integer sums,
/// in the same order, as Pillow's pixel-by-pixel loop). scratch holds the transposed block.
inline constexpr int resample_block = 16;

template <int C>
void resample_rows(const std::uint8_t* in, int in_width, int row0, int rows, const resample_axis& axis, std::uint8_t* out,
                   std::vector<std::uint8_t>& scratch) {
    constexpr int B = resample_block;
    constexpr int lanes = B * C;
    constexpr std::int32_t half = 1 << (resample_precision_bits - 1);
    const int out_width = static_cast<int>(axis.first.size());
    const std::size_t in_row = static_cast<std::size_t>(in_width) * C, out_row = static_cast<std::size_t>(out_width) * C;
    // Lanes of rows past a last, partial block hold an earlier block's pixels: summed, never stored.
    if (scratch.size() < static_cast<std::size_t>(in_width) * lanes) scratch.assign(static_cast<std::size_t>(in_width) * lanes, 0);
    std::uint8_t* columns = scratch.data();  // (in_width, B, C)
    // The input columns some output reads (all but a crop's margins).
    const int x_begin = axis.first.front(), x_end = axis.first.back() + axis.count.back();
    for (int y0 = 0; y0 < rows; y0 += B) {
        const int b = std::min(B, rows - y0);
        for (int r = 0; r < b; ++r) {
            const std::uint8_t* row = in + static_cast<std::size_t>(row0 + y0 + r) * in_row;
            for (int x = x_begin; x < x_end; ++x)
                for (int c = 0; c < C; ++c) columns[static_cast<std::size_t>(x) * lanes + r * C + c] = row[x * C + c];
        }
        for (int x = 0; x < out_width; ++x) {
            const std::int32_t* k = axis.coeffs.data() + static_cast<std::size_t>(x) * static_cast<std::size_t>(axis.taps);
            const std::uint8_t* col = columns + static_cast<std::size_t>(axis.first[static_cast<std::size_t>(x)]) * lanes;
            const int n = axis.count[static_cast<std::size_t>(x)];
            std::int32_t acc[lanes];
            for (int i = 0; i < lanes; ++i) acc[i] = half;
            for (int j = 0; j < n; ++j) {
                const std::int32_t kj = k[j];
                for (int i = 0; i < lanes; ++i) acc[i] += static_cast<std::int32_t>(col[j * lanes + i]) * kj;
            }
            for (int r = 0; r < b; ++r)
                for (int c = 0; c < C; ++c) out[static_cast<std::size_t>(y0 + r) * out_row + static_cast<std::size_t>(x) * C + c] = resample_clip(acc[r * C + c]);
        }
    }
}

/// One output row of the vertical pass: Σ_j rows[j]·k[j] over n rows of row_bytes bytes, `stride`
/// bytes apart, whole rows at once (the same sums in the same order as Pillow's per-pixel loop);
/// acc is scratch of row_bytes.
inline void resample_column_row(const std::uint8_t* rows, std::size_t stride, std::size_t row_bytes, const std::int32_t* k, int n,
                                std::uint8_t* dst, std::int32_t* acc) {
    constexpr std::int32_t half = 1 << (resample_precision_bits - 1);
    std::fill(acc, acc + row_bytes, half);
    for (int j = 0; j < n; ++j) {
        const std::uint8_t* row = rows + static_cast<std::size_t>(j) * stride;
        const std::int32_t kj = k[j];
        for (std::size_t i = 0; i < row_bytes; ++i) acc[i] += static_cast<std::int32_t>(row[i]) * kj;
    }
    for (std::size_t i = 0; i < row_bytes; ++i) dst[i] = resample_clip(acc[i]);
}

inline void resample_rows_any(int channels, const std::uint8_t* in, int in_width, int row0, int rows, const resample_axis& axis,
                              std::uint8_t* out, std::vector<std::uint8_t>& scratch) {
    switch (channels) {
    case 1: resample_rows<1>(in, in_width, row0, rows, axis, out, scratch); break;
    case 2: resample_rows<2>(in, in_width, row0, rows, axis, out, scratch); break;
    case 3: resample_rows<3>(in, in_width, row0, rows, axis, out, scratch); break;
    default: resample_rows<4>(in, in_width, row0, rows, axis, out, scratch); break;
    }
}

/// Pillow's RGBA→RGBa (and LA→La): every colour channel times alpha / 255, MULDIV255-rounded.
inline void premultiply_alpha(image& img) {
    const int c = img.channels;
    for (std::size_t i = 0; i < img.pixels.size(); i += static_cast<std::size_t>(c)) {
        const std::uint32_t alpha = img.pixels[i + static_cast<std::size_t>(c - 1)];
        for (int k = 0; k < c - 1; ++k) {
            const std::uint32_t t = img.pixels[i + static_cast<std::size_t>(k)] * alpha + 128;
            img.pixels[i + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(((t >> 8) + t) >> 8);
        }
    }
}

/// Pillow's RGBa→RGBA (and La→LA): colour · 255 / alpha, truncated and clamped, where 0 < alpha < 255.
inline void unpremultiply_alpha(image& img) {
    const int c = img.channels;
    for (std::size_t i = 0; i < img.pixels.size(); i += static_cast<std::size_t>(c)) {
        const std::uint32_t alpha = img.pixels[i + static_cast<std::size_t>(c - 1)];
        if (alpha == 0 || alpha == 255) continue;
        for (int k = 0; k < c - 1; ++k) {
            const std::uint32_t v = 255u * img.pixels[i + static_cast<std::size_t>(k)] / alpha;
            img.pixels[i + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(std::min<std::uint32_t>(v, 255));
        }
    }
}

/// Rows [top, top + out_h) and columns [left, left + out_w) of the two passes to height × width
/// on the pixels as they are (no alpha handling); height × width differs from the image's size.
/// Every output pixel depends on its own weights only, so the window is the same bytes as the
/// whole resize would hold there.
inline image resample_passes(const image& src, int height, int width, resample_filter f, int top, int left, int out_h, int out_w) {
    const int in_h = static_cast<int>(src.height), in_w = static_cast<int>(src.width), c = src.channels;
    const bool horizontal = width != in_w, vertical = height != in_h;
    const std::size_t in_row = static_cast<std::size_t>(in_w) * static_cast<std::size_t>(c);
    const std::size_t out_row = static_cast<std::size_t>(out_w) * static_cast<std::size_t>(c);
    image out(out_h, out_w, c);
    std::vector<std::uint8_t> scratch;
    if (!vertical) {  // Pillow skips the vertical pass: the rows are the input's
        resample_rows_any(c, src.pixels.data(), in_w, top, out_h, resample_weights(in_w, width, f, left, out_w), out.pixels.data(), scratch);
        return out;
    }
    const resample_axis rows_axis = resample_weights(in_h, height, f, top, out_h);
    std::vector<std::int32_t> acc(out_row);
    const auto taps = [&](int y) { return rows_axis.coeffs.data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(rows_axis.taps); };
    const auto first = [&](int y) { return rows_axis.first[static_cast<std::size_t>(y)]; };
    const auto count = [&](int y) { return rows_axis.count[static_cast<std::size_t>(y)]; };
    if (!horizontal) {  // Pillow skips the horizontal pass: the columns are the input's
        const std::uint8_t* in = src.pixels.data() + static_cast<std::size_t>(left) * static_cast<std::size_t>(c);
        for (int y = 0; y < out_h; ++y)
            resample_column_row(in + static_cast<std::size_t>(first(y)) * in_row, in_row, out_row, taps(y), count(y),
                                out.pixels.data() + static_cast<std::size_t>(y) * out_row, acc.data());
        return out;
    }
    // Both passes: the horizontal pass's rows are made as the vertical pass reaches them (its
    // windows [first, first + count) only move down) and kept in a window of rows [lo, hi), so
    // the intermediate image, which Pillow holds whole, is never more than a few rows. Like
    // Pillow's, the horizontal pass covers exactly the rows that some output row reads.
    const resample_axis cols_axis = resample_weights(in_w, width, f, left, out_w);
    const int max_count = *std::max_element(rows_axis.count.begin(), rows_axis.count.end());
    const int capacity = max_count + resample_block;
    const int row_end = first(out_h - 1) + count(out_h - 1);
    std::vector<std::uint8_t> window(static_cast<std::size_t>(capacity) * out_row);
    int lo = first(0), hi = lo;
    for (int y = 0; y < out_h; ++y) {
        while (hi < first(y) + count(y)) {
            if (lo < first(y)) {  // rows above first(y) are read by no later output row
                const int keep = std::max(hi - first(y), 0);
                std::memmove(window.data(), window.data() + static_cast<std::size_t>(hi - keep - lo) * out_row,
                             static_cast<std::size_t>(keep) * out_row);
                lo = hi - keep;
            }
            const int rows = std::min(row_end - hi, capacity - (hi - lo));  // as many as fit: whole blocks
            resample_rows_any(c, src.pixels.data(), in_w, hi, rows, cols_axis, window.data() + static_cast<std::size_t>(hi - lo) * out_row,
                              scratch);
            hi += rows;
        }
        resample_column_row(window.data() + static_cast<std::size_t>(first(y) - lo) * out_row, out_row, out_row, taps(y), count(y),
                            out.pixels.data() + static_cast<std::size_t>(y) * out_row, acc.data());
    }
    return out;
}

/// The window of the input itself, as Pillow copies an image resized to its own size.
inline image crop_pixels(const image& src, int top, int left, int out_h, int out_w) {
    image out(out_h, out_w, src.channels);
    const std::size_t c = static_cast<std::size_t>(src.channels), out_row = static_cast<std::size_t>(out_w) * c;
    for (int y = 0; y < out_h; ++y)
        std::memcpy(out.pixels.data() + static_cast<std::size_t>(y) * out_row,
                    src.pixels.data() + (static_cast<std::size_t>(top + y) * static_cast<std::size_t>(src.width) + static_cast<std::size_t>(left)) * c,
                    out_row);
    return out;
}

inline void check_resize(const char* op, const image& src, std::int64_t height, std::int64_t width, resample_filter filter) {
    constexpr std::int64_t max_side = INT_MAX / 4;
    if (src.channels < 1 || src.channels > 4)
        throw std::invalid_argument(fmt::format("{}: an image with {} channels; 1 to 4 are supported", op, src.channels));
    if (src.height < 1 || src.width < 1 || src.height > max_side || src.width > max_side)
        throw std::invalid_argument(fmt::format("{}: the input image is {}×{} pixels; each side must be 1 to {}", op, src.height,
                                                src.width, max_side));
    if (src.pixels.size() != static_cast<std::size_t>(src.height * src.width * src.channels))
        throw std::invalid_argument(fmt::format("{}: the input holds {} bytes of pixels, {}×{}×{} needs {}", op, src.pixels.size(),
                                                src.height, src.width, src.channels, src.height * src.width * src.channels));
    if (height < 1 || width < 1 || height > max_side || width > max_side)
        throw std::invalid_argument(fmt::format("{}: the target size {}×{} is not 1 to {} pixels per side", op, height, width, max_side));
    if (filter != resample_filter::box && filter != resample_filter::bilinear && filter != resample_filter::bicubic &&
        filter != resample_filter::lanczos)
        throw std::invalid_argument(fmt::format("{}: unknown resample_filter {}", op, static_cast<int>(filter)));
}

} // namespace detail

/// src resized to height × width pixels, byte for byte as Pillow 9.4's
/// Image.resize((width, height), resample=filter) resizes the same pixels (mode L, LA, RGB or RGBA
/// for 1 to 4 channels; see the header comment for what that involves, alpha included).
/// Throws std::invalid_argument for an empty or inconsistent image, channels outside 1..4, or a
/// target size below 1 or above INT_MAX / 4 per side (Pillow's sizes are C ints).
inline image resize(const image& src, std::int64_t height, std::int64_t width, resample_filter filter) {
    detail::check_resize("resize", src, height, width, filter);
    if (height == src.height && width == src.width) return src;
    const int h = static_cast<int>(height), w = static_cast<int>(width);
    if (src.channels == 2 || src.channels == 4) {
        image premultiplied = src;
        detail::premultiply_alpha(premultiplied);
        image out = detail::resample_passes(premultiplied, h, w, filter, 0, 0, h, w);
        detail::unpremultiply_alpha(out);
        return out;
    }
    return detail::resample_passes(src, h, w, filter, 0, 0, h, w);
}

/// Rows [top, top + crop_height) and columns [left, left + crop_width) of
/// resize(src, height, width, filter), the same bytes, computed without the rest of the image
/// (a resize followed by a crop, as center crops do, in less time and memory). Throws
/// std::invalid_argument as resize does, and for a window not inside height × width.
inline image resize_and_crop(const image& src, std::int64_t height, std::int64_t width, resample_filter filter, std::int64_t top,
                             std::int64_t left, std::int64_t crop_height, std::int64_t crop_width) {
    detail::check_resize("resize_and_crop", src, height, width, filter);
    if (crop_height < 1 || crop_width < 1 || top < 0 || left < 0 || top + crop_height > height || left + crop_width > width)
        throw std::invalid_argument(fmt::format("resize_and_crop: the window of {}×{} pixels at row {}, column {} is not inside the "
                                                "resized {}×{}", crop_height, crop_width, top, left, height, width));
    const int h = static_cast<int>(height), w = static_cast<int>(width), y0 = static_cast<int>(top), x0 = static_cast<int>(left);
    const int ch = static_cast<int>(crop_height), cw = static_cast<int>(crop_width);
    if (height == src.height && width == src.width) return detail::crop_pixels(src, y0, x0, ch, cw);
    if (src.channels == 2 || src.channels == 4) {
        image premultiplied = src;
        detail::premultiply_alpha(premultiplied);
        image out = detail::resample_passes(premultiplied, h, w, filter, y0, x0, ch, cw);
        detail::unpremultiply_alpha(out);
        return out;
    }
    return detail::resample_passes(src, h, w, filter, y0, x0, ch, cw);
}

} // namespace vediff::io
