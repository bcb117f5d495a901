#define BOOST_TEST_MODULE image
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <stb_image_write.h>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/image_folder.hpp"
#include "vediff/io/image.hpp"
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
