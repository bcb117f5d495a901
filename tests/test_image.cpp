#define BOOST_TEST_MODULE image
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <jpeglib.h>
#include <png.h>
#include <stb_image_write.h>
#include <zlib.h>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/io/image.hpp"
#include "vediff/io/image_decoding.hpp"
#include "vediff/io/image_grid.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

/// A deterministic image whose every pixel differs from its neighbours.
io::image pattern(std::int64_t h, std::int64_t w, int c, int salt = 0) {
    io::image img(h, w, c);
    for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k) img.at(y, x, k) = static_cast<std::uint8_t>((37 * y + 11 * x + 101 * k + 7 * salt) % 256);
    return img;
}

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const fs::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

std::string encode_jpeg(const io::image& img, int quality = 95) {
    std::string out;
    const auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
    BOOST_REQUIRE(stbi_write_jpg_to_func(sink, &out, static_cast<int>(img.width), static_cast<int>(img.height), img.channels,
                                         img.pixels.data(), quality));
    return out;
}

std::string be32(std::uint32_t v) {
    return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::uint32_t read_be32(const std::string& s, std::size_t at) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<std::uint8_t>(s[at + i]);
    return v;
}

/// A PNG chunk: length, type, data and its CRC (zlib's crc32, PNG's polynomial).
std::string png_chunk(const std::string& type, const std::string& data) {
    const std::string body = type + data;
    const auto crc = crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
    return be32(static_cast<std::uint32_t>(data.size())) + body + be32(static_cast<std::uint32_t>(crc));
}
std::string png_ihdr(std::uint32_t width, std::uint32_t height, int bit_depth, int color_type) {
    return png_chunk("IHDR", be32(width) + be32(height) + std::string{char(bit_depth), char(color_type), 0, 0, 0});
}
const std::string png_signature("\x89PNG\r\n\x1a\n", 8);

/// Where each chunk of a PNG starts (its length field), by type, in file order.
std::vector<std::pair<std::string, std::size_t>> png_chunks(const std::string& png) {
    std::vector<std::pair<std::string, std::size_t>> out;
    for (std::size_t at = 8; at + 12 <= png.size(); at += 12 + read_be32(png, at)) out.emplace_back(png.substr(at + 4, 4), at);
    return out;
}
/// The PNG with `chunk` inserted before its first IDAT.
std::string insert_before_idat(const std::string& png, const std::string& chunk) {
    for (const auto& [type, at] : png_chunks(png))
        if (type == "IDAT") return png.substr(0, at) + chunk + png.substr(at);
    BOOST_FAIL("no IDAT");
    return {};
}

void png_append(png_structp png, png_bytep data, std::size_t n) {
    static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}
void png_no_flush(png_structp) {}

/// A PNG written by libpng's write API (independent of vediff's stb_image_write encoder): `rows`
/// holds the rows as the bit depth and colour type lay them out (16 bits big-endian, 1 bit packed);
/// palette_alpha is the tRNS of a palette image, transparent the tRNS colour of a grey or RGB one.
std::string libpng_encode(std::uint32_t width, std::uint32_t height, int bit_depth, int color_type, const std::vector<std::uint8_t>& rows,
                          bool interlaced = false, const std::vector<png_color>& palette = {},
                          const std::vector<std::uint8_t>& palette_alpha = {}, const png_color_16* transparent = nullptr) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png_create_info_struct(png);
    std::string out;
    png_set_write_fn(png, &out, png_append, png_no_flush);
    png_set_IHDR(png, info, width, height, bit_depth, color_type, interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
    if (!palette_alpha.empty()) png_set_tRNS(png, info, palette_alpha.data(), static_cast<int>(palette_alpha.size()), nullptr);
    if (transparent) png_set_tRNS(png, info, nullptr, 0, transparent);
    png_write_info(png, info);
    const std::size_t row_bytes = png_get_rowbytes(png, info);
    BOOST_REQUIRE(rows.size() == row_bytes * height);
    std::vector<png_bytep> pointers(height);
    for (std::size_t y = 0; y < height; ++y) pointers[y] = const_cast<png_bytep>(rows.data() + y * row_bytes);
    png_write_image(png, pointers.data());  // interlaces itself when the IHDR says Adam7
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return out;
}

/// A JPEG of 4-channel pixels written by libjpeg's compress API as `stored_as` (JCS_CMYK or
/// JCS_YCCK), quality 100; with the Adobe marker or without.
std::string libjpeg_encode_cmyk(const io::image& cmyk, J_COLOR_SPACE stored_as, bool adobe_marker) {
    jpeg_compress_struct c;
    jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &buffer, &size);
    c.image_width = static_cast<JDIMENSION>(cmyk.width);
    c.image_height = static_cast<JDIMENSION>(cmyk.height);
    c.input_components = 4;
    c.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_colorspace(&c, stored_as);
    c.write_Adobe_marker = adobe_marker ? TRUE : FALSE;
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = const_cast<JSAMPROW>(cmyk.pixels.data() + static_cast<std::size_t>(c.next_scanline * cmyk.width * 4));
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    std::string out(reinterpret_cast<const char*>(buffer), size);
    jpeg_destroy_compress(&c);
    std::free(buffer);
    return out;
}

/// A progressive greyscale JPEG of `ac_bands`·11 + 11 scans, all legal: the DC and then each of
/// the first ac_bands AC coefficients alone, each sent bit by bit (successive approximation, 11 bits).
std::string many_scan_jpeg(int ac_bands) {
    std::vector<jpeg_scan_info> scans;
    for (int band = 0; band <= ac_bands; ++band)
        for (int bit = 10; bit >= 0; --bit) {
            jpeg_scan_info scan{};
            scan.comps_in_scan = 1;
            scan.Ss = scan.Se = band;
            scan.Ah = bit == 10 ? 0 : bit + 1;
            scan.Al = bit;
            scans.push_back(scan);
        }
    const auto img = pattern(16, 16, 1);
    jpeg_compress_struct c;
    jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &buffer, &size);
    c.image_width = c.image_height = 16;
    c.input_components = 1;
    c.in_color_space = JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    c.scan_info = scans.data();
    c.num_scans = static_cast<int>(scans.size());
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = const_cast<JSAMPROW>(img.pixels.data() + c.next_scanline * 16);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    std::string out(reinterpret_cast<const char*>(buffer), size);
    jpeg_destroy_compress(&c);
    std::free(buffer);
    return out;
}

