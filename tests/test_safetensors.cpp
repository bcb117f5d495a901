#define BOOST_TEST_MODULE safetensors
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <csignal>

#include <sys/resource.h>
#include <unistd.h>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/atomic_file.hpp"
#include "vediff/core/bfloat16.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/train/latent_cache.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const fs::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

/// A safetensors file from a header text and a data section, with the length as given.
std::string st_file(const std::string& header, const std::string& data, std::uint64_t header_len) {
    std::string s(8, '\0');
    std::memcpy(s.data(), &header_len, 8);
    return s + header + data;
}
std::string st_file(const std::string& header, const std::string& data) { return st_file(header, data, header.size()); }

/// A test-local layer with a trainable weight and bias and a fixed table.
template <class T = float>
struct toy_layer {
    using value_type = T;
    using device_type = cpu;
    nn::parameter<T, cpu> weight;
    nn::parameter<T, cpu> bias;
    nn::parameter<T, cpu> table{{2, 3}, false};

    explicit toy_layer(std::int64_t in = 3, std::int64_t out = 2) : weight({out, in}), bias({out}) {}
    tensor<T, cpu> forward(tensor<T, cpu>&&) = delete;  // the layer contract: no temporary inputs
    tensor<T, cpu> forward(const tensor_view<T, cpu>& x) { return tensor<T, cpu>::copy_of(x); }
    tensor<T, cpu> backward(const tensor_view<T, cpu>& dy) { return tensor<T, cpu>::copy_of(dy); }
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "weight"), weight);
        f(nn::join_name(prefix, "bias"), bias);
        f(nn::join_name(prefix, "pos_embed"), table);
    }
};
static_assert(nn::layer<toy_layer<>>);

} // namespace

BOOST_AUTO_TEST_SUITE(format)

BOOST_AUTO_TEST_CASE(round_trip_f32_f64_and_metadata) {
    temp_dir dir("safetensors");
    auto a = testing::random_tensor<float>({2, 3, 4}, 1);
    auto b = testing::random_tensor<double>({5}, 2);
    auto s = tensor<float>::from_host({}, {0.25f});
    auto z = tensor<double>::zeros({0, 3});
    io::safetensors_writer w;
    w.add("block.0.weight", a.view());
    w.add("b", b.view());
    w.add("scalar", s.view());
    w.add("empty", z.view());
    w.add_metadata("format", "pt");
    w.add_metadata("step", "1234");
    BOOST_CHECK_THROW(w.add("b", b.view()), std::invalid_argument);
    w.write(dir / "t.safetensors");

    // The layout: little-endian length, header padded to 8-byte alignment with spaces.
    const auto raw = read_text(dir / "t.safetensors");
    std::uint64_t n = 0;
    std::memcpy(&n, raw.data(), 8);
    BOOST_TEST(n % 8 == 0u);
    BOOST_TEST(raw[8] == '{');
    BOOST_TEST(raw.size() == 8 + n + (24 + 1) * 4 + 5 * 8);

    io::safetensors_file f(dir / "t.safetensors");
    BOOST_TEST(f.entries().size() == 4u);
    BOOST_TEST(f.entry("block.0.weight").dtype == "F32");
    BOOST_TEST(f.entry("b").dtype == "F64");
    BOOST_TEST(f.entry("scalar").shape.rank() == 0);
    BOOST_TEST(f.metadata().at("format") == "pt");
    BOOST_TEST(f.metadata().at("step") == "1234");
    BOOST_TEST(f.get<float>("block.0.weight").to_vector() == a.to_vector());
    BOOST_TEST(f.get<double>("b").to_vector() == b.to_vector());
    BOOST_TEST(f.get<float>("scalar").to_vector() == std::vector<float>{0.25f});
    BOOST_TEST((f.get<double>("empty").shape() == tensor_shape{0, 3}));
    // Conversion on load: F64 → float, F32 → double.
    const auto b_as_float = f.get<float>("b").to_vector();
    for (std::size_t i = 0; i < 5; ++i) BOOST_TEST(b_as_float[i] == static_cast<float>(b.data()[i]));
    BOOST_TEST(f.get<double>("block.0.weight").data()[7] == double(a.data()[7]));
    BOOST_TEST(contains(io_error_message([&] { f.get<float>("nope"); }), "no tensor named 'nope'"));
}

