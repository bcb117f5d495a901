#define BOOST_TEST_MODULE center_crop
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/center_crop.hpp"
#include "vediff/io/npz.hpp"
#include "vediff/io/resample.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {

// tests/fixtures/make_center_crop.py's inputs, computed again (its input_pixels and digest).
std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

io::image input_pixels(std::int64_t h, std::int64_t w, int c, std::int64_t salt) {
    const auto tri = [](std::int64_t t, std::int64_t p) { return std::min(t % p, p - t % p); };
    io::image img(h, w, c);
    for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k) {
                const std::int64_t smooth = tri(3 * y + 2 * x + 40 * k + 7 * salt, 256) + tri(x + 2 * (h - y) + 90 * k + 13 * salt, 180);
                const auto index = static_cast<std::uint64_t>(((salt * h + y) * w + x) * c + k);
                const std::int64_t noise = static_cast<std::int64_t>(mix64(index + 0x9E3779B97F4A7C15ull) % 25) - 12;
                std::int64_t v = smooth + noise;
                if (y >= h / 4 && y < h / 2 && x >= w / 5 && x < w / 2) v = 250 + noise;
                else if (y >= h / 2 && y < 3 * h / 4 && x >= w / 2 && x < 4 * w / 5) v = 4 + noise;
                img.at(y, x, k) = static_cast<std::uint8_t>(std::clamp<std::int64_t>(v, 0, 255));
            }
    return img;
}

std::uint64_t digest(const io::image& img) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < img.pixels.size(); ++i) sum += (img.pixels[i] + 1ull) * mix64(i + 1);
    return sum;
}

const io::npz_file& cases() {
    static const io::npz_file f(std::filesystem::path(VEDIFF_FIXTURE_DIR) / "center_crop" / "cases.npz");
    return f;
}

/// The names of the fixture's cases starting with prefix.
std::vector<std::string> case_names(const std::string& prefix) {
    std::vector<std::string> names;
    for (const auto& n : cases().names())
        if (n.starts_with(prefix) && n.ends_with("_spec")) names.push_back(n.substr(0, n.size() - 5));
    return names;
}

std::vector<std::int64_t> spec(const std::string& name) {
    const auto t = cases().get<std::int64_t>(name + "_spec");
    return std::vector<std::int64_t>(t.data(), t.data() + t.numel());
}

/// The case's input, checked against the digest the script stored.
io::image case_input(const std::string& name, const std::vector<std::int64_t>& s) {
    io::image img = input_pixels(s[0], s[1], static_cast<int>(s[2]), s[3]);
    const auto stored = static_cast<std::uint64_t>(cases().get<std::int64_t>(name + "_digest").data()[0]);
    BOOST_REQUIRE_MESSAGE(digest(img) == stored, name << ": the input computed here differs from make_center_crop.py's "
                                                      "(digest " << digest(img) << " against " << stored
                                                      << "); input_pixels has drifted from the script's formula");
    return img;
}

/// got equals Pillow's bytes exactly; the message gives the count and largest difference.
void expect_pillow_bytes(const std::string& name, const io::image& got) {
    const auto want = cases().get<std::uint8_t>(name + "_out");  // (H, W, C)
    BOOST_REQUIRE_MESSAGE(got.height == want.shape()[0] && got.width == want.shape()[1] && got.channels == want.shape()[2],
                          name << ": " << got.height << "×" << got.width << "×" << got.channels << " against Pillow's " << want.shape()[0]
                               << "×" << want.shape()[1] << "×" << want.shape()[2]);
    std::int64_t wrong = 0, first = -1;
    int max_diff = 0;
    for (std::int64_t i = 0; i < want.numel(); ++i) {
        const int d = std::abs(int(got.pixels[static_cast<std::size_t>(i)]) - int(want.data()[i]));
        if (d && first < 0) first = i;
        wrong += d != 0;
        max_diff = std::max(max_diff, d);
    }
    const std::int64_t c = got.channels, w = got.width;
    BOOST_CHECK_MESSAGE(wrong == 0, name << ": " << wrong << " of " << want.numel() << " bytes differ from Pillow's, max |difference| "
                                         << max_diff << ", the first at (y " << first / c / w << ", x " << first / c % w << ", channel "
                                         << first % c << ")");
}

io::resample_filter pillow_filter(std::int64_t code) {
    switch (code) {
    case 1: return io::resample_filter::lanczos;
    case 2: return io::resample_filter::bilinear;
    case 3: return io::resample_filter::bicubic;
    case 4: return io::resample_filter::box;
    }
    throw std::invalid_argument("fixture: unknown Pillow filter " + std::to_string(code));
}

/// A deterministic image whose every pixel differs from its neighbours.
io::image pattern(std::int64_t h, std::int64_t w, int c) {
    io::image img(h, w, c);
    for (std::int64_t y = 0; y < h; ++y)
        for (std::int64_t x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k) img.at(y, x, k) = static_cast<std::uint8_t>((37 * y + 11 * x * x + 101 * k) % 256);
    return img;
}

