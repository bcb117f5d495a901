#pragma once
// 8-bit images from and to files, and their conversion to tensors. Decoding is stb_image's (PNG,
// JPEG, and the BMP, TGA, GIF (first frame), PSD and PNM it also reads); PNG encoding is
// stb_image_write's. vediff links Debian's libstb (pkg-config `stb`) instead of compiling stb's
// implementation into a header: any number of translation units may include this file, next to
// a program's own use of stb, without duplicate or diverging definitions.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <stb_image.h>
#include <stb_image_write.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/atomic_file.hpp"

namespace vediff::io {

/// Interleaved 8-bit pixels, rows top to bottom: channel c of pixel (y, x) is
/// pixels[(y·width + x)·channels + c]. Channels: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
struct image {
    std::int64_t height = 0;
    std::int64_t width = 0;
    int channels = 0;
    std::vector<std::uint8_t> pixels;  // (height, width, channels)

    image() = default;
    image(std::int64_t h, std::int64_t w, int c, std::uint8_t fill = 0)
        : height(h), width(w), channels(c), pixels(static_cast<std::size_t>(h * w * c), fill) {}

    std::uint8_t& at(std::int64_t y, std::int64_t x, int c) { return pixels[static_cast<std::size_t>((y * width + x) * channels + c)]; }
    std::uint8_t at(std::int64_t y, std::int64_t x, int c) const {
        return pixels[static_cast<std::size_t>((y * width + x) * channels + c)];
    }
};

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

inline std::string_view image_format_name(const std::vector<unsigned char>& b) {
    if (b.size() >= 8 && std::memcmp(b.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return "PNG";
    if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return "JPEG";
    return "image";
}

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

/// Decodes an image file. channels 0 keeps the file's channels; 1 to 4 converts (stb_image's
/// conversions: luminance (77·R + 150·G + 29·B)/256 for grey, alpha dropped or set opaque).
/// 16-bit files are reduced to 8 bits. Every problem is an io_error naming the file and the cause.
inline image read_image(const std::filesystem::path& path, int channels = 0) {
    if (channels < 0 || channels > 4) throw std::invalid_argument(fmt::format("read_image: channels {} is not 0 (as stored) or 1 to 4", channels));
    const auto fail = [&](const std::string& cause) -> void { throw io_error(fmt::format("read_image: {}: {}", path.string(), cause)); };
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) fail("cannot open: it is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(fmt::format("cannot open: {}", std::strerror(errno)));
    std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) fail(fmt::format("read error: {}", std::strerror(errno)));
    if (bytes.empty()) fail("the file is empty");
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) fail(fmt::format("the file is {} bytes, more than stb_image reads", bytes.size()));

    int w = 0, h = 0, stored = 0;
    std::unique_ptr<stbi_uc, void (*)(void*)> data(
        stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &stored, channels), stbi_image_free);
    if (!data) {
        // stb's reasons are terse ("outofdata", "expected marker"); an empty one comes from a
        // chunk type of zeros, i.e. data that ends early.
        const char* reason = stbi_failure_reason();
        fail(fmt::format("cannot decode this {} file of {} bytes (stb_image: {}); it is corrupt, truncated or of an unsupported kind",
                         detail::image_format_name(bytes), bytes.size(), reason && *reason ? reason : "unexpected end of data"));
    }
    image img;
    img.height = h;
    img.width = w;
    img.channels = channels ? channels : stored;
    img.pixels.assign(data.get(), data.get() + static_cast<std::size_t>(img.height * img.width * img.channels));
    return img;
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

/// The image as a tensor (C, H, W) with byte b ↦ lo + (hi − lo)·b/255 (so 255 ↦ hi exactly).
template <class T = float, device D = cpu>
tensor<T, D> image_to_tensor(const image& img, value_range range = symmetric_range) {
    detail::check_image("image_to_tensor", img);
    detail::check_range("image_to_tensor", range);
    const std::int64_t hw = img.height * img.width;
    std::vector<T> host(static_cast<std::size_t>(hw * img.channels));
    for (int c = 0; c < img.channels; ++c)
        for (std::int64_t i = 0; i < hw; ++i)
            host[static_cast<std::size_t>(c * hw + i)] =
                static_cast<T>(range.lo + range.width() * (img.pixels[static_cast<std::size_t>(i * img.channels + c)] / 255.0));
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
