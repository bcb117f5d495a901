#define BOOST_TEST_MODULE idx
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/io/idx.hpp"

#include "support/errors.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

using bytes = std::vector<std::uint8_t>;

/// An IDX file image: magic 0 0 dtype rank, big-endian extents, data.
bytes idx_bytes(std::vector<std::uint32_t> dims, const bytes& data, std::uint8_t dtype = 0x08) {
    bytes b = {0, 0, dtype, static_cast<std::uint8_t>(dims.size())};
    for (auto d : dims)
        for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<std::uint8_t>(d >> shift));
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

bytes counting(std::size_t n) {
    bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 7 + 3);
    return b;
}

void write_raw(const fs::path& p, const bytes& b) {
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void write_gz(const fs::path& p, const bytes& b) {
    gzFile f = gzopen(p.c_str(), "wb");
    BOOST_REQUIRE(f != nullptr);
    BOOST_REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
    gzclose(f);
}

bytes read_raw(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), {});
}

} // namespace

BOOST_AUTO_TEST_CASE(reads_raw_and_gzip_files) {
    temp_dir dir("idx");
    const auto images = counting(2 * 3 * 4);
    const bytes labels = {9, 0, 4};
    for (bool gz : {false, true}) {
        const auto img_path = dir / (gz ? "img.gz" : "img"), lbl_path = dir / (gz ? "lbl.gz" : "lbl");
        (gz ? write_gz : write_raw)(img_path, idx_bytes({2, 3, 4}, images));
        (gz ? write_gz : write_raw)(lbl_path, idx_bytes({3}, labels));
        const auto a = io::read_idx_images(img_path);
        BOOST_TEST((a.dims == std::vector<std::int64_t>{2, 3, 4}));
        BOOST_TEST(a.data == images);
        BOOST_TEST(a.numel() == 24);
        const auto l = io::read_idx_labels(lbl_path);
        BOOST_TEST((l.dims == std::vector<std::int64_t>{3}));
        BOOST_TEST(l.data == labels);
        BOOST_TEST(io::read_idx(img_path).dims.size() == 3u);  // any rank
    }
    // Extents that need all four bytes of a big-endian uint32.
    write_gz(dir / "wide.gz", idx_bytes({70000}, counting(70000)));
    BOOST_TEST(io::read_idx_labels(dir / "wide.gz").dims[0] == 70000);
}

BOOST_AUTO_TEST_CASE(missing_file) {
    temp_dir dir("idx");
    const auto msg = io_error_message([&] { io::read_idx(dir / "nope.gz"); });
    BOOST_TEST(contains(msg, "nope.gz"), msg);
    BOOST_TEST(contains(msg, "no such file"), msg);
}

BOOST_AUTO_TEST_CASE(truncated_data_names_both_counts) {
    temp_dir dir("idx");
    auto full = idx_bytes({2, 3, 4}, counting(24));
    full.resize(full.size() - 14);  // 10 of the 24 data bytes left
    for (bool gz : {false, true}) {
        const auto p = dir / (gz ? "short.gz" : "short");
        (gz ? write_gz : write_raw)(p, full);
        const auto msg = io_error_message([&] { io::read_idx_images(p); });
        BOOST_TEST(contains(msg, p.string()), msg);
        BOOST_TEST(contains(msg, "truncated"), msg);
        BOOST_TEST(contains(msg, "24"), msg);
        BOOST_TEST(contains(msg, "10"), msg);
    }
    // Cut inside the header, and an empty file.
    write_raw(dir / "header", bytes{0, 0, 8, 3, 0, 0});
    BOOST_TEST(contains(io_error_message([&] { io::read_idx(dir / "header"); }), "truncated"));
    write_raw(dir / "empty", bytes{});
    BOOST_TEST(contains(io_error_message([&] { io::read_idx(dir / "empty"); }), "truncated"));
}

BOOST_AUTO_TEST_CASE(truncated_gzip_stream) {
    temp_dir dir("idx");
    write_gz(dir / "whole.gz", idx_bytes({4000}, counting(4000)));
    auto gz = read_raw(dir / "whole.gz");
    gz.resize(gz.size() / 2);
    write_raw(dir / "cut.gz", gz);
    const auto msg = io_error_message([&] { io::read_idx_labels(dir / "cut.gz"); });
    BOOST_TEST(contains(msg, "cut.gz"), msg);
    BOOST_TEST(contains(msg, "truncated"), msg);
}

