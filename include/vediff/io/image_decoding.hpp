#pragma once
// Decoding of PNG and JPEG files from memory: libpng (the classic read API) and libjpeg-turbo (the
// classic libjpeg API), Debian's libpng-dev and libjpeg62-turbo-dev. Image files come from users,
// so they are untrusted input, and stb_image says of itself that it is not written for that; these
// two are their formats' reference decoders, used by the browsers, fuzzed continuously (OSS-Fuzz)
// and patched by Debian's security updates. PIL decodes JPEG with the same libjpeg-turbo and the
// same settings (the accurate integer IDCT, JDCT_ISLOW, and fancy upsampling), so JPEG pixels
// equal PIL's (tests/fixtures/make_decoded_images.py checks this, and PNG's, 8-bit, too).
//
// Stricter than PIL: every libjpeg warning fails the decode ("Premature end of JPEG file" of a
// truncated file, "Corrupt JPEG data: N extraneous bytes before marker"), where PIL ignores them;
// a CRC error in any PNG chunk, critical or ancillary, and PNG data that ends early are errors.
// libpng's benign warnings ("iCCP: known incorrect sRGB profile", an invalid ancillary chunk) are
// ignored. Refused outright: an image of zero pixels, and one of more than 2^28 pixels, a
// decompression bomb (a small file that declares a huge image would otherwise take gigabytes);
// above 2^20 pixels, one that declares more data than its file's bytes can code (JPEG: 1024
// pixels per byte, twice the bound of one Huffman bit per 8×8 block; PNG: 1100 bytes of rows per
// byte, deflate's ratio ~1032:1), a truncated file or a bomb, refused before allocating;
// a progressive JPEG of more than 500 scans (a small file that would take minutes to decode).
//
// Channels as stored (channels 0):
//   JPEG: greyscale 1; YCbCr and RGB 3; CMYK and YCCK 3 as well, converted to RGB: libjpeg gives
//         CMYK (YCCK converted by libjpeg); files with an Adobe APP14 marker (Photoshop, cjpeg,
//         PIL) store inverted ink, C' = 255 − C, and others are inverted here to the same; then
//         R = round(C'·K'/255), G = round(M'·K'/255), B = round(Y'·K'/255), PIL's CMYK → RGB (PIL
//         however assumes Adobe's inversion for every CMYK JPEG, marker or not). EXIF orientation
//         and ICC profiles are ignored, as PIL's Image.open ignores them.
//   PNG:  grey 1, grey + alpha 2, RGB 3, RGBA 4; a palette becomes RGB, or RGBA with a tRNS chunk;
//         the tRNS of grey or RGB becomes an alpha channel; grey of 1, 2 or 4 bits is scaled to 8
//         (1 → 255); 16 bits become 8 as round(v·255/65535) (png_set_scale_16; stb_image and PIL's
//         16-bit RGB keep the high byte, v >> 8, up to 1 lower, and PIL's 16-bit grey, mode I,
//         clamps to 255 in convert("L")); Adam7 interlacing is undone; gamma (gAMA, sRGB, iCCP) is
//         ignored, as PIL ignores it.
// Channels asked for (1 to 4), the same for both formats (convert_channels): grey → RGB repeats
// the grey; RGB → grey is the luminance (77·R + 150·G + 29·B) >> 8 (stb_image's, which vediff used
// before); an alpha channel is dropped, or added as 255; 2 is grey + alpha.
//
// setjmp/longjmp is how both C libraries report errors. No C++ exception crosses their frames:
// each setjmp is in a small function whose locals are plain C data (the detail:: *_step
// functions), which returns false with the library's message saved, and the caller, with its C++
// objects, turns that message into an io_error.
#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <jpeglib.h>
#include <png.h>

#include "vediff/core/error.hpp"

