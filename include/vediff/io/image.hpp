#pragma once
// 8-bit images from and to files, and their conversion to tensors. Decoding (PNG and JPEG only)
// is io/image_decoding.hpp's, libpng and libjpeg-turbo, since image files are users' untrusted
// input; io::image itself is defined there. PNG encoding, of images vediff makes itself, is
// stb_image_write's. vediff links Debian's libstb (pkg-config `stb`) instead of compiling stb's
// implementation into a header: any number of translation units may include this file, next to a
// program's own use of stb, without duplicate or diverging definitions.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <stb_image_write.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/io/image_decoding.hpp"

namespace vediff::io {

/// The interval of pixel values a tensor holds: byte 0 maps to lo, byte 255 to hi.
struct value_range {
    double lo = -1.0;
    double hi = 1.0;
    double width() const { return hi - lo; }
};
/// [−1, 1], the range the tokenizer trains in.
inline constexpr value_range symmetric_range{-1.0, 1.0};
/// [0, 1].
inline constexpr value_range unit_range{0.0, 1.0};

namespace detail {

inline void check_image(const char* op, const image& img) {
    if (img.channels < 1 || img.channels > 4 || img.height < 1 || img.width < 1 || img.height > INT_MAX / 4 || img.width > INT_MAX / 4)
        throw std::invalid_argument(fmt::format("{}: an image of {}×{} pixels with {} channels cannot be encoded", op, img.height,
                                                img.width, img.channels));
    if (img.pixels.size() != static_cast<std::size_t>(img.height * img.width * img.channels))
        throw std::invalid_argument(fmt::format("{}: {} bytes of pixels for {}×{}×{}", op, img.pixels.size(), img.height, img.width,
                                                img.channels));
}

inline void check_range(const char* op, value_range r) {
    if (!(r.hi > r.lo) || !std::isfinite(r.lo) || !std::isfinite(r.hi))
        throw std::invalid_argument(fmt::format("{}: value range [{}, {}] is empty or not finite", op, r.lo, r.hi));
}

/// The byte of a value: (v − lo)/(hi − lo)·255, rounded, clamped to [0, 255]; NaN gives 0.
inline std::uint8_t to_byte(double v, value_range r) {
    const double u = (v - r.lo) / r.width() * 255.0;
    if (!(u > 0.0)) return 0;
    if (u >= 255.0) return 255;
    return static_cast<std::uint8_t>(std::lround(u));
}

} // namespace detail

/// Decodes a PNG or JPEG file (decode_image of io/image_decoding.hpp). channels 0 keeps the file's
/// channels; 1 to 4 converts (luminance (77·R + 150·G + 29·B) >> 8 for grey, grey repeated for RGB,
/// alpha dropped or set opaque). 16-bit files are reduced to 8 bits, rounded. Every problem is an
/// io_error naming the file and the cause.
inline image read_image(const std::filesystem::path& path, int channels = 0) {
    if (channels < 0 || channels > 4) throw std::invalid_argument(fmt::format("read_image: channels {} is not 0 (as stored) or 1 to 4", channels));
    const auto fail = [&](std::string_view cause) -> void { throw io_error(fmt::format("read_image: {}: {}", path.string(), cause)); };
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("cannot open: it is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(fmt::format("cannot open: {}", std::strerror(errno)));
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail(fmt::format("read error: {}", std::strerror(errno)));
    if (bytes.empty()) fail("the file is empty");
    try {
        return decode_image(bytes, channels);
    } catch (const io_error& e) {
        fail(e.what());
    }
    return {};  // not reached: fail throws
}

/// The bytes of a PNG file of the image (zlib level 8, stb's adaptive row filters).
inline std::vector<std::uint8_t> encode_png(const image& img) {
    detail::check_image("encode_png", img);
    std::vector<std::uint8_t> out;
    const auto sink = [](void* context, void* data, int size) {
        auto* v = static_cast<std::vector<std::uint8_t>*>(context);
        v->insert(v->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
    };
    if (!stbi_write_png_to_func(sink, &out, static_cast<int>(img.width), static_cast<int>(img.height), img.channels, img.pixels.data(),
                                static_cast<int>(img.width) * img.channels))
        throw std::runtime_error(fmt::format("encode_png: stb_image_write failed on a {}×{}×{} image", img.height, img.width, img.channels));
    return out;
}

/// Writes the image as PNG, atomically (a reader never sees a partial file).
inline void write_png(const std::filesystem::path& path, const image& img) {
    const auto bytes = encode_png(img);
    write_file_atomically(path, [&](atomic_file& f) { f.write(bytes.data(), bytes.size()); });
}

/// Writes the image's values planar (C, H, W) into out, byte b ↦ lo + (hi − lo)·b/255 (so 255 ↦
/// hi exactly); out holds exactly C·H·W values.
template <class T>
void image_to_planar(const image& img, std::span<T> out, value_range range = symmetric_range) {
    detail::check_image("image_to_planar", img);
    detail::check_range("image_to_planar", range);
    const std::int64_t hw = img.height * img.width;
    if (out.size() != static_cast<std::size_t>(hw * img.channels))
        throw std::invalid_argument(fmt::format("image_to_planar: {} values for a {}×{}×{} image", out.size(), img.height, img.width, img.channels));
    for (int c = 0; c < img.channels; ++c)
        for (std::int64_t i = 0; i < hw; ++i)
            out[static_cast<std::size_t>(c * hw + i)] =
                static_cast<T>(range.lo + range.width() * (img.pixels[static_cast<std::size_t>(i * img.channels + c)] / 255.0));
}

/// The image as a tensor (C, H, W) with byte b ↦ lo + (hi − lo)·b/255 (so 255 ↦ hi exactly).
template <class T = float, device D = cpu>
tensor<T, D> image_to_tensor(const image& img, value_range range = symmetric_range) {
    detail::check_image("image_to_tensor", img);
    std::vector<T> host(static_cast<std::size_t>(img.height * img.width * img.channels));
    image_to_planar(img, std::span<T>(host), range);
    return tensor<T, D>::from_host({img.channels, img.height, img.width}, std::span<const T>(host));
}

/// A tensor (C, H, W), C = 1 or 3, as an 8-bit image: values clamped to the range, rounded.
template <class T, device D>
image tensor_to_image(const tensor_view<T, D>& chw, value_range range = symmetric_range) {
    require_rank("tensor_to_image", chw, 3);
    if (chw.dim(0) != 1 && chw.dim(0) != 3)
        throw shape_error(fmt::format("tensor_to_image: {} channels in shape {}; images have 1 or 3", chw.dim(0), chw.shape()));
    detail::check_range("tensor_to_image", range);
    const auto values = chw.to_vector();
    image img(chw.dim(1), chw.dim(2), static_cast<int>(chw.dim(0)));
    const std::int64_t hw = img.height * img.width;
    for (int c = 0; c < img.channels; ++c)
        for (std::int64_t i = 0; i < hw; ++i)
            img.pixels[static_cast<std::size_t>(i * img.channels + c)] =
                detail::to_byte(static_cast<double>(values[static_cast<std::size_t>(c * hw + i)]), range);
    return img;
}

} // namespace vediff::io