constexpr io::resample_filter all_filters[] = {io::resample_filter::box, io::resample_filter::bilinear, io::resample_filter::bicubic,
                                               io::resample_filter::lanczos};

} // namespace

BOOST_AUTO_TEST_SUITE(against_pillow)

BOOST_AUTO_TEST_CASE(adm_center_crop_matches_center_crop_arr) {
    const auto names = case_names("crop_");
    BOOST_TEST(names.size() == 9u);  // as many as make_center_crop.py's CROPS
    for (const auto& name : names) {
        const auto s = spec(name);
        expect_pillow_bytes(name, data::adm_center_crop(case_input(name, s), s[4]));
    }
}

BOOST_AUTO_TEST_CASE(resize_matches_image_resize) {
    const auto names = case_names("resize_");
    BOOST_TEST(names.size() == 11u);  // as many as make_center_crop.py's RESIZES
    for (const auto& name : names) {
        const auto s = spec(name);
        expect_pillow_bytes(name, io::resize(case_input(name, s), s[4], s[5], pillow_filter(s[6])));
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(by_hand)

// Pillow's BOX halving weighs each pair by 1/2 in 22-bit fixed point and rounds after each pass:
// every row pair to ⌊(a + b + 1)/2⌋, then those two to ⌊(r0 + r1 + 1)/2⌋. That is the 2×2 block's
// mean rounded half up where the row sums are even, and can exceed it by one where one is odd.
BOOST_AUTO_TEST_CASE(box_halving_is_the_mean_of_each_2x2_block_rounded_per_pass) {
    for (int c = 1; c <= 3; c += 2) {
        const io::image img = pattern(10, 14, c);
        const io::image half = io::resize(img, 5, 7, io::resample_filter::box);
        BOOST_REQUIRE(half.height == 5 && half.width == 7 && half.channels == c);
        int wrong = 0;
        for (std::int64_t y = 0; y < 5; ++y)
            for (std::int64_t x = 0; x < 7; ++x)
                for (int k = 0; k < c; ++k) {
                    const int r0 = (img.at(2 * y, 2 * x, k) + img.at(2 * y, 2 * x + 1, k) + 1) / 2;
                    const int r1 = (img.at(2 * y + 1, 2 * x, k) + img.at(2 * y + 1, 2 * x + 1, k) + 1) / 2;
                    wrong += half.at(y, x, k) != (r0 + r1 + 1) / 2;
                }
        BOOST_TEST(wrong == 0);
    }
    // Row sums even: the rounded mean, (10 + 20 + 30 + 42)/4 = 25.5 → 26.
    io::image even(2, 2, 1);
    even.pixels = {10, 20, 30, 42};
    BOOST_TEST(int(io::resize(even, 1, 1, io::resample_filter::box).pixels[0]) == 26);
    // Both passes round a half up: {0, 1; 0, 0} (mean 0.25) gives 1 in Pillow, as here.
    io::image halves(2, 2, 1);
    halves.pixels = {0, 1, 0, 0};
    BOOST_TEST(int(io::resize(halves, 1, 1, io::resample_filter::box).pixels[0]) == 1);
}

BOOST_AUTO_TEST_CASE(the_same_size_is_the_identity) {
    for (int c = 1; c <= 4; ++c)
        for (const auto f : all_filters) {
            const io::image img = pattern(9, 13, c);  // alpha included: no premultiplied round trip
            BOOST_TEST(io::resize(img, 9, 13, f).pixels == img.pixels, "channels " << c << ", " << io::resample_filter_name(f));
        }
    const io::image img = pattern(16, 16, 3);
    BOOST_TEST(data::adm_center_crop(img, 16).pixels == img.pixels);
}

BOOST_AUTO_TEST_CASE(a_constant_image_stays_constant) {
    for (const int v : {0, 1, 128, 254, 255})
        for (const auto f : all_filters)
            for (const auto& [h, w] : {std::pair{17, 5}, std::pair{3, 40}, std::pair{6, 6}}) {
                const io::image img(11, 12, 3, static_cast<std::uint8_t>(v));
                const io::image out = io::resize(img, h, w, f);
                BOOST_TEST((out.height == h && out.width == w && out.channels == 3));
                BOOST_TEST(std::all_of(out.pixels.begin(), out.pixels.end(), [&](std::uint8_t p) { return p == v; }),
                           "value " << v << ", " << io::resample_filter_name(f) << ", to " << h << "×" << w);
            }
}

BOOST_AUTO_TEST_CASE(center_crop_geometry) {
    // 20×45 → 10: one halving (10×22), scale 1, the columns [6, 16) of the halved image.
    const io::image img = pattern(20, 45, 3);
    const io::image halved = io::resize(img, 10, 22, io::resample_filter::box);
    const io::image crop = data::adm_center_crop(img, 10);
    BOOST_REQUIRE(crop.height == 10 && crop.width == 10 && crop.channels == 3);
    int wrong = 0;
    for (std::int64_t y = 0; y < 10; ++y)
        for (std::int64_t x = 0; x < 10; ++x)
            for (int k = 0; k < 3; ++k) wrong += crop.at(y, x, k) != halved.at(y, x + 6, k);
    BOOST_TEST(wrong == 0);
    // Smaller than the crop: enlarged (3×2 → 12×8 by bicubic), then the middle 8×8 rows [2, 10).
    const io::image small = pattern(3, 2, 1);
    const io::image up = io::resize(small, 12, 8, io::resample_filter::bicubic);
    const io::image crop_up = data::adm_center_crop(small, 8);
    BOOST_REQUIRE(crop_up.height == 8 && crop_up.width == 8);
    wrong = 0;
    for (std::int64_t y = 0; y < 8; ++y)
        for (std::int64_t x = 0; x < 8; ++x) wrong += crop_up.at(y, x, 0) != up.at(y + 2, x, 0);
    BOOST_TEST(wrong == 0);
}

// resize_and_crop computes only the window; it must hold the bytes the whole resize has there,
// whichever passes run (both, horizontal only, vertical only, none) and with alpha.
BOOST_AUTO_TEST_CASE(resize_and_crop_is_the_window_of_resize) {
    struct window {
        std::int64_t h, w, top, left, ch, cw;
    };
    const window windows[] = {{13, 29, 0, 0, 13, 29}, {13, 29, 5, 3, 4, 20}, {31, 8, 30, 7, 1, 1}, {40, 21, 2, 0, 37, 21},
                              {17, 21, 0, 10, 17, 5}, {17, 21, 3, 4, 9, 9}, {6, 50, 1, 17, 5, 30}};
    for (int c = 1; c <= 4; ++c)
        for (const auto f : all_filters) {
            const io::image img = pattern(17, 21, c);
            for (const auto& win : windows) {
                const io::image whole = io::resize(img, win.h, win.w, f);
                const io::image part = io::resize_and_crop(img, win.h, win.w, f, win.top, win.left, win.ch, win.cw);
                BOOST_REQUIRE(part.height == win.ch && part.width == win.cw && part.channels == c);
                int wrong = 0;
                for (std::int64_t y = 0; y < win.ch; ++y)
                    for (std::int64_t x = 0; x < win.cw; ++x)
                        for (int k = 0; k < c; ++k) wrong += part.at(y, x, k) != whole.at(win.top + y, win.left + x, k);
                BOOST_TEST(wrong == 0, "channels " << c << ", " << io::resample_filter_name(f) << ", " << win.h << "×" << win.w << " at ("
                                                   << win.top << ", " << win.left << ") " << win.ch << "×" << win.cw);
            }
        }
}

BOOST_AUTO_TEST_CASE(python_round_is_half_to_even) {
    BOOST_TEST(data::detail::round_half_even(52.5) == 52.0);
    BOOST_TEST(data::detail::round_half_even(53.5) == 54.0);
    BOOST_TEST(data::detail::round_half_even(0.5) == 0.0);
    BOOST_TEST(data::detail::round_half_even(2.4999999999999996) == 2.0);
    BOOST_TEST(data::detail::round_half_even(171.546) == 172.0);
    BOOST_TEST(data::detail::round_half_even(7.0) == 7.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(invalid_arguments_name_the_cause) {
    using E = std::invalid_argument;
    const io::image img = pattern(8, 8, 3);
    BOOST_TEST(contains(error_message<E>([&] { data::adm_center_crop(img, 0); }), "crop size is 0"));
    BOOST_TEST(contains(error_message<E>([&] { data::adm_center_crop(img, -3); }), "at least 1"));
    BOOST_TEST(contains(error_message<E>([&] { data::adm_center_crop(io::image{}, 4); }), "the image is empty"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize(img, 0, 5, io::resample_filter::box); }), "target size 0×5"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize(img, 5, -1, io::resample_filter::bicubic); }), "target size 5×-1"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize(io::image(0, 7, 3), 5, 5, io::resample_filter::box); }), "input image is 0×7"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize(io::image(4, 4, 5), 2, 2, io::resample_filter::box); }), "5 channels"));
    io::image short_pixels = pattern(4, 4, 3);
    short_pixels.pixels.pop_back();
    BOOST_TEST(contains(error_message<E>([&] { io::resize(short_pixels, 2, 2, io::resample_filter::box); }), "47 bytes"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize(img, 2, 2, static_cast<io::resample_filter>(9)); }), "unknown resample_filter"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize_and_crop(img, 10, 12, io::resample_filter::bicubic, 2, 3, 9, 4); }),
                        "window of 9×4 pixels at row 2, column 3 is not inside the resized 10×12"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize_and_crop(img, 10, 12, io::resample_filter::bicubic, -1, 0, 2, 2); }),
                        "at row -1"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize_and_crop(img, 10, 12, io::resample_filter::bicubic, 0, 0, 0, 2); }),
                        "window of 0×2"));
    BOOST_TEST(contains(error_message<E>([&] { io::resize_and_crop(img, 0, 12, io::resample_filter::bicubic, 0, 0, 1, 1); }),
                        "resize_and_crop: the target size 0×12"));
}

BOOST_AUTO_TEST_SUITE_END()