namespace vediff::io {

/// Interleaved 8-bit pixels, rows top to bottom: channel c of pixel (y, x) is
/// pixels[(y·width + x)·channels + c]. Channels: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
/// (The decoders' result, so defined here; io/image.hpp, which includes this, writes and converts it.)
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

/// The most pixels a decoder accepts (16384 × 16384): larger is taken for a decompression bomb.
inline constexpr std::int64_t max_decoded_pixels = std::int64_t{1} << 28;

/// The image with the channels asked for (0: unchanged); the conversions of the header comment.
inline image convert_channels(image img, int channels) {
    if (channels < 0 || channels > 4)
        throw std::invalid_argument(fmt::format("convert_channels: channels {} is not 0 (as stored) or 1 to 4", channels));
    if (img.channels < 1 || img.channels > 4)
        throw std::invalid_argument(fmt::format("convert_channels: the image has {} channels, not 1 to 4", img.channels));
    if (channels == 0 || channels == img.channels) return img;
    image out(img.height, img.width, channels);
    const int from = img.channels;
    const std::size_t n = static_cast<std::size_t>(img.height * img.width);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* s = &img.pixels[i * static_cast<std::size_t>(from)];
        std::uint8_t* d = &out.pixels[i * static_cast<std::size_t>(channels)];
        const bool colour = from >= 3;
        const std::uint8_t alpha = from == 2 ? s[1] : from == 4 ? s[3] : 255;
        if (channels <= 2) {
            d[0] = colour ? static_cast<std::uint8_t>((77 * s[0] + 150 * s[1] + 29 * s[2]) >> 8) : s[0];
        } else {
            d[0] = s[0];
            d[1] = colour ? s[1] : s[0];
            d[2] = colour ? s[2] : s[0];
        }
        if (channels == 2 || channels == 4) d[channels - 1] = alpha;
    }
    return out;
}

namespace detail {

[[noreturn]] inline void decode_failure(std::string_view format, std::size_t bytes, std::string_view cause) {
    throw io_error(fmt::format("cannot decode this {} file of {} bytes ({})", format, bytes, cause));
}

/// Images of up to this many pixels (3 MiB of RGB) are decoded whatever their file's size.
inline constexpr std::int64_t pixels_decoded_regardless_of_file_size = std::int64_t{1} << 20;

/// JPEG: every 8×8 block of the full-resolution component costs at least one bit of Huffman code
/// (its DC difference, in a baseline scan or a progressive DC scan), so a file of B bytes holds at
/// most 512·B pixels; twice that is allowed. (Arithmetic coding can spend less than a bit on a
/// block, but a legitimate file that small for its size is not one vediff needs to read.)
inline constexpr double max_jpeg_pixels_per_file_byte = 1024;

/// PNG: deflate expands at most ~1032:1, so a file of B bytes holds at most ~1032·B bytes of
/// filtered rows; 1100 allows for the zlib and chunk framing.
inline constexpr double max_png_row_bytes_per_file_byte = 1100;

/// The declared size, checked before anything is allocated: not empty, at most 2^28 pixels, and
/// (above pixels_decoded_regardless_of_file_size) no more data than a file of `bytes` can code:
/// `coded` (pixels or row bytes, named by `unit`) at most `per_byte` per byte of the file. A
/// file that declares more is truncated or a decompression bomb: a few hundred bytes would
/// otherwise take hundreds of MB and seconds of decoding.
inline void check_decoded_size(std::string_view format, std::size_t bytes, std::int64_t width, std::int64_t height, double coded,
                               double per_byte, std::string_view unit) {
    if (width < 1 || height < 1) decode_failure(format, bytes, fmt::format("it declares {}×{} pixels, an empty image", width, height));
    if (width * height > max_decoded_pixels)
        decode_failure(format, bytes,
                       fmt::format("it declares {}×{} pixels, more than the 2^28 vediff decodes: refused as a decompression bomb", width,
                                   height));
    if (width * height > pixels_decoded_regardless_of_file_size && coded > per_byte * double(bytes))
        decode_failure(format, bytes,
                       fmt::format("it declares {}×{} pixels, {:.0f} {} per byte of the file, more than the {:.0f} its coding can hold: "
                                   "refused as truncated or a decompression bomb",
                                   width, height, coded / double(bytes), unit, per_byte));
}

// ---- JPEG ------------------------------------------------------------------------------------

/// The most scans a progressive JPEG may have (TurboJPEG's limit): each scan is another pass over
/// the whole image, so a small file of thousands of legal scans takes minutes to decode.
inline constexpr int max_jpeg_scans = 500;

/// libjpeg's state for one decode: plain C data, zeroed before use.
struct jpeg_decoder {
    jpeg_decompress_struct cinfo;
    jpeg_error_mgr err;
    jpeg_progress_mgr progress;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX + 16];
};