BOOST_AUTO_TEST_CASE(corrupt_gzip_stream) {
    temp_dir dir("idx");
    write_gz(dir / "whole.gz", idx_bytes({4000}, counting(4000)));
    auto gz = read_raw(dir / "whole.gz");
    for (std::size_t i = 20; i < gz.size() - 8; ++i) gz[i] = static_cast<std::uint8_t>(0xff - i);  // garbage deflate data
    write_raw(dir / "bad.gz", gz);
    const auto msg = io_error_message([&] { io::read_idx_labels(dir / "bad.gz"); });
    BOOST_TEST(contains(msg, "bad.gz"), msg);
    BOOST_TEST(contains(msg, "corrupt gzip stream"), msg);

    // Intact deflate data with a wrong CRC-32 in the trailer.
    auto crc = read_raw(dir / "whole.gz");
    crc[crc.size() - 8] ^= 0x5a;
    write_raw(dir / "crc.gz", crc);
    const auto msg2 = io_error_message([&] { io::read_idx_labels(dir / "crc.gz"); });
    BOOST_TEST(contains(msg2, "corrupt gzip stream"), msg2);
}

BOOST_AUTO_TEST_CASE(bad_magic_and_dtype) {
    temp_dir dir("idx");
    write_raw(dir / "text", bytes{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
    auto msg = io_error_message([&] { io::read_idx(dir / "text"); });
    BOOST_TEST(contains(msg, "text"), msg);
    BOOST_TEST(contains(msg, "bad magic 0x68656c6c"), msg);

    // A labels file where images are expected.
    write_gz(dir / "labels.gz", idx_bytes({3}, bytes{1, 2, 3}));
    msg = io_error_message([&] { io::read_idx_images(dir / "labels.gz"); });
    BOOST_TEST(contains(msg, "bad magic 0x00000801"), msg);
    BOOST_TEST(contains(msg, "0x00000803"), msg);

    write_raw(dir / "floats", idx_bytes({2}, counting(8), 0x0D));
    msg = io_error_message([&] { io::read_idx(dir / "floats"); });
    BOOST_TEST(contains(msg, "floats"), msg);
    BOOST_TEST(contains(msg, "dtype code 0x0d"), msg);
    BOOST_TEST(contains(msg, "float32"), msg);
}

BOOST_AUTO_TEST_CASE(inconsistent_dims) {
    temp_dir dir("idx");
    // More data than the extents promise.
    write_raw(dir / "long", idx_bytes({2, 2}, counting(7)));
    auto msg = io_error_message([&] { io::read_idx(dir / "long"); });
    BOOST_TEST(contains(msg, "dims inconsistent"), msg);
    BOOST_TEST(contains(msg, "long"), msg);
    // Rank 0 and rank 9.
    write_raw(dir / "rank0", idx_bytes({}, {}));
    BOOST_TEST(contains(io_error_message([&] { io::read_idx(dir / "rank0"); }), "dims inconsistent"));
    write_raw(dir / "rank9", idx_bytes({1, 1, 1, 1, 1, 1, 1, 1, 1}, {1}));
    BOOST_TEST(contains(io_error_message([&] { io::read_idx(dir / "rank9"); }), "dims inconsistent"));
    // Absurd extents are rejected before anything is allocated for them.
    write_raw(dir / "huge", idx_bytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, counting(16)));
    BOOST_TEST(contains(io_error_message([&] { io::read_idx_images(dir / "huge"); }), "dims inconsistent"));
    // Large but plausible extents over a short file: a truncation, read without a 47 MB buffer.
    write_gz(dir / "promise.gz", idx_bytes({60000, 28, 28}, counting(100)));
    msg = io_error_message([&] { io::read_idx_images(dir / "promise.gz"); });
    BOOST_TEST(contains(msg, "47040000"), msg);
    BOOST_TEST(contains(msg, "holds 100"), msg);
}

BOOST_AUTO_TEST_CASE(directory_is_not_a_file) {
    temp_dir dir("idx");
    const auto msg = io_error_message([&] { io::read_idx(dir.path); });
    BOOST_TEST(contains(msg, "directory"), msg);
}
