#define BOOST_TEST_MODULE npz
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/npz.hpp"
#include "vediff/metrics/frechet.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

std::filesystem::path npz_fixture(const std::string& name) { return std::filesystem::path(VEDIFF_FIXTURE_DIR) / "npz" / name; }

const fixture& arrays() {
    static const fixture f = load_fixture("npz/arrays.txt");
    return f;
}

/// Every element of t equals the fixture's value (converted to T as the reader converts).
template <class T>
void expect_equal(const tensor<T>& t, const tensor<double>& expected, const std::string& what) {
    BOOST_TEST_CONTEXT(what) {
        BOOST_TEST(t.shape() == expected.shape());
        std::int64_t wrong = 0;
        for (std::int64_t i = 0; i < expected.numel(); ++i) wrong += t.data()[i] != static_cast<T>(expected.data()[i]);
        BOOST_TEST(wrong == 0);
    }
}

std::string file_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out << bytes;
}

} // namespace

BOOST_AUTO_TEST_SUITE(reading)

BOOST_AUTO_TEST_CASE(numpy_savez_stored_and_compressed) {
    for (const char* name : {"arrays_stored.npz", "arrays_compressed.npz"}) {
        BOOST_TEST_CONTEXT(name) {
            const io::npz_file file(npz_fixture(name));
            BOOST_TEST(file.names() == (std::vector<std::string>{"f4", "f8", "u1", "i4", "i8", "scalar", "empty"}), tt::per_element());
            expect_equal(file.get<float>("f4"), arrays().get("f4"), "f4 as float");
            expect_equal(file.get<double>("f8"), arrays().get("f8"), "f8 as double");
            expect_equal(file.get<std::uint8_t>("u1"), arrays().get("u1"), "u1 as uint8");
            expect_equal(file.get<std::int32_t>("i4"), arrays().get("i4"), "i4 as int32");
            expect_equal(file.get<std::int64_t>("i8"), arrays().get("i8"), "i8 as int64");
            // Conversions: integers and floats to double, f8 to float.
            expect_equal(file.get<double>("u1"), arrays().get("u1"), "u1 as double");
            expect_equal(file.get<double>("i8"), arrays().get("i8"), "i8 as double");
            expect_equal(file.get<float>("f8"), arrays().get("f8"), "f8 as float");
            expect_equal(file.get<std::int64_t>("i4"), arrays().get("i4"), "i4 as int64");
            const auto scalar = file.get<double>("scalar");
            BOOST_TEST(scalar.rank() == 0);
            BOOST_TEST(scalar.data()[0] == -0.125);
            const auto empty = file.get<float>("empty");
            BOOST_TEST((empty.shape() == tensor_shape{0, 3}));
        }
    }
}

BOOST_AUTO_TEST_CASE(npy_versions_1_2_and_3) {
    const io::npz_file file(npz_fixture("versions.npz"));
    for (const char* name : {"v1", "v2", "v3"}) expect_equal(file.get<float>(name), arrays().get("f4"), name);
}

BOOST_AUTO_TEST_CASE(header_without_data) {
    const io::npz_file file(npz_fixture("arrays_compressed.npz"));
    const auto h = file.header("u1");
    BOOST_TEST((h.dtype == io::npy_dtype::uint8));
    BOOST_TEST((h.shape == tensor_shape{2, 3, 3}));
    BOOST_TEST(h.data_offset % 64 == 0);  // numpy pads its headers to 64 bytes
    BOOST_TEST((file.header("i8").dtype == io::npy_dtype::int64));
}