[[noreturn]] inline void jpeg_on_error(j_common_ptr cinfo) {
    auto* d = static_cast<jpeg_decoder*>(cinfo->client_data);
    char text[JMSG_LENGTH_MAX] = {};
    (*cinfo->err->format_message)(cinfo, text);
    std::snprintf(d->message, sizeof d->message, "libjpeg: %s", text);
    std::longjmp(d->jump, 1);
}
// msg_level −1 is a warning: libjpeg met corrupt data and would go on with made-up pixels.
inline void jpeg_on_message(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0) jpeg_on_error(cinfo);
}
inline void jpeg_silent(j_common_ptr) {}
inline void jpeg_on_progress(j_common_ptr cinfo) {
    const auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
    if (dinfo->progressive_mode && dinfo->input_scan_number > max_jpeg_scans) {
        auto* d = static_cast<jpeg_decoder*>(cinfo->client_data);
        std::snprintf(d->message, sizeof d->message, "a progressive JPEG of more than %d scans, refused", max_jpeg_scans);
        std::longjmp(d->jump, 1);
    }
}

/// Reads the header and chooses the output colour space (CMYK for CMYK and YCCK files).
inline bool jpeg_header_step(jpeg_decoder* d, const std::uint8_t* data, std::size_t size) {
    d->cinfo.err = jpeg_std_error(&d->err);
    d->err.error_exit = jpeg_on_error;
    d->err.emit_message = jpeg_on_message;
    d->err.output_message = jpeg_silent;
    d->cinfo.client_data = d;
    if (setjmp(d->jump)) return false;
    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = jpeg_on_progress;
    d->cinfo.progress = &d->progress;
    jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
    jpeg_read_header(&d->cinfo, TRUE);
    switch (d->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: d->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_YCbCr:
    case JCS_RGB: d->cinfo.out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK: d->cinfo.out_color_space = JCS_CMYK; break;
    default:
        std::snprintf(d->message, sizeof d->message, "an unknown colour space of %d components", d->cinfo.num_components);
        return false;
    }
    jpeg_calc_output_dimensions(&d->cinfo);
    return true;
}

/// Decodes every row into out (output_height rows of row_bytes) and reads to the end of the image.
inline bool jpeg_pixels_step(jpeg_decoder* d, std::uint8_t* out, std::size_t row_bytes) {
    if (setjmp(d->jump)) return false;
    jpeg_start_decompress(&d->cinfo);
    if (static_cast<std::size_t>(d->cinfo.output_width) * static_cast<std::size_t>(d->cinfo.output_components) != row_bytes) {
        std::snprintf(d->message, sizeof d->message, "libjpeg's output rows are not the size its header gave");
        return false;
    }
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        JSAMPROW row = out + static_cast<std::size_t>(d->cinfo.output_scanline) * row_bytes;
        jpeg_read_scanlines(&d->cinfo, &row, 1);
    }
    jpeg_finish_decompress(&d->cinfo);
    return true;
}

/// CMYK (4 channels, inverted when `inverted`) to RGB: R = round(C'·K'/255) with C' = 255 − C.
inline image cmyk_to_rgb(const image& cmyk, bool inverted) {
    image rgb(cmyk.height, cmyk.width, 3);
    const std::size_t n = static_cast<std::size_t>(cmyk.height * cmyk.width);
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* s = &cmyk.pixels[4 * i];
        const int k = inverted ? s[3] : 255 - s[3];
        for (int c = 0; c < 3; ++c) {
            const int v = inverted ? s[c] : 255 - s[c];
            rgb.pixels[3 * i + static_cast<std::size_t>(c)] = static_cast<std::uint8_t>((v * k + 127) / 255);  // 255 is odd: no ties
        }
    }
    return rgb;
}

// ---- PNG -------------------------------------------------------------------------------------