BOOST_AUTO_TEST_CASE(map_helpers) {
    temp_dir dir("safetensors");
    std::map<std::string, tensor<double>> m;
    m.emplace("x", testing::random_tensor<double>({3, 2}, 5));
    m.emplace("y", testing::random_tensor<double>({4}, 6));
    io::save_tensors(dir / "m.safetensors", m, {{"k", "v"}});
    const auto back = io::load_tensors<double>(dir / "m.safetensors");
    BOOST_TEST(back.size() == 2u);
    BOOST_TEST(back.at("x").to_vector() == m.at("x").to_vector());
    BOOST_TEST(back.at("y").to_vector() == m.at("y").to_vector());
    BOOST_TEST(io::safetensors_file(dir / "m.safetensors").metadata().at("k") == "v");
}

BOOST_AUTO_TEST_CASE(bf16_tensors_are_written_rounded_and_read_back) {
    // add_as_bf16 rounds to nearest even and stores BF16 (2 bytes a value, checksummed); the file
    // reads back as bfloat16 bit for bit and as float exactly (every bf16 is a float).
    temp_dir dir("safetensors");
    auto x = testing::random_tensor<float>({5, 7}, 9);
    x.data()[0] = 1.0f + 0x1p-8f;      // a tie: stays 1
    x.data()[1] = 1.0f + 3 * 0x1p-8f;  // a tie: up to even
    io::safetensors_writer w;
    w.add_as_bf16("x", x.view());
    w.add("y", x.view());  // F32 beside it
    w.write(dir / "b.safetensors");
    io::safetensors_file f(dir / "b.safetensors");
    BOOST_TEST(f.entry("x").dtype == "BF16");
    BOOST_TEST(f.entry("x").end - f.entry("x").begin == 2u * 35u);
    BOOST_TEST(f.checksummed());
    const auto as16 = f.get<bfloat16>("x");
    const auto as32 = f.get<float>("x");
    for (std::int64_t i = 0; i < x.numel(); ++i) {
        BOOST_TEST(as16.data()[i].bits == bfloat16(x.data()[i]).bits);
        BOOST_TEST(as32.data()[i] == static_cast<float>(bfloat16(x.data()[i])));
    }
    BOOST_TEST(as32.data()[0] == 1.0f);
    BOOST_TEST(as32.data()[1] == 1.0f + 0x1p-6f);
    // An F32 tensor read as bfloat16 rounds the same way.
    const auto y16 = f.get<bfloat16>("y");
    for (std::int64_t i = 0; i < x.numel(); ++i) BOOST_TEST(y16.data()[i].bits == bfloat16(x.data()[i]).bits);
    BOOST_TEST(f.view<bfloat16>("x").data()[3].bits == bfloat16(x.data()[3]).bits);  // in place, no copy
}

BOOST_AUTO_TEST_CASE(reads_an_independently_written_file) {
    // Bytes assembled by tests/fixtures/make_optim.py with struct and json, not by vediff.
    temp_dir dir("safetensors");
    const auto fx = testing::load_fixture("optim.txt");
    const auto bytes = fx.get<double>("safetensors.bytes");
    std::string raw;
    for (auto v : bytes.span()) raw.push_back(static_cast<char>(static_cast<std::uint8_t>(v)));
    write_text(dir / "py.safetensors", raw);
    io::safetensors_file f(dir / "py.safetensors");
    BOOST_TEST(f.metadata().at("format") == "pt");
    BOOST_TEST(f.entry("c.f16").dtype == "F16");
    BOOST_TEST(f.entry("d.bf16").dtype == "BF16");
    for (std::string name : {"a.f32", "b.f64", "c.f16", "d.bf16", "e.scalar"}) {
        const auto expected = fx.get<double>("safetensors." + name);
        // Every value converts exactly (F16 and BF16 widen to float without rounding).
        BOOST_TEST(f.get<double>(name).to_vector() == expected.to_vector(), name);
        BOOST_TEST(f.get<float>(name).to_vector() == fx.get<float>("safetensors." + name).to_vector(), name << " as float");
    }
}