BOOST_AUTO_TEST_CASE(integer_requests_refuse_floats_and_out_of_range_values) {
    const io::npz_file file(npz_fixture("arrays_stored.npz"));
    const auto floats = io_error_message([&] { (void)file.get<std::uint8_t>("f4"); });
    BOOST_TEST(contains(floats, "'f4.npy'"), floats);
    BOOST_TEST(contains(floats, "<f4"), floats);
    // i8 holds −2⁵² − 3 at element 0, which int32 cannot hold.
    const auto range = io_error_message([&] { (void)file.get<std::int32_t>("i8"); });
    BOOST_TEST(contains(range, "element 0"), range);
    BOOST_TEST(contains(range, "out of range"), range);
    const auto negative = io_error_message([&] { (void)file.get<std::uint8_t>("i4"); });
    BOOST_TEST(contains(negative, "-2147483648"), negative);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(broken_files)

BOOST_AUTO_TEST_CASE(missing_member_names_what_is_there) {
    const io::npz_file file(npz_fixture("fid_stats.npz"));
    const auto msg = io_error_message([&] { (void)file.get<double>("mu_s"); });
    BOOST_TEST(contains(msg, "fid_stats.npz"), msg);
    BOOST_TEST(contains(msg, "'mu_s'"), msg);
    BOOST_TEST(contains(msg, "mu, sigma, features"), msg);
}

BOOST_AUTO_TEST_CASE(broken_members_name_file_member_and_cause) {
    const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
        {"bad_truncated_data.npz", {"needs 48 bytes", "holds 20"}},
        {"bad_huge_shape.npz", {"(1000000, 1000000)", "needs 8000000000000 bytes", "holds 16"}},
        {"bad_magic.npz", {"bad magic"}},
        {"bad_header_length.npz", {"truncated", "32767"}},
        {"bad_version.npz", {"version 4.0"}},
        {"bad_dtype.npz", {"unsupported dtype '>f4'"}},
        {"bad_structured.npz", {"unsupported dtype"}},
        {"bad_fortran.npz", {"fortran_order"}},
        {"bad_extra_data.npz", {"needs 48 bytes", "holds 56"}},
        {"bad_deflate.npz", {"cannot read its data"}},
    };
    for (const auto& [name, parts] : cases) {
        BOOST_TEST_CONTEXT(name) {
            const io::npz_file file(npz_fixture(name));
            const auto msg = io_error_message([&] { (void)file.get<double>("x"); });
            BOOST_TEST(contains(msg, name), msg);
            BOOST_TEST(contains(msg, "member 'x.npy'"), msg);
            for (const auto& part : parts) BOOST_TEST(contains(msg, part), msg);
        }
    }
}