/// libpng's state for one decode, and the memory it reads from: plain C data, zeroed before use.
struct png_decoder {
    png_structp png;
    png_infop info;
    const std::uint8_t* data;
    std::size_t size;
    std::size_t offset;
    png_uint_32 width, height;
    int bit_depth, color_type, channels;
    std::size_t row_bytes;
    std::jmp_buf jump;
    char message[256];
    char warning[256];  // the last warning, which often says what the error that follows means
};

[[noreturn]] inline void png_on_error(png_structp png, png_const_charp message) {
    auto* d = static_cast<png_decoder*>(png_get_error_ptr(png));
    std::snprintf(d->message, sizeof d->message, "libpng: %s", message ? message : "unknown error");
    std::longjmp(d->jump, 1);
}
// Benign (a bad ancillary chunk is skipped): kept only to explain an error that may follow.
inline void png_on_warning(png_structp png, png_const_charp message) {
    auto* d = static_cast<png_decoder*>(png_get_error_ptr(png));
    std::snprintf(d->warning, sizeof d->warning, "%s", message ? message : "");
}

inline void png_read_memory(png_structp png, png_bytep out, std::size_t n) {
    auto* d = static_cast<png_decoder*>(png_get_io_ptr(png));
    if (n > d->size - d->offset) png_error(png, "the data ends early: the file is truncated");
    std::memcpy(out, d->data + d->offset, n);
    d->offset += n;
}

/// Reads the signature and every chunk up to the image data.
inline bool png_header_step(png_decoder* d) {
    if (setjmp(d->jump)) return false;
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, png_on_error, png_on_warning);
    if (d->png) d->info = png_create_info_struct(d->png);
    if (!d->png || !d->info) {
        std::snprintf(d->message, sizeof d->message, "libpng could not set up a decoder (out of memory?)");
        return false;
    }
    png_set_read_fn(d->png, d, png_read_memory);
    png_set_crc_action(d->png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    // max_decoded_pixels bounds width·height; let either side go up to it (libpng's default is 10^6).
    png_set_user_limits(d->png, static_cast<png_uint_32>(max_decoded_pixels), static_cast<png_uint_32>(max_decoded_pixels));
    png_read_info(d->png, d->info);
    png_get_IHDR(d->png, d->info, &d->width, &d->height, &d->bit_depth, &d->color_type, nullptr, nullptr, nullptr);
    return true;
}