BOOST_AUTO_TEST_CASE(half_and_bfloat16_conversion) {
    using io::detail::bfloat16_to_float;
    using io::detail::half_to_float;
    BOOST_TEST(half_to_float(0x3c00) == 1.0f);
    BOOST_TEST(half_to_float(0xc000) == -2.0f);
    BOOST_TEST(half_to_float(0x7bff) == 65504.0f);
    BOOST_TEST(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    BOOST_TEST(half_to_float(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
    BOOST_TEST(std::isinf(half_to_float(0xfc00)));
    BOOST_TEST(std::isnan(half_to_float(0x7e00)));
    BOOST_TEST(std::signbit(half_to_float(0x8000)));
    BOOST_TEST(bfloat16_to_float(0x3f80) == 1.0f);
    BOOST_TEST(bfloat16_to_float(0xc049) == -3.140625f);
}

// A mapped file hands out its tensors in place: the values are the file's, a view needs the
// tensor's own dtype, and writing through a view never reaches the file (the mapping is private).
BOOST_AUTO_TEST_CASE(mapped_views_are_the_files_values_in_place) {
    temp_dir dir("safetensors_map");
    const auto path = dir / "t.safetensors";
    io::safetensors_writer w;
    w.add("a", tensor<float>::from_host({2, 3}, {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f}).view());
    w.add("b", tensor<double>::from_host({3}, {0.1, 0.2, 0.3}).view());
    w.add("c", tensor<std::int32_t>::from_host({3}, {4, -5, 6}).view());
    w.write(path);

    const io::safetensors_file mapped(path, io::safetensors_access::map);
    const io::safetensors_file read(path);
    const auto a = mapped.view<float>("a");
    BOOST_TEST(a.shape() == (tensor_shape{2, 3}));
    BOOST_TEST(a.to_vector() == read.get<float>("a").to_vector(), boost::test_tools::per_element());
    BOOST_TEST(mapped.view<double>("b").to_vector() == read.get<double>("b").to_vector(), boost::test_tools::per_element());
    BOOST_TEST(mapped.view<std::int32_t>("c").to_vector() == (std::vector<std::int32_t>{4, -5, 6}), boost::test_tools::per_element());
    // get() converts from a mapped file as from a read one.
    BOOST_TEST(mapped.get<double>("a").to_vector() == read.get<double>("a").to_vector(), boost::test_tools::per_element());

    const auto wrong = io_error_message([&] { (void)mapped.view<double>("a"); });
    BOOST_TEST(contains(wrong, "tensor 'a' is F32; it can be used in place only as F64"), wrong);

    a.data()[0] = 99.0f;  // this process's copy of the page only
    BOOST_TEST(mapped.view<float>("a").data()[0] == 99.0f);
    BOOST_TEST(io::safetensors_file(path).get<float>("a").data()[0] == 1.5f);
}

namespace {
/// This process's resident memory (VmRSS), in bytes.
std::int64_t resident_bytes() {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    throw std::runtime_error("no VmRSS in /proc/self/status");
}
} // namespace

// Loading a latent cache must not copy it (an ImageNet cache is larger than memory): the
// resident memory grows by far less than the cache's 48 MiB until batches touch its pages, and
// the latents read through the mapping are the ones written.
BOOST_AUTO_TEST_CASE(a_loaded_latent_cache_maps_its_latents_instead_of_copying_them) {
    temp_dir dir("latent_cache_map");
    const auto path = dir / "latents.safetensors";
    const std::int64_t n = 3072;
    {
        train::latent_cache cache;
        tensor<float> z({n, 4, 32, 32});
        for (std::int64_t i = 0; i < z.numel(); ++i) z.data()[i] = float(i % 1000) * 0.001f;
        cache.adopt_latents(std::move(z));
        for (std::int64_t i = 0; i < n; ++i) cache.labels.push_back(std::int32_t(i % 10));
        cache.channel_mean.assign(4, 0.5);
        cache.channel_std.assign(4, 0.25);
        cache.tokenizer = "synthetic";
        train::save_latent_cache(path, cache);
    }
    const auto before = resident_bytes();
    const auto cache = train::load_latent_cache(path);
    const auto growth = resident_bytes() - before;
    const std::int64_t cache_bytes = n * 4 * 32 * 32 * 4;
    BOOST_TEST(cache_bytes == 48 << 20);
    BOOST_TEST(growth < cache_bytes / 8, "resident memory grew by " << growth << " bytes loading a " << cache_bytes << "-byte cache");
    BOOST_TEST(cache.latents.shape() == (tensor_shape{n, 4, 32, 32}));
    for (const std::int64_t i : {std::int64_t{0}, std::int64_t{12345}, cache.latents.numel() - 1})
        BOOST_TEST(cache.latents.data()[i] == float(i % 1000) * 0.001f);
    BOOST_TEST(cache.labels[7] == 7);
    BOOST_TEST(cache.channel_std[2] == 0.25);
}

// Integrity (issue 19): every file vediff writes carries XXH3 checksums of each tensor and of the
// other metadata; one flipped bit anywhere in the data or a changed metadata value is an io_error
// naming the file and the tensor, in read and in map access. A file without them (as PyTorch
// writes) loads unverified, and says so through checksummed().
BOOST_AUTO_TEST_CASE(a_flipped_bit_fails_the_checksum_of_its_tensor) {
    temp_dir dir("checksums");
    const auto path = dir / "t.safetensors";
    std::map<std::string, tensor<float>> tensors;
    tensors.emplace("a", random_tensor<float>({3, 5}, 1));
    tensors.emplace("b", random_tensor<float>({7}, 2));
    io::save_tensors(path, tensors, {{"note", "x"}});
    BOOST_TEST(io::safetensors_file(path).checksummed());
    BOOST_TEST(io::safetensors_file(path, io::safetensors_access::map).checksummed());
    const std::string good = read_text(path);
    const io::safetensors_file intact(path);
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, good.data(), 8);
    const std::size_t data = 8 + header_len;
    for (const auto& [name, at] : {std::pair{"a", intact.entry("a").begin}, std::pair{"a", intact.entry("a").end - 1},
                                   std::pair{"b", intact.entry("b").begin + 9}, std::pair{"b", intact.entry("b").end - 1}}) {
        for (const int bit : {0, 7}) {
            std::string bad = good;
            bad[data + at] = char(bad[data + at] ^ (1 << bit));
            write_text(path, bad);
            for (const auto access : {io::safetensors_access::read, io::safetensors_access::map}) {
                const auto msg = io_error_message([&] { io::safetensors_file f(path, access); });
                BOOST_TEST((contains(msg, path.string()) && contains(msg, fmt::format("tensor '{}' fails its checksum", name))), msg);
            }
        }
    }
    std::string changed = good;
    const auto note = changed.find("\"note\":\"x\"");
    BOOST_TEST_REQUIRE(note != std::string::npos);
    changed[note + 8] = 'y';
    write_text(path, changed);
    auto msg = io_error_message([&] { io::safetensors_file f(path); });
    BOOST_TEST(contains(msg, "the metadata fails its checksum"), msg);

    // Without checksums (the header as PyTorch's save_file writes it): loads, unverified.
    const std::string bytes(8, '\1');
    write_text(path, io::safetensors_header({{"c", "F32", tensor_shape{2}}}, {{"format", "pt"}}) + bytes);
    const io::safetensors_file plain(path);
    BOOST_TEST(!plain.checksummed());
    BOOST_TEST(plain.get<float>("c").numel() == 2);

    // The key is the writer's own, and a checksum of a tensor that is not there is named.
    io::safetensors_writer w;
    msg = error_message<std::invalid_argument>([&] { w.add_metadata(std::string(io::checksum_metadata_key), "{}"); });
    BOOST_TEST(contains(msg, "reserved"), msg);
    write_text(path, io::safetensors_header({{"c", "F32", tensor_shape{2}}},
                                            {{std::string(io::checksum_metadata_key), R"({"c":"0000000000000000","d":"0000000000000000"})"}}) +
                         bytes);
    msg = io_error_message([&] { io::safetensors_file f(path); });
    BOOST_TEST(contains(msg, "a checksum for 'd', which is not a tensor of the file"), msg);
}

// The streamed latent cache writes its header before the data and its checksums after it: the
// file verifies, and a flipped bit in the latents is found on loading.
BOOST_AUTO_TEST_CASE(a_streamed_latent_cache_carries_checksums) {
    temp_dir dir("latent_cache_checksums");
    const auto path = dir / "latents.safetensors";
    (void)train::write_latent_cache(path, 6, tensor_shape{2, 3, 3}, "tok", "{}", [](auto&& append) {
        for (int b = 0; b < 3; ++b) {
            const auto z = random_tensor<float>({2, 2, 3, 3}, std::uint64_t(10 + b));
            const std::vector<std::int32_t> labels{b, b + 1};
            append(z.view(), std::span<const std::int32_t>(labels));
        }
    });
    const io::safetensors_file f(path);
    BOOST_TEST(f.checksummed());
    BOOST_TEST(train::load_latent_cache(path).size() == 6);
    std::string bad = read_text(path);
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, bad.data(), 8);
    bad[8 + header_len + f.entry("latents").begin + 17] ^= 0x04;
    write_text(path, bad);
    const auto msg = io_error_message([&] { (void)train::load_latent_cache(path); });
    BOOST_TEST((contains(msg, path.string()) && contains(msg, "tensor 'latents' fails its checksum")), msg);
}

// A full disk while a latent cache streams in (injected as RLIMIT_FSIZE): a named error, the cache
// written before at the same path untouched, no temporary left.
BOOST_AUTO_TEST_CASE(a_full_disk_leaves_the_earlier_cache) {
    temp_dir dir("latent_cache_full_disk");
    const auto path = dir / "latents.safetensors";
    const auto write = [&](std::int64_t n) {
        (void)train::write_latent_cache(path, n, tensor_shape{4, 8, 8}, "tok", "{}", [&](auto&& append) {
            for (std::int64_t b = 0; b < n / 16; ++b) {
                const auto z = random_tensor<float>({16, 4, 8, 8}, std::uint64_t(b));
                const std::vector<std::int32_t> labels(16, 1);
                append(z.view(), std::span<const std::int32_t>(labels));
            }
        });
    };
    write(32);
    const std::string earlier = read_text(path);
    rlimit saved{};
    BOOST_TEST_REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto previous_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = saved;
    small.rlim_cur = 20000;  // 1.5 batches of 16 KiB
    BOOST_TEST_REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    const auto msg = io_error_message([&] { write(64); });
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, previous_handler);
    BOOST_TEST((contains(msg, path.string()) && contains(msg, "write failed")), msg);
    BOOST_TEST(read_text(path) == earlier);
    BOOST_TEST(static_cast<std::size_t>(std::distance(fs::directory_iterator(dir.path), {})) == 1u);
    BOOST_TEST(train::load_latent_cache(path).size() == 32);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(malformed)

// Each case: the file content and a phrase its error must contain; every message names the file.
BOOST_AUTO_TEST_CASE(each_problem_is_a_named_io_error) {
    temp_dir dir("safetensors");
    const std::string f32x2 = std::string(8, '\1');  // two F32 values
    const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    struct bad_case {
        std::string name, content, phrase;
    };
    const std::vector<bad_case> cases = {
        {"short", std::string("\x10\0\0", 3), "shorter than the 8-byte header length"},
        {"long_header", st_file("{" + ok_entry + "}", f32x2, 1000), "header length 1000 exceeds"},
        {"bad_json", st_file(R"({"a":{"dtype":"F32",)", ""), "malformed JSON header"},
        {"empty_header", st_file("", ""), "malformed JSON header"},
        {"array_header", st_file("[1, 2]  ", ""), "not an object"},
        {"unknown_dtype", st_file(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", f32x2), "unknown dtype 'Q4'"},
        {"out_of_range", st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f32x2), "out of range"},
        {"size_mismatch", st_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", f32x2), "needs 16"},
        {"reversed", st_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", f32x2), "end before they begin"},
        {"overlap", st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2),
         "overlap"},
        {"gap", st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", f32x2), "gap"},
        {"trailing", st_file("{" + ok_entry + "}", f32x2 + "xxxx"), "the tensors cover 8"},
        {"negative_shape", st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f32x2), "not a non-negative integer"},
        {"no_offsets", st_file(R"({"a":{"dtype":"F32","shape":[2]}})", f32x2), "data_offsets"},
        {"bad_metadata", st_file(R"({"__metadata__":{"step":3}})", ""), "not a string"},
        {"rank6", st_file(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,2],"data_offsets":[0,8]}})", f32x2), "rank 6"},
    };
    for (const auto& c : cases) {
        const auto path = dir / (c.name + ".safetensors");
        write_text(path, c.content);
        for (const auto access : {io::safetensors_access::read, io::safetensors_access::map}) {
            const auto msg = io_error_message([&] { io::safetensors_file f(path, access); });
            BOOST_TEST(contains(msg, path.string()), c.name << ": " << msg);
            BOOST_TEST(contains(msg, c.phrase), c.name << ": " << msg);
        }
    }
    // Mapping has failures of its own: an empty file cannot be mapped, a directory is no file.
    write_text(dir / "empty.safetensors", "");
    const auto empty = io_error_message([&] { io::safetensors_file f(dir / "empty.safetensors", io::safetensors_access::map); });
    BOOST_TEST(contains(empty, "file is 0 bytes"), empty);
    fs::create_directories(dir / "folder.safetensors");
    const auto folder = io_error_message([&] { io::safetensors_file f(dir / "folder.safetensors", io::safetensors_access::map); });
    BOOST_TEST(contains(folder, "folder.safetensors: not a regular file"), folder);
    // The same header, well-formed, loads: the cases above fail for their stated reason.
    write_text(dir / "good.safetensors", st_file("{" + ok_entry + "}", f32x2));
    BOOST_TEST(io::safetensors_file(dir / "good.safetensors").entry("a").shape == tensor_shape{2});
    const auto missing = io_error_message([&] { io::safetensors_file f(dir / "absent.safetensors"); });
    BOOST_TEST(contains(missing, "absent.safetensors"), missing);
    BOOST_TEST(contains(missing, "No such file"), missing);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(state_dict)

BOOST_AUTO_TEST_CASE(round_trip_includes_fixed_parameters) {
    temp_dir dir("safetensors");
    toy_layer<float> a;
    testing::randomize_parameters(a, 11);
    io::save_state_dict(dir / "model.safetensors", a, {{"epoch", "3"}});
    BOOST_TEST(io::safetensors_file(dir / "model.safetensors").contains("pos_embed"));
    toy_layer<float> b;
    const auto meta = io::load_state_dict(dir / "model.safetensors", b);
    BOOST_TEST(meta.at("epoch") == "3");
    BOOST_TEST(b.weight.value.to_vector() == a.weight.value.to_vector());
    BOOST_TEST(b.bias.value.to_vector() == a.bias.value.to_vector());
    BOOST_TEST(b.table.value.to_vector() == a.table.value.to_vector());
    // A double model reads the float checkpoint, converting.
    toy_layer<double> c;
    io::load_state_dict(dir / "model.safetensors", c);
    BOOST_TEST(c.weight.value.data()[1] == double(a.weight.value.data()[1]));
}

BOOST_AUTO_TEST_CASE(shape_mismatch_names_file_tensor_and_shapes) {
    temp_dir dir("safetensors");
    toy_layer<float> saved(3, 2);
    io::save_state_dict(dir / "model.safetensors", saved);
    toy_layer<float> other(5, 2);
    ops::fill(other.weight.value.view(), 7.0f);
    ops::fill(other.bias.value.view(), 7.0f);
    const auto msg = io_error_message([&] { io::load_state_dict(dir / "model.safetensors", other); });
    BOOST_TEST(contains(msg, (dir / "model.safetensors").string()), msg);
    BOOST_TEST(contains(msg, "'weight'"), msg);
    BOOST_TEST(contains(msg, "(2, 3)"), msg);
    BOOST_TEST(contains(msg, "(2, 5)"), msg);
    BOOST_TEST(!contains(msg, "'bias'"), msg);
    // Nothing was loaded: not even the bias, whose shape fits.
    for (auto v : other.bias.value.span()) BOOST_TEST(v == 7.0f);
}

BOOST_AUTO_TEST_CASE(missing_and_unexpected_tensors) {
    temp_dir dir("safetensors");
    auto w = testing::random_tensor<float>({2, 3}, 1);
    auto bias = testing::random_tensor<float>({2}, 2);
    auto t = testing::random_tensor<float>({2, 3}, 3);
    auto extra = testing::random_tensor<float>({4}, 4);
    std::map<std::string, tensor<float>> m;
    m.emplace("weight", w.clone());
    m.emplace("pos_embed", t.clone());
    io::save_tensors(dir / "missing.safetensors", m);
    toy_layer<float> l;
    auto msg = io_error_message([&] { io::load_state_dict(dir / "missing.safetensors", l); });
    BOOST_TEST(contains(msg, "'bias' (2) is missing"), msg);

    m.emplace("bias", bias.clone());
    m.emplace("decoder.extra", extra.clone());
    m.emplace("head.w", extra.clone());
    io::save_tensors(dir / "extra.safetensors", m);
    msg = io_error_message([&] { io::load_state_dict(dir / "extra.safetensors", l); });
    BOOST_TEST(contains(msg, "unexpected tensors"), msg);
    BOOST_TEST(contains(msg, "'decoder.extra', 'head.w'"), msg);
    io::load_state_dict(dir / "extra.safetensors", l, /*strict=*/false);
    BOOST_TEST(l.weight.value.to_vector() == w.to_vector());
    BOOST_TEST(l.bias.value.to_vector() == bias.to_vector());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(atomic_write)

BOOST_AUTO_TEST_CASE(failed_writer_leaves_the_old_file) {
    temp_dir dir("safetensors");
    const auto target = dir / "checkpoint.safetensors";
    write_text(target, "old contents");
    BOOST_CHECK_THROW(io::write_file_atomically(target, [](io::atomic_file& f) {
                          f.write("half of the new contents");
                          throw std::runtime_error("disk full, say");
                      }),
                      std::runtime_error);
    BOOST_TEST(read_text(target) == "old contents");
    // The temporary is gone: the directory holds only the target.
    BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

    io::write_file_atomically(target, [](io::atomic_file& f) {
        BOOST_TEST(f.temp_path().string() == f.target().string() + ".tmp." + std::to_string(::getpid()));
        BOOST_TEST(fs::exists(f.temp_path()));
        f.write("new contents");
    });
    BOOST_TEST(read_text(target) == "new contents");
    BOOST_TEST(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
}

BOOST_AUTO_TEST_CASE(save_over_an_existing_checkpoint_and_unwritable_path) {
    temp_dir dir("safetensors");
    toy_layer<float> a, b;
    testing::randomize_parameters(a, 1);
    testing::randomize_parameters(b, 2);
    io::save_state_dict(dir / "m.safetensors", a);
    io::save_state_dict(dir / "m.safetensors", b);
    toy_layer<float> c;
    io::load_state_dict(dir / "m.safetensors", c);
    BOOST_TEST(c.weight.value.to_vector() == b.weight.value.to_vector());
    const auto msg = io_error_message([&] { io::save_state_dict(dir / "no_such_dir" / "m.safetensors", a); });
    BOOST_TEST(contains(msg, "no_such_dir"), msg);
    BOOST_TEST(contains(msg, "No such file or directory"), msg);
}

BOOST_AUTO_TEST_SUITE_END()