BOOST_AUTO_TEST_CASE(truncated_empty_and_foreign_files) {
    temp_dir dir("npz_errors");
    const std::string whole = file_bytes(npz_fixture("arrays_compressed.npz"));
    for (std::size_t keep : {whole.size() - 1, whole.size() / 2, std::size_t{30}, std::size_t{0}}) {
        BOOST_TEST_CONTEXT(keep << " of " << whole.size() << " bytes") {
            write_bytes(dir / "cut.npz", whole.substr(0, keep));
            const auto msg = io_error_message([&] { io::npz_file file(dir / "cut.npz"); });
            BOOST_TEST(contains(msg, "cut.npz"), msg);
            BOOST_TEST(contains(msg, "not a readable zip archive"), msg);
        }
    }
    write_bytes(dir / "text.npz", "mu,sigma\n1,2\n");
    BOOST_TEST(contains(io_error_message([&] { io::npz_file file(dir / "text.npz"); }), "not a readable zip archive"));
    const auto missing = io_error_message([&] { io::npz_file file(dir / "absent.npz"); });
    BOOST_TEST(contains(missing, "absent.npz"), missing);
    BOOST_TEST(contains(missing, "cannot open"), missing);
    BOOST_TEST(contains(io_error_message([&] { io::npz_file file(dir.path); }), "directory"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(writing)

BOOST_AUTO_TEST_CASE(writer_round_trip_stored_and_deflated) {
    temp_dir dir("npz_write");
    const auto f4 = tensor<float>::from_host({2, 3}, {1.5f, -2.25f, 3e-8f, 0.0f, -0.0f, 65504.0f});
    const auto f8 = tensor<double>::from_host({5}, {0.1, -1e300, 3.0, std::numeric_limits<double>::denorm_min(), 7.0});
    const auto u1 = tensor<std::uint8_t>::from_host({2, 2}, {0, 1, 128, 255});
    const auto i4 = tensor<std::int32_t>::from_host({3}, {std::numeric_limits<std::int32_t>::min(), -1, 42});
    const auto i8 = tensor<std::int64_t>::from_host(tensor_shape{}, {std::int64_t{1} << 62});
    io::npz_writer w;
    w.add("f4", f4.view());
    w.add("f8", f8.view());
    w.add("u1", u1.view());
    w.add("i4", i4.view());
    w.add("i8", i8.view());
    BOOST_CHECK_THROW(w.add("f4", f4.view()), std::invalid_argument);
    for (auto compression : {io::npz_compression::stored, io::npz_compression::deflated}) {
        const auto path = dir / (compression == io::npz_compression::stored ? "stored.npz" : "deflated.npz");
        w.write(path, compression);
        const io::npz_file file(path);
        BOOST_TEST(file.names() == (std::vector<std::string>{"f4", "f8", "u1", "i4", "i8"}), tt::per_element());
        BOOST_TEST(file.get<float>("f4").to_vector() == f4.to_vector(), tt::per_element());
        BOOST_TEST(file.get<double>("f8").to_vector() == f8.to_vector(), tt::per_element());
        BOOST_TEST(file.get<std::uint8_t>("u1").to_vector() == u1.to_vector(), tt::per_element());
        BOOST_TEST(file.get<std::int32_t>("i4").to_vector() == i4.to_vector(), tt::per_element());
        const auto big = file.get<std::int64_t>("i8");
        BOOST_TEST(big.rank() == 0);
        BOOST_TEST(big.data()[0] == std::int64_t{1} << 62);
        BOOST_TEST(file.header("f8").data_offset % 64 == 0);
        const std::string raw = file_bytes(path);
        BOOST_TEST(raw.substr(0, 4) == std::string("PK\x03\x04", 4));
        // A stored archive holds the .npy headers verbatim, in numpy's own spelling.
        if (compression == io::npz_compression::stored) {
            BOOST_TEST(contains(raw, "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }"));
            BOOST_TEST(contains(raw, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2), }"));
            BOOST_TEST(contains(raw, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }"));
        }
    }
    // The deflated archive is smaller for compressible data.
    io::npz_writer zeros;
    zeros.add("z", tensor<double>::zeros({1000}).view());
    zeros.write(dir / "zs.npz", io::npz_compression::stored);
    zeros.write(dir / "zd.npz", io::npz_compression::deflated);
    BOOST_TEST(std::filesystem::file_size(dir / "zd.npz") * 10 < std::filesystem::file_size(dir / "zs.npz"));
}

BOOST_AUTO_TEST_CASE(samples_as_adm_writes_them) {
    temp_dir dir("npz_samples");
    // Two grey 2×3 images: the quantization's corners, and values beyond [−1, 1].
    const std::vector<float> grey = {-1.0f, 1.0f, 0.0f, 0.5f, -0.999f, 0.999f,  //
                                     1.5f, -2.0f, 0.003922f, -0.5f, 0.25f, 0.9961f};
    // (v + 1)·127.5, truncated (ADM) and rounded half up (vediff's metrics, DiT).
    const std::vector<int> truncated = {0, 255, 127, 191, 0, 254, 255, 0, 128, 63, 159, 254};
    const std::vector<int> rounded = {0, 255, 128, 191, 0, 255, 255, 0, 128, 64, 159, 255};
    const auto images = tensor<float>::from_host({2, 1, 2, 3}, grey);
    for (auto q : {io::sample_quantization::adm_truncate, io::sample_quantization::round_half_up}) {
        const auto& expected = q == io::sample_quantization::adm_truncate ? truncated : rounded;
        io::save_samples_npz(dir / "grey.npz", images.view(), q);
        const io::npz_file file(dir / "grey.npz");
        BOOST_TEST(file.names() == std::vector<std::string>{"arr_0"}, tt::per_element());
        const auto bytes = file.get<std::uint8_t>("arr_0");
        BOOST_TEST((bytes.shape() == tensor_shape{2, 2, 3, 3}));
        for (std::size_t p = 0; p < grey.size(); ++p)
            for (int k = 0; k < 3; ++k)
                BOOST_TEST(int(bytes.data()[p * 3 + std::size_t(k)]) == expected[p], "pixel " << p << " channel " << k << " of " << grey[p]);
    }
    // Colour (N, 3, H, W) goes to (N, H, W, 3), rounded half up by default; labels to arr_1 int64.
    const auto rgb = tensor<double>::from_host({1, 3, 1, 2}, {-1.0, 1.0, 0.0, 0.5, 1.0, -1.0});
    const auto labels = tensor<std::int32_t>::from_host({1}, {7});
    io::save_samples_npz(dir / "rgb.npz", rgb.view(), labels.view());
    const io::npz_file file(dir / "rgb.npz");
    BOOST_TEST(file.get<std::uint8_t>("arr_0").to_vector() == (std::vector<std::uint8_t>{0, 128, 255, 255, 191, 0}), tt::per_element());
    BOOST_TEST((file.header("arr_1").dtype == io::npy_dtype::int64));
    BOOST_TEST(file.get<std::int64_t>("arr_1").data()[0] == 7);
    BOOST_TEST(io::load_image_batch_npz(dir / "rgb.npz").to_vector() == file.get<std::uint8_t>("arr_0").to_vector(), tt::per_element());
}

BOOST_AUTO_TEST_CASE(samples_refuse_nan_and_wrong_shapes_and_leave_no_file) {
    temp_dir dir("npz_samples_bad");
    auto images = tensor<float>::zeros({3, 1, 2, 2});
    images.at(2, 0, 1, 0) = std::numeric_limits<float>::quiet_NaN();
    const auto msg = error_message<numeric_error>([&] { io::save_samples_npz(dir / "s.npz", images.view()); });
    BOOST_TEST(contains(msg, "image 2"), msg);
    BOOST_TEST(contains(msg, "pixel (1, 0)"), msg);
    const auto two_channels = tensor<float>::zeros({1, 2, 2, 2});
    BOOST_TEST(contains(shape_error_message([&] { io::save_samples_npz(dir / "s.npz", two_channels.view()); }), "(1, 2, 2, 2)"));
    const auto labels = tensor<std::int64_t>::zeros({2});
    BOOST_TEST(contains(shape_error_message([&] { io::save_samples_npz(dir / "s.npz", tensor<float>::zeros({3, 1, 2, 2}).view(), labels.view()); }),
                        "2 labels for 3 images"));
    BOOST_TEST(std::filesystem::is_empty(dir.path));  // neither the target nor a temporary
}

BOOST_AUTO_TEST_CASE(an_existing_file_is_replaced_whole) {
    temp_dir dir("npz_replace");
    io::npz_writer a, b;
    a.add("x", tensor<float>::full({100}, 1.0f).view());
    b.add("y", tensor<float>::full({3}, 2.0f).view());
    a.write(dir / "f.npz");
    b.write(dir / "f.npz");
    const io::npz_file file(dir / "f.npz");
    BOOST_TEST(file.names() == std::vector<std::string>{"y"}, tt::per_element());
    BOOST_TEST(std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator{}) == 1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(reference_statistics)

BOOST_AUTO_TEST_CASE(pytorch_fid_statistics) {
    const auto loaded = metrics::load_feature_statistics_npz(npz_fixture("fid_stats.npz"));
    BOOST_TEST(loaded.count() == 0);  // pytorch-fid stores no sample count
    BOOST_TEST(loaded.has_covariance());
    // numpy's mean and np.cov of the stored features against vediff's moments of the same features.
    const io::npz_file file(npz_fixture("fid_stats.npz"));
    metrics::feature_statistics computed;
    computed.add(file.get<float>("features").view());
    BOOST_TEST(loaded.dimension() == 8);
    BOOST_TEST((loaded.mean() - computed.mean()).cwiseAbs().maxCoeff() <= 1e-12 * computed.mean().cwiseAbs().maxCoeff());
    BOOST_TEST((loaded.covariance() - computed.covariance()).cwiseAbs().maxCoeff() <= 1e-12 * computed.covariance().cwiseAbs().maxCoeff());
    BOOST_TEST(std::abs(metrics::frechet_distance(loaded, computed)) < 1e-9 * computed.covariance().trace());
    // Uncounted statistics cannot take more samples.
    auto copy = loaded;
    BOOST_CHECK_THROW(copy.add(file.get<float>("features").view()), std::invalid_argument);
    BOOST_CHECK_THROW(computed.merge(loaded), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(statistics_written_as_pytorch_fid_reads_them) {
    temp_dir dir("npz_stats");
    const io::npz_file fixture_file(npz_fixture("fid_stats.npz"));
    metrics::feature_statistics s;
    s.add(fixture_file.get<float>("features").view());
    metrics::save_feature_statistics_npz(dir / "s.npz", s);
    const io::npz_file file(dir / "s.npz");
    BOOST_TEST(file.names() == (std::vector<std::string>{"mu", "sigma"}), tt::per_element());
    BOOST_TEST((file.header("sigma").shape == tensor_shape{8, 8}));
    const auto sigma = file.get<double>("sigma");
    const Eigen::MatrixXd cov = s.covariance();
    BOOST_TEST(sigma.at(2, 5) == cov(2, 5));
    BOOST_TEST(sigma.at(5, 2) == cov(5, 2));
    const auto loaded = metrics::load_feature_statistics_npz(dir / "s.npz");
    BOOST_TEST((loaded.mean() == s.mean()));
    BOOST_TEST((loaded.covariance() == cov));
}

BOOST_AUTO_TEST_CASE(adm_reference_batch) {
    const fixture expected = load_fixture("npz/adm_reference.txt");
    const auto ref = metrics::load_adm_reference_statistics(npz_fixture("adm_reference.npz"));
    BOOST_TEST(ref.pool.dimension() == 8);
    BOOST_TEST(ref.spatial.dimension() == 5);
    const auto check = [&](const metrics::feature_statistics& s, const std::string& mu, const std::string& sigma) {
        const auto m = expected.get(mu), c = expected.get(sigma);
        for (std::int64_t j = 0; j < m.numel(); ++j) BOOST_TEST(s.mean()(j) == m.data()[j]);
        const Eigen::MatrixXd cov = s.covariance();
        for (std::int64_t j = 0; j < c.dim(0); ++j)
            for (std::int64_t k = 0; k < c.dim(1); ++k) BOOST_TEST(cov(j, k) == c.at(j, k));
    };
    check(ref.pool, "mu", "sigma");      // mu stored as float32: read exactly, widened
    check(ref.spatial, "mu_s", "sigma_s");
    expect_equal(io::load_image_batch_npz(npz_fixture("adm_reference.npz")), expected.get("arr_0"), "arr_0");

    const auto images_only = io_error_message([&] { (void)metrics::load_adm_reference_statistics(npz_fixture("adm_images_only.npz")); });
    BOOST_TEST(contains(images_only, "adm_images_only.npz"), images_only);
    BOOST_TEST(contains(images_only, "'mu'"), images_only);
    BOOST_TEST(contains(images_only, "load_image_batch_npz"), images_only);
    // Statistics of the wrong shapes, and an image batch that is not one.
    const auto swapped = io_error_message([&] { (void)metrics::load_feature_statistics_npz(npz_fixture("adm_reference.npz"), "mu", "sigma_s"); });
    BOOST_TEST(contains(swapped, "'sigma_s.npy'"), swapped);
    BOOST_TEST(contains(swapped, "(5, 5)"), swapped);
    const auto not_images = io_error_message([&] { (void)io::load_image_batch_npz(npz_fixture("fid_stats.npz"), "features"); });
    BOOST_TEST(contains(not_images, "(N, H, W, 3)"), not_images);
}

BOOST_AUTO_TEST_SUITE_END()