/// Sets up the conversions to 8-bit grey, grey + alpha, RGB or RGBA.
inline bool png_transform_step(png_decoder* d) {
    if (setjmp(d->jump)) return false;
    if (d->color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
    if (d->color_type == PNG_COLOR_TYPE_GRAY && d->bit_depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
    if (png_get_valid(d->png, d->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(d->png);
    if (d->bit_depth == 16) png_set_scale_16(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    d->channels = png_get_channels(d->png, d->info);
    d->row_bytes = png_get_rowbytes(d->png, d->info);
    if (png_get_bit_depth(d->png, d->info) != 8 || d->channels < 1 || d->channels > 4 ||
        d->row_bytes != static_cast<std::size_t>(d->width) * static_cast<std::size_t>(d->channels)) {
        std::snprintf(d->message, sizeof d->message, "libpng's conversion gave %d channels of %d bits", d->channels,
                      static_cast<int>(png_get_bit_depth(d->png, d->info)));
        return false;
    }
    return true;
}

/// Decodes every row (all passes of an interlaced file), then reads and checks the chunks after them.
inline bool png_pixels_step(png_decoder* d, png_bytepp rows) {
    if (setjmp(d->jump)) return false;
    png_read_image(d->png, rows);
    png_read_end(d->png, nullptr);
    return true;
}

} // namespace detail

/// Decodes a JPEG file's bytes; channels 0 keeps the file's (1 or 3), 1 to 4 converts. Every
/// problem, libjpeg's warnings included, is an io_error "cannot decode this JPEG file ... (cause)".
inline image decode_jpeg(std::span<const std::uint8_t> bytes, int channels = 0) {
    if (channels < 0 || channels > 4) throw std::invalid_argument(fmt::format("decode_jpeg: channels {} is not 0 (as stored) or 1 to 4", channels));
    detail::jpeg_decoder d{};
    struct destroy {
        detail::jpeg_decoder& d;
        ~destroy() { jpeg_destroy_decompress(&d.cinfo); }
    } guard{d};
    if (!detail::jpeg_header_step(&d, bytes.data(), bytes.size())) detail::decode_failure("JPEG", bytes.size(), d.message);
    detail::check_decoded_size("JPEG", bytes.size(), d.cinfo.output_width, d.cinfo.output_height,
                               double(d.cinfo.output_width) * double(d.cinfo.output_height), detail::max_jpeg_pixels_per_file_byte,
                               "pixels");
    image img(d.cinfo.output_height, d.cinfo.output_width, d.cinfo.output_components);
    if (!detail::jpeg_pixels_step(&d, img.pixels.data(), static_cast<std::size_t>(img.width * img.channels)))
        detail::decode_failure("JPEG", bytes.size(), d.message);
    if (img.channels == 4) img = detail::cmyk_to_rgb(img, d.cinfo.saw_Adobe_marker);
    return convert_channels(std::move(img), channels);
}

/// Decodes a PNG file's bytes; channels 0 keeps the file's (after the expansions of the header
/// comment), 1 to 4 converts. Every problem is an io_error "cannot decode this PNG file ... (cause)".
inline image decode_png(std::span<const std::uint8_t> bytes, int channels = 0) {
    if (channels < 0 || channels > 4) throw std::invalid_argument(fmt::format("decode_png: channels {} is not 0 (as stored) or 1 to 4", channels));
    detail::png_decoder d{};
    d.data = bytes.data();
    d.size = bytes.size();
    struct destroy {
        detail::png_decoder& d;
        ~destroy() { png_destroy_read_struct(&d.png, &d.info, nullptr); }
    } guard{d};
    const auto fail = [&] {
        detail::decode_failure("PNG", bytes.size(),
                               *d.warning ? fmt::format("{}, after the warning: {}", d.message, d.warning) : std::string(d.message));
    };
    if (!detail::png_header_step(&d)) fail();
    // The rows as deflate holds them: a filter byte, then width × samples × bit depth bits.
    const int samples = d.color_type == PNG_COLOR_TYPE_RGB ? 3 : d.color_type == PNG_COLOR_TYPE_RGB_ALPHA ? 4
                        : d.color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    const double row_bytes = 1.0 + std::ceil(double(d.width) * samples * d.bit_depth / 8.0);
    detail::check_decoded_size("PNG", bytes.size(), d.width, d.height, row_bytes * double(d.height),
                               detail::max_png_row_bytes_per_file_byte, "bytes of rows");
    if (!detail::png_transform_step(&d)) fail();
    image img(d.height, d.width, d.channels);
    std::vector<png_bytep> rows(static_cast<std::size_t>(img.height));
    for (std::size_t y = 0; y < rows.size(); ++y) rows[y] = img.pixels.data() + y * d.row_bytes;
    if (!detail::png_pixels_step(&d, rows.data())) fail();
    return convert_channels(std::move(img), channels);
}

/// Decodes PNG or JPEG bytes, told apart by their signature (PNG's 8 bytes, JPEG's FF D8 FF).
inline image decode_image(std::span<const std::uint8_t> bytes, int channels = 0) {
    static constexpr std::uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (bytes.size() >= 8 && std::memcmp(bytes.data(), png_signature, 8) == 0) return decode_png(bytes, channels);
    if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return decode_jpeg(bytes, channels);
    if (channels < 0 || channels > 4) throw std::invalid_argument(fmt::format("decode_image: channels {} is not 0 (as stored) or 1 to 4", channels));
    if (bytes.empty()) throw io_error("cannot decode: not a PNG or JPEG file (it is empty)");
    std::string start;
    for (std::size_t i = 0; i < std::min<std::size_t>(bytes.size(), 8); ++i) start += fmt::format("{}{:02x}", i ? " " : "", bytes[i]);
    throw io_error(fmt::format("cannot decode: not a PNG or JPEG file (its {} bytes begin {})", bytes.size(), start));
}

} // namespace vediff::io