std::vector<std::uint8_t> as_bytes(const std::string& s) { return {s.begin(), s.end()}; }

} // namespace

BOOST_AUTO_TEST_SUITE(files)

BOOST_AUTO_TEST_CASE(png_round_trip_grey_and_rgb) {
    temp_dir dir("image");
    for (int c : {1, 3, 4}) {
        const auto img = pattern(13, 17, c, c);
        const auto path = dir / ("p" + std::to_string(c) + ".png");
        io::write_png(path, img);
        BOOST_TEST(read_bytes(path).substr(0, 8) == std::string("\x89PNG\r\n\x1a\n"));
        const auto back = io::read_image(path);
        BOOST_TEST(back.height == 13);
        BOOST_TEST(back.width == 17);
        BOOST_TEST(back.channels == c);
        BOOST_TEST(back.pixels == img.pixels, "channels " << c);
    }
    // Converting on load: grey to RGB replicates, RGB to grey takes the luminance.
    const auto grey_as_rgb = io::read_image(dir / "p1.png", 3);
    const auto grey = pattern(13, 17, 1, 1);
    BOOST_TEST(grey_as_rgb.channels == 3);
    BOOST_TEST(grey_as_rgb.at(5, 6, 0) == grey.at(5, 6, 0));
    BOOST_TEST(grey_as_rgb.at(5, 6, 2) == grey.at(5, 6, 0));
    const auto rgb = pattern(13, 17, 3, 3);
    const auto rgb_as_grey = io::read_image(dir / "p3.png", 1);
    BOOST_TEST(rgb_as_grey.channels == 1);
    const int expected = (77 * rgb.at(4, 9, 0) + 150 * rgb.at(4, 9, 1) + 29 * rgb.at(4, 9, 2)) >> 8;
    BOOST_TEST(int(rgb_as_grey.at(4, 9, 0)) == expected);
    BOOST_CHECK_THROW(io::read_image(dir / "p1.png", 5), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(jpeg_reads_close_to_the_original) {
    temp_dir dir("image");
    io::image img(24, 32, 3);
    for (std::int64_t y = 0; y < 24; ++y)
        for (std::int64_t x = 0; x < 32; ++x) {
            img.at(y, x, 0) = static_cast<std::uint8_t>(8 * x);
            img.at(y, x, 1) = static_cast<std::uint8_t>(10 * y);
            img.at(y, x, 2) = 128;
        }
    write_bytes(dir / "smooth.JPG", encode_jpeg(img));
    const auto back = io::read_image(dir / "smooth.JPG");
    BOOST_TEST(back.channels == 3);
    BOOST_TEST(back.height == 24);
    double worst = 0;
    for (std::size_t i = 0; i < img.pixels.size(); ++i) worst = std::max(worst, std::abs(double(back.pixels[i]) - double(img.pixels[i])));
    BOOST_TEST(worst < 12.0);  // lossy, but a smooth image at quality 95 stays close
}

BOOST_AUTO_TEST_CASE(bad_files_name_the_file_and_the_cause) {
    temp_dir dir("image");
    const auto png = io::encode_png(pattern(40, 30, 3));
    const std::string png_bytes(png.begin(), png.end());
    write_bytes(dir / "truncated.png", png_bytes.substr(0, png_bytes.size() / 2));
    write_bytes(dir / "garbage.png", "this is not an image at all, just some text");
    write_bytes(dir / "empty.png", "");
    const std::string jpeg = encode_jpeg(pattern(48, 64, 3));
    write_bytes(dir / "truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
    auto corrupt = png_bytes;
    for (std::size_t i = 60; i < corrupt.size() - 20; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5a);
    write_bytes(dir / "corrupt.png", corrupt);

    for (std::string name : {"truncated.png", "garbage.png", "truncated.jpg", "corrupt.png"}) {
        const auto msg = io_error_message([&] { io::read_image(dir / name); });
        BOOST_TEST(contains(msg, (dir / name).string()), msg);
        BOOST_TEST(contains(msg, "cannot decode"), msg);
    }
    BOOST_TEST(contains(io_error_message([&] { io::read_image(dir / "truncated.png"); }), "PNG file"));
    BOOST_TEST(contains(io_error_message([&] { io::read_image(dir / "truncated.jpg"); }), "JPEG file"));
    const auto empty = io_error_message([&] { io::read_image(dir / "empty.png"); });
    BOOST_TEST((contains(empty, "empty.png") && contains(empty, "the file is empty")), empty);
    const auto missing = io_error_message([&] { io::read_image(dir / "missing.png"); });
    BOOST_TEST((contains(missing, "missing.png") && contains(missing, "No such file")), missing);
    const auto directory = io_error_message([&] { io::read_image(dir.path); });
    BOOST_TEST(contains(directory, "it is a directory"), directory);
    const auto unwritable = io_error_message([&] { io::write_png(dir / "no_such_dir" / "x.png", pattern(2, 2, 1)); });
    BOOST_TEST(contains(unwritable, "no_such_dir"), unwritable);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(decoding)

BOOST_AUTO_TEST_CASE(corrupt_files_fail_with_the_file_and_the_cause) {
    temp_dir dir("image");
    const auto png_vec = io::encode_png(pattern(40, 30, 3));
    const std::string png(png_vec.begin(), png_vec.end());
    const auto chunks = png_chunks(png);
    BOOST_REQUIRE(chunks.at(0).first == "IHDR");
    std::size_t idat = 0;
    for (const auto& [type, at] : chunks)
        if (type == "IDAT") idat = at;
    BOOST_REQUIRE(idat > 0);
    auto flip = [](std::string s, std::size_t at) {
        s[at] = static_cast<char>(s[at] ^ 0x01);
        return s;
    };
    const std::string jpeg = encode_jpeg(pattern(48, 64, 3));
    BOOST_REQUIRE(jpeg.substr(jpeg.size() - 2) == "\xFF\xD9");
    const std::size_t sof = jpeg.find("\xFF\xC0");
    BOOST_REQUIRE(sof != std::string::npos);
    auto jpeg_of_size = [&](std::uint16_t h, std::uint16_t w) {  // SOF0: FF C0, length, precision, height, width
        auto j = jpeg;
        j[sof + 5] = char(h >> 8), j[sof + 6] = char(h & 0xFF), j[sof + 7] = char(w >> 8), j[sof + 8] = char(w & 0xFF);
        return j;
    };
    const std::string idat_chunk = png_chunk("IDAT", std::string(20, 'x'));

    // (file, its bytes, words its message must hold besides the path)
    const std::vector<std::tuple<std::string, std::string, std::vector<std::string>>> cases = {
        {"truncated.jpg", jpeg.substr(0, 2 * jpeg.size() / 3), {"cannot decode this JPEG file", "libjpeg: Premature end of JPEG file"}},
        {"extraneous.jpg", jpeg.substr(0, jpeg.size() - 2) + "\x01\x02\x03" + "\xFF\xD9",
         {"JPEG file", "libjpeg: Corrupt JPEG data: ", "extraneous bytes before marker 0xd9"}},
        {"zero_width.jpg", jpeg_of_size(48, 0), {"JPEG file", "libjpeg: Empty JPEG image"}},
        {"bomb.jpg", jpeg_of_size(20000, 20000), {"JPEG file", "20000×20000", "2^28", "decompression bomb"}},
        {"ihdr_crc.png", flip(png, chunks[0].second + 8 + 13), {"cannot decode this PNG file", "libpng: IHDR: CRC error"}},
        {"idat_crc.png", flip(png, idat + 8 + read_be32(png, idat)), {"PNG file", "libpng: IDAT: CRC error"}},
        {"text_crc.png", insert_before_idat(png, flip(png_chunk("tEXt", std::string("Comment\0made by hand", 20)), 30)),
         {"PNG file", "libpng: tEXt: CRC error"}},
        {"truncated.png", png.substr(0, png.size() - 30), {"PNG file", "libpng: the data ends early: the file is truncated"}},
        {"no_iend.png", png.substr(0, png.size() - 12), {"PNG file", "truncated"}},
        {"empty.jpg", "", {"the file is empty"}},
        {"text.jpg", "just some text, not a picture\n", {"cannot decode: not a PNG or JPEG file", "begin 6a 75 73 74"}},
        {"garbage.png", png_signature + "this is garbage and no chunk at all", {"PNG file", "libpng: "}},
        {"zero_width.png", png_signature + png_ihdr(0, 5, 8, 2) + idat_chunk + png_chunk("IEND", ""),
         {"PNG file", "Invalid IHDR data", "Image width is zero"}},
        {"bomb.png", png_signature + png_ihdr(20000, 20000, 8, 2) + idat_chunk + png_chunk("IEND", ""),
         {"PNG file", "20000×20000", "decompression bomb"}},
        // Under 2^28 pixels but more than the file's bytes can code (found by fuzz_image: a 262-byte
        // progressive JPEG declaring 47651×4126 made vediff allocate 590 MB before libjpeg failed).
        {"small_bomb.jpg", jpeg_of_size(4000, 3000),
         {"JPEG file", "3000×4000", "pixels per byte of the file, more than the 1024", "truncated or a decompression bomb"}},
        {"small_bomb.png", png_signature + png_ihdr(2000, 1000, 8, 2) + idat_chunk + png_chunk("IEND", ""),
         {"PNG file", "2000×1000", "bytes of rows per byte of the file, more than the 1100"}},
    };
    for (const auto& [name, bytes, words] : cases) {
        write_bytes(dir / name, bytes);
        const auto msg = io_error_message([&] { io::read_image(dir / name); });
        BOOST_TEST(contains(msg, "read_image: " + (dir / name).string() + ": "), msg);
        for (const auto& word : words) BOOST_TEST(contains(msg, word), name << ": " << msg << " lacks " << word);
    }
    // The intact files decode: every failure above is the damage's.
    write_bytes(dir / "intact.png", png);
    write_bytes(dir / "intact.jpg", jpeg);
    BOOST_TEST(io::read_image(dir / "intact.png").pixels == pattern(40, 30, 3).pixels);
    BOOST_TEST(io::read_image(dir / "intact.jpg").width == 64);
    BOOST_TEST(io::read_image(dir / "intact.png", 3).channels == 3);
    // decode_* name no file; read_image adds it.
    const auto bare = io_error_message([&] { io::decode_png(as_bytes(png.substr(0, 100))); });
    BOOST_TEST(bare.starts_with("cannot decode this PNG file of 100 bytes (libpng: "), bare);
}

BOOST_AUTO_TEST_CASE(large_images_that_compress_well_still_decode) {
    // The file-size rule must pass what the coders really give: a constant 2048×1024 grey image
    // (2 Mpx, above the size checked regardless of the file) as a baseline JPEG and as a 1-bit PNG,
    // deflate at its best ratio: near the rule's bounds without crossing them.
    const io::image flat(1024, 2048, 1, 128);
    const std::string jpeg = encode_jpeg(flat, 50);
    BOOST_TEST_MESSAGE("constant 2048x1024 JPEG: " << jpeg.size() << " bytes, " << 2048.0 * 1024 / double(jpeg.size()) << " px/byte");
    const auto grey = io::decode_jpeg(as_bytes(jpeg), 1);
    BOOST_TEST(grey.width == 2048);
    BOOST_TEST(std::all_of(grey.pixels.begin(), grey.pixels.end(), [](std::uint8_t v) { return v >= 127 && v <= 129; }));
    const std::vector<std::uint8_t> one_bit_rows(1024 * 256, 0xFF);  // 1-bit grey, all white
    const std::string png = libpng_encode(2048, 1024, 1, PNG_COLOR_TYPE_GRAY, one_bit_rows);
    BOOST_TEST_MESSAGE("1-bit 2048x1024 PNG: " << png.size() << " bytes, " << (1024.0 * 257) / double(png.size()) << " row bytes/byte");
    const auto decoded = io::decode_png(as_bytes(png));
    BOOST_TEST(decoded.width == 2048);
    BOOST_TEST(std::all_of(decoded.pixels.begin(), decoded.pixels.end(), [](std::uint8_t v) { return v == 255; }));
}

BOOST_AUTO_TEST_CASE(benign_png_warnings_do_not_fail) {
    // A gAMA chunk of 3 bytes instead of 4 (a valid CRC): libpng warns "gAMA: invalid" and skips it.
    const auto img = pattern(9, 11, 3);
    const auto png_vec = io::encode_png(img);
    const std::string png(png_vec.begin(), png_vec.end());
    const auto odd = insert_before_idat(png, png_chunk("gAMA", std::string("\x00\x01\x02", 3)));
    BOOST_TEST(io::decode_image(as_bytes(odd)).pixels == img.pixels);
    // A chunk of an unknown ancillary type is skipped too.
    const auto unknown = insert_before_idat(png, png_chunk("vdFf", "anything"));
    BOOST_TEST(io::decode_image(as_bytes(unknown)).pixels == img.pixels);
}

BOOST_AUTO_TEST_CASE(cmyk_and_ycck_jpegs_become_rgb) {
    // Smooth inverted ink (as Adobe stores it: 255 = no ink), so JPEG at quality 100 stays within a
    // few levels; expected R = C'·K'/255 from the values written, not from any decoder.
    io::image stored(24, 40, 4);
    for (std::int64_t y = 0; y < 24; ++y)
        for (std::int64_t x = 0; x < 40; ++x) {
            stored.at(y, x, 0) = static_cast<std::uint8_t>(60 + 4 * x);
            stored.at(y, x, 1) = static_cast<std::uint8_t>(230 - 5 * y);
            stored.at(y, x, 2) = static_cast<std::uint8_t>(100 + 2 * x + 3 * y);
            stored.at(y, x, 3) = static_cast<std::uint8_t>(250 - 2 * x - y);
        }
    struct variant {
        const char* name;
        J_COLOR_SPACE space;
        bool adobe;
    };
    for (const auto& v : {variant{"CMYK, Adobe", JCS_CMYK, true}, variant{"YCCK, Adobe", JCS_YCCK, true}, variant{"CMYK, no marker", JCS_CMYK, false}}) {
        const auto bytes = as_bytes(libjpeg_encode_cmyk(stored, v.space, v.adobe));
        const auto rgb = io::decode_jpeg(bytes);
        BOOST_TEST_REQUIRE(rgb.channels == 3, v.name);
        BOOST_TEST(rgb.height == 24);
        BOOST_TEST(rgb.width == 40);
        double worst = 0;
        for (std::int64_t y = 0; y < 24; ++y)
            for (std::int64_t x = 0; x < 40; ++x)
                for (int c = 0; c < 3; ++c) {
                    // Without an Adobe marker the values are plain ink: C' = 255 − C.
                    const double ink_c = v.adobe ? stored.at(y, x, c) : 255 - stored.at(y, x, c);
                    const double ink_k = v.adobe ? stored.at(y, x, 3) : 255 - stored.at(y, x, 3);
                    worst = std::max(worst, std::abs(rgb.at(y, x, c) - ink_c * ink_k / 255.0));
                }
        BOOST_TEST(worst < 4.0, v.name << ": worst " << worst);
        BOOST_TEST(io::decode_jpeg(bytes, 1).pixels == io::convert_channels(rgb, 1).pixels);
    }
}

BOOST_AUTO_TEST_CASE(progressive_jpegs_of_too_many_scans_are_refused) {
    // 451 legal scans decode; 704 are refused.
    const auto fine = io::decode_jpeg(as_bytes(many_scan_jpeg(40)));
    BOOST_TEST(fine.channels == 1);
    BOOST_TEST(fine.width == 16);
    const auto msg = io_error_message([&] { io::decode_jpeg(as_bytes(many_scan_jpeg(63))); });
    BOOST_TEST(contains(msg, "cannot decode this JPEG file"), msg);
    BOOST_TEST(contains(msg, "more than 500 scans"), msg);
}

BOOST_AUTO_TEST_CASE(sixteen_bit_pngs_round_to_eight) {
    const std::uint32_t w = 13, h = 7;
    for (int color_type : {PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_GRAY}) {
        const int c = color_type == PNG_COLOR_TYPE_RGB ? 3 : 1;
        std::vector<std::uint8_t> rows;
        std::vector<std::uint16_t> values;
        for (std::uint32_t i = 0; i < w * h * static_cast<std::uint32_t>(c); ++i) {
            const auto v = static_cast<std::uint16_t>((i * 40503u + 128u) % 65536u);
            values.push_back(v);
            rows.push_back(static_cast<std::uint8_t>(v >> 8));
            rows.push_back(static_cast<std::uint8_t>(v & 0xFF));
        }
        const auto decoded = io::decode_png(as_bytes(libpng_encode(w, h, 16, color_type, rows)));
        BOOST_TEST_REQUIRE(decoded.channels == c);
        BOOST_TEST(decoded.width == w);
        int rounded_up = 0;
        for (std::size_t i = 0; i < values.size(); ++i) {
            const auto expected = static_cast<std::uint8_t>(std::lround(values[i] * 255.0 / 65535.0));
            BOOST_TEST(decoded.pixels[i] == expected, "value " << values[i]);
            rounded_up += expected != (values[i] >> 8);
        }
        BOOST_TEST(rounded_up > 10);  // the high byte alone (PIL, stb_image) would fail here
    }
}

BOOST_AUTO_TEST_CASE(palette_grey_alpha_one_bit_and_interlaced_pngs_decode_exactly) {
    // Palette of 6 colours, tRNS for the first 3: RGBA, alpha 255 for the others.
    const std::vector<png_color> palette = {{10, 20, 30}, {200, 0, 0}, {0, 200, 0}, {0, 0, 200}, {255, 255, 255}, {7, 77, 177}};
    const std::vector<std::uint8_t> palette_alpha = {0, 128, 254};
    std::vector<std::uint8_t> index_rows;
    for (int y = 0; y < 5; ++y)
        for (int x = 0; x < 9; ++x) index_rows.push_back(static_cast<std::uint8_t>((x + 2 * y) % 6));
    const auto pal = io::decode_png(as_bytes(libpng_encode(9, 5, 8, PNG_COLOR_TYPE_PALETTE, index_rows, false, palette, palette_alpha)));
    BOOST_TEST_REQUIRE(pal.channels == 4);
    for (int y = 0; y < 5; ++y)
        for (int x = 0; x < 9; ++x) {
            const int i = (x + 2 * y) % 6;
            BOOST_TEST(int(pal.at(y, x, 0)) == palette[i].red);
            BOOST_TEST(int(pal.at(y, x, 1)) == palette[i].green);
            BOOST_TEST(int(pal.at(y, x, 2)) == palette[i].blue);
            BOOST_TEST(int(pal.at(y, x, 3)) == (i < 3 ? palette_alpha[i] : 255));
        }
    // Without tRNS a palette is RGB.
    const auto opaque = io::decode_png(as_bytes(libpng_encode(9, 5, 8, PNG_COLOR_TYPE_PALETTE, index_rows, false, palette)));
    BOOST_TEST(opaque.channels == 3);
    BOOST_TEST(int(opaque.at(4, 8, 2)) == palette[(8 + 8) % 6].blue);

    // A tRNS colour of RGB or grey becomes an alpha channel: 0 where the colour is, 255 elsewhere.
    const auto rgb_with_key = pattern(5, 8, 3, 2);
    png_color_16 key{};
    key.red = rgb_with_key.at(2, 3, 0), key.green = rgb_with_key.at(2, 3, 1), key.blue = rgb_with_key.at(2, 3, 2);
    const auto keyed = io::decode_png(as_bytes(libpng_encode(8, 5, 8, PNG_COLOR_TYPE_RGB, rgb_with_key.pixels, false, {}, {}, &key)));
    BOOST_TEST_REQUIRE(keyed.channels == 4);
    for (std::int64_t y = 0; y < 5; ++y)
        for (std::int64_t x = 0; x < 8; ++x) {
            for (int c = 0; c < 3; ++c) BOOST_TEST(keyed.at(y, x, c) == rgb_with_key.at(y, x, c));
            BOOST_TEST(int(keyed.at(y, x, 3)) == (y == 2 && x == 3 ? 0 : 255));
        }
    io::image grey_with_key(2, 3, 1);
    grey_with_key.pixels = {5, 90, 5, 91, 5, 0};
    png_color_16 grey_key{};
    grey_key.gray = 5;
    const auto grey_keyed = io::decode_png(as_bytes(libpng_encode(3, 2, 8, PNG_COLOR_TYPE_GRAY, grey_with_key.pixels, false, {}, {}, &grey_key)));
    BOOST_TEST(grey_keyed.channels == 2);
    BOOST_TEST(grey_keyed.pixels == (std::vector<std::uint8_t>{5, 0, 90, 255, 5, 0, 91, 255, 5, 0, 0, 255}));

    // Grey + alpha, as stored.
    const auto ga = pattern(6, 10, 2, 4);
    const auto ga_png = io::decode_png(as_bytes(libpng_encode(10, 6, 8, PNG_COLOR_TYPE_GRAY_ALPHA, ga.pixels)));
    BOOST_TEST(ga_png.channels == 2);
    BOOST_TEST(ga_png.pixels == ga.pixels);

    // 1-bit grey, 11 pixels a row (2 bytes, the last padded): bit 1 is 255.
    std::vector<std::uint8_t> bits;
    io::image expected_bits(3, 11, 1);
    for (int y = 0; y < 3; ++y) {
        std::uint8_t bytes[2] = {0, 0};
        for (int x = 0; x < 11; ++x) {
            const bool on = (x * 5 + y * 3) % 7 < 3;
            if (on) bytes[x / 8] |= static_cast<std::uint8_t>(0x80 >> (x % 8));
            expected_bits.at(y, x, 0) = on ? 255 : 0;
        }
        bits.insert(bits.end(), bytes, bytes + 2);
    }
    const auto one_bit = io::decode_png(as_bytes(libpng_encode(11, 3, 1, PNG_COLOR_TYPE_GRAY, bits)));
    BOOST_TEST(one_bit.channels == 1);
    BOOST_TEST(one_bit.pixels == expected_bits.pixels);

    // Adam7: 19×13 RGB, so that every pass holds pixels and some are partial.
    const auto rgb = pattern(13, 19, 3, 9);
    const auto interlaced = libpng_encode(19, 13, 8, PNG_COLOR_TYPE_RGB, rgb.pixels, true);
    BOOST_REQUIRE(interlaced[8 + 8 + 12] == 1);  // IHDR's interlace method: Adam7
    const auto deinterlaced = io::decode_png(as_bytes(interlaced));
    BOOST_TEST(deinterlaced.channels == 3);
    BOOST_TEST(deinterlaced.pixels == rgb.pixels);
}

BOOST_AUTO_TEST_CASE(channel_conversions) {
    io::image rgba(1, 2, 4);
    rgba.pixels = {10, 200, 30, 99, 255, 255, 255, 0};
    // (77·10 + 150·200 + 29·30) >> 8 = 31640 >> 8 = 123; white stays 255 (77 + 150 + 29 = 256).
    BOOST_TEST(io::convert_channels(rgba, 1).pixels == (std::vector<std::uint8_t>{123, 255}));
    BOOST_TEST(io::convert_channels(rgba, 2).pixels == (std::vector<std::uint8_t>{123, 99, 255, 0}));
    BOOST_TEST(io::convert_channels(rgba, 3).pixels == (std::vector<std::uint8_t>{10, 200, 30, 255, 255, 255}));
    BOOST_TEST(io::convert_channels(rgba, 0).pixels == rgba.pixels);
    io::image ga(1, 2, 2);
    ga.pixels = {7, 8, 250, 251};
    BOOST_TEST(io::convert_channels(ga, 1).pixels == (std::vector<std::uint8_t>{7, 250}));
    BOOST_TEST(io::convert_channels(ga, 3).pixels == (std::vector<std::uint8_t>{7, 7, 7, 250, 250, 250}));
    BOOST_TEST(io::convert_channels(ga, 4).pixels == (std::vector<std::uint8_t>{7, 7, 7, 8, 250, 250, 250, 251}));
    io::image grey(1, 1, 1);
    grey.pixels = {42};
    BOOST_TEST(io::convert_channels(grey, 2).pixels == (std::vector<std::uint8_t>{42, 255}));
    BOOST_TEST(io::convert_channels(grey, 4).pixels == (std::vector<std::uint8_t>{42, 42, 42, 255}));
    io::image rgb(1, 1, 3);
    rgb.pixels = {1, 2, 3};
    BOOST_TEST(io::convert_channels(rgb, 4).pixels == (std::vector<std::uint8_t>{1, 2, 3, 255}));
    BOOST_CHECK_THROW(io::convert_channels(rgb, 5), std::invalid_argument);

    // The same conversions from either format: a greyscale JPEG (libjpeg's compress API via stb
    // is RGB only, so take the fixture's) and a grey PNG.
    const fs::path fixtures = fs::path(VEDIFF_FIXTURE_DIR) / "decoded_images";
    const auto jpeg_grey = io::read_image(fixtures / "jpeg_grey.jpg");
    BOOST_REQUIRE(jpeg_grey.channels == 1);
    for (int c = 1; c <= 4; ++c) {
        BOOST_TEST(io::read_image(fixtures / "jpeg_grey.jpg", c).pixels == io::convert_channels(jpeg_grey, c).pixels);
        BOOST_TEST(io::read_image(fixtures / "png_interlaced.png", c).pixels ==
                   io::convert_channels(io::read_image(fixtures / "png_interlaced.png"), c).pixels);
    }
}

BOOST_AUTO_TEST_CASE(pixels_equal_pils) {
    // tests/fixtures/make_decoded_images.py: PIL's Image.open(file).convert(mode) of every file.
    const fs::path fixtures = fs::path(VEDIFF_FIXTURE_DIR) / "decoded_images";
    std::ifstream manifest(fixtures / "manifest.txt");
    BOOST_REQUIRE(manifest);
    std::string line;
    int files = 0;
    while (std::getline(manifest, line)) {
        std::istringstream fields(line);
        std::string name, mode;
        std::int64_t h = 0, w = 0;
        int c = 0;
        BOOST_REQUIRE(fields >> name >> h >> w >> c >> mode);
        const auto reference = read_bytes(fixtures / (name + ".pixels"));
        BOOST_REQUIRE(reference.size() == static_cast<std::size_t>(h * w * c));
        const auto img = io::read_image(fixtures / name);
        BOOST_TEST(img.height == h, name);
        BOOST_TEST(img.width == w, name);
        BOOST_TEST(img.channels == c, name << " (PIL: " << mode << ")");
        if (img.pixels.size() != reference.size()) continue;
        std::size_t differ = 0, first = 0;
        for (std::size_t i = 0; i < reference.size(); ++i)
            if (img.pixels[i] != static_cast<std::uint8_t>(reference[i]) && differ++ == 0) first = i;
        BOOST_TEST(differ == 0u, name << ": " << differ << " bytes differ from PIL's, the first at " << first);
        ++files;
    }
    BOOST_TEST(files == 10);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(tensors)

BOOST_AUTO_TEST_CASE(bytes_map_to_the_range_and_back) {
    io::image img(1, 4, 1);
    img.pixels = {0, 1, 128, 255};
    const auto t = io::image_to_tensor<double>(img);
    BOOST_TEST((t.shape() == tensor_shape{1, 1, 4}));
    BOOST_TEST(t.at(0, 0, 0) == -1.0);
    BOOST_TEST(t.at(0, 0, 3) == 1.0);
    BOOST_TEST(t.at(0, 0, 2) == 128 / 127.5 - 1, boost::test_tools::tolerance(1e-15));
    const auto u = io::image_to_tensor<float>(img, io::unit_range);
    BOOST_TEST(u.at(0, 0, 0) == 0.0f);
    BOOST_TEST(u.at(0, 0, 3) == 1.0f);

    // Every byte survives the trip through float, in both ranges; channels go planar.
    for (auto range : {io::symmetric_range, io::unit_range}) {
        const auto img3 = pattern(5, 7, 3);
        const auto t3 = io::image_to_tensor<float>(img3, range);
        BOOST_TEST((t3.shape() == tensor_shape{3, 5, 7}));
        BOOST_TEST(double(t3.at(2, 4, 6)) == range.lo + range.width() * img3.at(4, 6, 2) / 255.0, boost::test_tools::tolerance(1e-6));
        BOOST_TEST(io::tensor_to_image(t3.view(), range).pixels == img3.pixels);
    }
}

BOOST_AUTO_TEST_CASE(out_of_range_values_clamp) {
    auto t = tensor<float>::from_host({1, 1, 6}, {-3.0f, -1.0f, 0.0f, 1.0f, 7.0f, std::numeric_limits<float>::quiet_NaN()});
    const auto img = io::tensor_to_image(t.view());
    BOOST_TEST(img.pixels == (std::vector<std::uint8_t>{0, 0, 128, 255, 255, 0}));
    BOOST_TEST(contains(shape_error_message([&] { io::tensor_to_image(tensor<float>::zeros({2, 3, 3}).view()); }), "(2, 3, 3)"));
    BOOST_TEST(contains(shape_error_message([&] { io::tensor_to_image(tensor<float>::zeros({3, 3}).view()); }), "tensor_to_image"));
    BOOST_CHECK_THROW(io::tensor_to_image(t.view(), io::value_range{1.0, 1.0}), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(grid)

BOOST_AUTO_TEST_CASE(layout_and_pixel_placement) {
    // Three 4×5 grey images above their "reconstructions", gap 2, white background.
    auto originals = tensor<float>::empty({3, 1, 4, 5});
    auto recons = tensor<float>::empty({3, 1, 4, 5});
    for (std::int64_t i = 0; i < originals.numel(); ++i) {
        originals.data()[i] = -1.0f + 0.01f * static_cast<float>(i);
        recons.data()[i] = 0.5f - 0.01f * static_cast<float>(i);
    }
    const auto g = io::reconstruction_grid(originals.view(), recons.view());
    BOOST_TEST(g.channels == 1);
    BOOST_TEST(g.width == 3 * 5 + 4 * 2);
    BOOST_TEST(g.height == 2 * 4 + 3 * 2);
    // Gaps and border are background.
    BOOST_TEST(int(g.at(0, 0, 0)) == 255);
    BOOST_TEST(int(g.at(1, 9, 0)) == 255);
    BOOST_TEST(int(g.at(3, 7, 0)) == 255);  // between images 0 and 1 (columns 7, 8)
    BOOST_TEST(int(g.at(6, 3, 0)) == 255);  // between the bands (rows 6, 7)
    // Image j of band k starts at (2 + k·6, 2 + j·7).
    for (std::int64_t j = 0; j < 3; ++j)
        for (std::int64_t y = 0; y < 4; ++y)
            for (std::int64_t x = 0; x < 5; ++x) {
                BOOST_TEST(g.at(2 + y, 2 + j * 7 + x, 0) == io::detail::to_byte(originals.at(j, 0, y, x), io::symmetric_range));
                BOOST_TEST(g.at(8 + y, 2 + j * 7 + x, 0) == io::detail::to_byte(recons.at(j, 0, y, x), io::symmetric_range));
            }
}

BOOST_AUTO_TEST_CASE(columns_wrap_rgb_and_unit_range) {
    auto a = tensor<double>::full({5, 3, 2, 2}, 0.0);
    a.at(4, 1, 1, 0) = 1.0;  // image 4, green channel, pixel (1, 0)
    io::grid_options opt;
    opt.range = io::unit_range;
    opt.columns = 2;
    opt.gap = 1;
    opt.background = 77;
    const auto g = io::make_image_grid(std::vector<tensor_view<double, cpu>>{a.view(), a.slice(0, 1)}, opt);
    // Band 0: 5 images in 3 rows of 2; band 1: 1 image in one row. 2 columns.
    BOOST_TEST(g.channels == 3);
    BOOST_TEST(g.width == 2 * 2 + 3 * 1);
    BOOST_TEST(g.height == 4 * 2 + 5 * 1);
    // Image 4 is row 2, column 0: top-left (1 + 2·3, 1).
    BOOST_TEST(int(g.at(7 + 1, 1 + 0, 1)) == 255);
    BOOST_TEST(int(g.at(7 + 1, 1 + 0, 0)) == 0);
    BOOST_TEST(int(g.at(7, 4, 0)) == 77);  // the empty slot beside image 4 stays background
    BOOST_TEST(int(g.at(10, 1, 2)) == 0);  // band 1's image
    const auto layout = io::make_grid_layout({5, 1}, 2, 2, opt);
    BOOST_TEST(layout.top(0, 4) == 7);
    BOOST_TEST(layout.left(3) == 4);
    BOOST_TEST(layout.top(1, 0) == 10);
}

BOOST_AUTO_TEST_CASE(grid_file_and_shape_errors) {
    temp_dir dir("image");
    auto a = tensor<float>::full({2, 1, 3, 3}, -1.0f);
    auto b = tensor<float>::zeros({2, 1, 3, 4});
    auto c = tensor<float>::zeros({2, 2, 3, 3});
    const auto msg = shape_error_message([&] { io::reconstruction_grid(a.view(), b.view()); });
    BOOST_TEST((contains(msg, "(2, 1, 3, 3)") && contains(msg, "(2, 1, 3, 4)")), msg);
    BOOST_TEST(contains(shape_error_message([&] { io::reconstruction_grid(c.view(), c.view()); }), "2 channels"));
    io::write_reconstruction_grid(dir / "grid.png", a.view(), a.view());
    const auto back = io::read_image(dir / "grid.png");
    BOOST_TEST(back.width == 2 * 3 + 3 * 2);
    BOOST_TEST(back.height == 2 * 3 + 3 * 2);
    BOOST_TEST(int(back.at(2, 2, 0)) == 0);
    BOOST_TEST(int(back.at(1, 2, 0)) == 255);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(image_folder)

BOOST_AUTO_TEST_CASE(loads_crops_resizes_and_labels) {
    temp_dir dir("image_folder");
    fs::create_directories(dir / "shirts" / "deep");
    fs::create_directories(dir / "boots");
    // A 12×20 image whose central 12×12 square is a pattern and whose side strips are white.
    io::image wide(12, 20, 3, 255);
    const auto centre = pattern(12, 12, 3, 5);
    for (std::int64_t y = 0; y < 12; ++y)
        for (std::int64_t x = 0; x < 12; ++x)
            for (int k = 0; k < 3; ++k) wide.at(y, x + 4, k) = centre.at(y, x, k);
    io::write_png(dir / "boots" / "wide.png", wide);
    io::write_png(dir / "shirts" / "deep" / "tall.PNG", io::image(30, 18, 1, 200));  // constant grey
    write_bytes(dir / "shirts" / "photo.jpeg", encode_jpeg(io::image(16, 16, 3, 90)));
    io::write_png(dir / "top.png", pattern(12, 12, 3));
    write_bytes(dir / "notes.txt", "not an image");

    data::image_folder_options opt;
    opt.size = 12;
    const auto f = data::load_image_folder<float>(dir.path, opt);
    BOOST_REQUIRE(f.size() == 4);
    BOOST_TEST((f.data.images.shape() == tensor_shape{4, 3, 12, 12}));
    // Sorted by path: boots/wide.png, shirts/deep/tall.PNG, shirts/photo.jpeg, top.png.
    BOOST_TEST(f.files[0].filename() == "wide.png");
    BOOST_TEST(f.files[1].filename() == "tall.PNG");
    BOOST_TEST(f.files[2].filename() == "photo.jpeg");
    BOOST_TEST(f.files[3].filename() == "top.png");
    BOOST_TEST(f.classes == (std::vector<std::string>{"", "boots", "shirts"}));
    BOOST_TEST(f.data.labels == (std::vector<std::int32_t>{1, 2, 2, 0}));
    // A crop to the size keeps the central square exactly: no white from the side strips.
    const auto first = io::tensor_to_image(f.data.images[0]);
    BOOST_TEST(first.pixels == centre.pixels);
    // Grey is replicated into RGB; values lie in [−1, 1].
    BOOST_TEST(f.data.images.at(1, 2, 7, 3) == float(200 / 127.5 - 1), boost::test_tools::tolerance(1e-6f));
    for (float v : f.data.images.span()) BOOST_TEST((v >= -1.0f && v <= 1.0f));

    // Resizing: grey output, 5×5; a constant image stays constant.
    opt.size = 5;
    opt.channels = 1;
    const auto small = data::load_image_folder<double>(dir.path, opt);
    BOOST_TEST((small.data.images.shape() == tensor_shape{4, 1, 5, 5}));
    for (std::int64_t y = 0; y < 5; ++y)
        for (std::int64_t x = 0; x < 5; ++x) BOOST_TEST(std::abs(small.data.images.at(1, 0, y, x) - (200 / 127.5 - 1)) < 1.5 / 127.5);
    // The resized wide image holds no white from the strips the crop removed.
    double brightest = -1;
    for (std::int64_t i = 0; i < 25; ++i) brightest = std::max(brightest, small.data.images[0].data()[i]);
    BOOST_TEST(brightest < 0.99);

    // Without recursion only top.png is found.
    opt.recursive = false;
    BOOST_TEST(data::load_image_folder<float>(dir.path, opt).size() == 1);
    opt.channels = 2;
    BOOST_CHECK_THROW(data::load_image_folder<float>(dir.path, opt), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(empty_missing_and_unreadable) {
    temp_dir dir("image_folder");
    fs::create_directories(dir / "sub");
    write_bytes(dir / "sub" / "readme.md", "no images here");
    const auto empty = io_error_message([&] { data::load_image_folder<float>(dir.path); });
    BOOST_TEST((contains(empty, dir.path.string()) && contains(empty, "no image files")), empty);
    const auto missing = io_error_message([&] { data::load_image_folder<float>(dir / "nope"); });
    BOOST_TEST((contains(missing, "nope") && contains(missing, "no such directory")), missing);

    io::write_png(dir / "a.png", pattern(8, 8, 3));
    const auto good = io::encode_png(pattern(8, 8, 3));
    write_bytes(dir / "sub" / "broken.png", std::string(reinterpret_cast<const char*>(good.data()), good.size() / 2));
    const auto msg = io_error_message([&] { data::load_image_folder<float>(dir.path); });
    BOOST_TEST(contains(msg, (dir / "sub" / "broken.png").string()), msg);
    BOOST_TEST(contains(msg, "cannot decode"), msg);
}

BOOST_AUTO_TEST_CASE(flip_is_deterministic_and_mirrors) {
    auto batch = tensor<float>::empty({16, 2, 3, 4});
    for (std::int64_t i = 0; i < batch.numel(); ++i) batch.data()[i] = static_cast<float>(i);
    const auto original = batch.clone();

    const data::random_horizontal_flip flip{42};
    const std::int64_t flipped = flip(batch.view(), 7);
    std::int64_t expected_count = 0;
    for (std::int64_t i = 0; i < 16; ++i) {
        const bool f = flip.flips(7, i);
        expected_count += f;
        for (std::int64_t c = 0; c < 2; ++c)
            for (std::int64_t y = 0; y < 3; ++y)
                for (std::int64_t x = 0; x < 4; ++x)
                    BOOST_TEST(batch.at(i, c, y, x) == original.at(i, c, y, f ? 3 - x : x));
    }
    BOOST_TEST(flipped == expected_count);
    BOOST_TEST(flipped > 0);
    BOOST_TEST(flipped < 16);

    // The same (seed, step) flips the same images; flipping twice restores the batch.
    BOOST_TEST(data::random_horizontal_flip{42}(batch.view(), 7) == flipped);
    BOOST_TEST(batch.to_vector() == original.to_vector());

    // Other steps and seeds choose differently; about half the images flip.
    std::set<std::vector<bool>> patterns;
    std::int64_t total = 0;
    for (std::uint64_t step = 0; step < 200; ++step) {
        std::vector<bool> p;
        for (std::int64_t i = 0; i < 16; ++i) {
            p.push_back(flip.flips(step, i));
            total += p.back();
        }
        patterns.insert(p);
    }
    BOOST_TEST(patterns.size() > 190u);
    BOOST_TEST(std::abs(double(total) / 3200.0 - 0.5) < 0.03);
    std::int64_t agree = 0;
    for (std::int64_t i = 0; i < 256; ++i) agree += flip.flips(3, i) == data::random_horizontal_flip{43}.flips(3, i);
    BOOST_TEST(agree < 160);
    BOOST_TEST(agree > 96);

    BOOST_TEST((data::random_horizontal_flip{1, 0.0}(batch.view(), 3)) == 0);
    BOOST_TEST((data::random_horizontal_flip{1, 1.0}(batch.view(), 3)) == 16);
    BOOST_TEST(batch.at(0, 0, 0, 0) == original.at(0, 0, 0, 3));
    BOOST_CHECK_THROW((data::random_horizontal_flip{1, 1.5}(batch.view(), 3)), std::invalid_argument);
    BOOST_TEST(contains(shape_error_message([&] { flip(batch.reshape({16, 24}), 0); }), "random_horizontal_flip"));
}

BOOST_AUTO_TEST_SUITE_END()
