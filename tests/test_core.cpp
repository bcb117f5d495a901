#define BOOST_TEST_MODULE core
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
} // namespace

BOOST_AUTO_TEST_SUITE(tensor_core)

BOOST_AUTO_TEST_CASE(shape_and_strides) {
    tensor_shape s{2, 3, 4, 5};
    BOOST_TEST(s.rank() == 4);
    BOOST_TEST(s.numel() == 120);
    const auto st = s.strides();
    BOOST_TEST(st[0] == 60);
    BOOST_TEST(st[1] == 20);
    BOOST_TEST(st[2] == 5);
    BOOST_TEST(st[3] == 1);
    BOOST_TEST(s[-1] == 5);
    BOOST_TEST(s.to_string() == "(2, 3, 4, 5)");
    BOOST_CHECK_THROW((tensor_shape{1, 2, 3, 4, 5, 6}), shape_error);
    BOOST_CHECK_THROW(s[4], shape_error);
}

BOOST_AUTO_TEST_CASE(row_major_element_access) {
    auto t = tensor<float>::from_host({2, 3}, {0, 1, 2, 3, 4, 5});
    BOOST_TEST(t.at(1, 0) == 3.0f);
    BOOST_TEST(t.at(0, 2) == 2.0f);
    BOOST_CHECK_THROW(t.at(2, 0), shape_error);
    BOOST_CHECK_THROW(t.at(0), shape_error);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0u);
}

BOOST_AUTO_TEST_CASE(reshape_and_slice_share_storage) {
    auto t = tensor<float>::from_host({4, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    auto v = t.reshape({2, -1});
    BOOST_TEST(v.shape() == (tensor_shape{2, 6}));
    BOOST_TEST(v.data() == t.data());
    v.at(1, 0) = 42.0f;
    BOOST_TEST(t.at(2, 0) == 42.0f);

    auto rows = t.slice(1, 3);
    BOOST_TEST(rows.shape() == (tensor_shape{2, 3}));
    BOOST_TEST(rows.at(0, 0) == 3.0f);
    BOOST_TEST(t[3].at(2) == 11.0f);

    BOOST_CHECK_THROW(t.slice(2, 5), shape_error);
    BOOST_CHECK_THROW(t.reshape({5, -1}), shape_error);
    const auto msg = shape_error_message([&] { (void)t.reshape({5, 5}); });
    BOOST_TEST(msg.find("(4, 3)") != std::string::npos);
    BOOST_TEST(msg.find("(5, 5)") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(move_only_with_explicit_clone) {
    static_assert(!std::is_copy_constructible_v<tensor<float>>);
    static_assert(std::is_nothrow_move_constructible_v<tensor<float>>);
    auto a = tensor<double>::full({3}, 2.5);
    auto b = a.clone();
    BOOST_TEST(b.data() != a.data());
    b.at(0) = 1.0;
    BOOST_TEST(a.at(0) == 2.5);
    auto* p = a.data();
    auto c = std::move(a);
    BOOST_TEST(c.data() == p);
    BOOST_TEST(a.data() == nullptr);
    auto d = std::move(c).reshape({1, 3});
    BOOST_TEST(d.data() == p);
    BOOST_TEST(d.shape() == (tensor_shape{1, 3}));
}

BOOST_AUTO_TEST_CASE(from_host_checks_count) {
    const auto msg = shape_error_message([] { (void)tensor<float>::from_host({2, 2}, {1, 2, 3}); });
    BOOST_TEST(msg.find("(2, 2)") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(philox)

// Known-answer vectors published with Random123 (Salmon et al. 2011), tests/kat_vectors.
BOOST_AUTO_TEST_CASE(random123_known_answers) {
    using c = philox4x32::counter;
    BOOST_TEST((philox4x32::generate({0, 0, 0, 0}, {0, 0}) == c{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
    BOOST_TEST((philox4x32::generate({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
                c{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
    BOOST_TEST((philox4x32::generate({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
                c{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

BOOST_AUTO_TEST_CASE(normal_moments) {
    const int n = 200000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
        const double v = philox_normal<double>(5, 0, 0, static_cast<std::uint64_t>(i));
        sum += v;
        sq += v * v;
    }
    BOOST_TEST(std::abs(sum / n) < 0.01);
    BOOST_TEST(std::abs(sq / n - 1.0) < 0.01);
}

BOOST_AUTO_TEST_CASE(uniform_from_bits_is_open_at_both_ends) {
    // The extremes directly: the all-ones word is the largest draw, the all-zeros word the smallest.
    BOOST_TEST(uniform_from_bits<float>(0xFFFFFFFFu) < 1.0f);
    BOOST_TEST(uniform_from_bits<float>(0xFFFFFFFFu) == 1.0f - 0x1p-24f);
    BOOST_TEST(1.0f / (1.0f - uniform_from_bits<float>(0xFFFFFFFFu)) == 0x1p24f);
    BOOST_TEST(uniform_from_bits<float>(0u) == 0x1p-24f);
    BOOST_TEST(uniform_from_bits<double>(0xFFFFFFFFu) < 1.0);
    BOOST_TEST(uniform_from_bits<double>(0u) > 0.0);
    BOOST_TEST(std::isfinite(std::log(uniform_from_bits<float>(0u))));
    // Every kept float pattern: strictly inside (0, 1) and strictly increasing.
    float previous = 0.0f;
    bool open = true, increasing = true;
    for (std::uint32_t top = 0; top < (1u << 23); ++top) {
        const float u = uniform_from_bits<float>(top << 9);
        open = open && u > 0.0f && u < 1.0f;
        increasing = increasing && u > previous;
        previous = u;
    }
    BOOST_TEST(open);
    BOOST_TEST(increasing);
}

BOOST_AUTO_TEST_CASE(uniform_mean) {
    double sum = 0;
    for (int i = 0; i < 100000; ++i) sum += philox_uniform<float>(9, 3, 0, static_cast<std::uint64_t>(i));
    BOOST_TEST(std::abs(sum / 100000 - 0.5) < 0.005);
}

BOOST_AUTO_TEST_CASE(streams_and_offsets_are_independent_keys) {
    BOOST_TEST(philox_normal<double>(1, 0, 0, 0) != philox_normal<double>(1, 1, 0, 0));
    BOOST_TEST(philox_normal<double>(1, 0, 0, 0) != philox_normal<double>(2, 0, 0, 0));
    // Element 4 of offset 0 is element 0 of offset 1: offsets count blocks of four.
    BOOST_TEST(philox_normal<double>(1, 0, 0, 4) == philox_normal<double>(1, 0, 1, 0));
    philox_generator g{3, 0, 0};
    BOOST_TEST(g.advance(10) == 0u);
    BOOST_TEST(g.advance(1) == 3u);
    BOOST_TEST(g.offset == 4u);
}

BOOST_AUTO_TEST_SUITE_END()
