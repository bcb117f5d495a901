#define BOOST_TEST_MODULE random
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "support/gradcheck.hpp"
#include "support/threads.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/ops/random.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
struct moments {
    double mean = 0, var = 0;
};
template <class T>
moments moments_of(const tensor<T>& t) {
    double s = 0, sq = 0;
    for (T v : t.span()) s += double(v);
    const double n = double(t.numel()), m = s / n;
    for (T v : t.span()) sq += (double(v) - m) * (double(v) - m);
    return {m, sq / n};
}
} // namespace

BOOST_AUTO_TEST_CASE(element_i_is_draw_i_of_the_reserved_offset) {
    philox_generator gen{17, 3, 5};
    auto t = tensor<double>::empty({2, 7});
    ops::fill_normal(t.view(), gen, 1.0, 2.0);
    BOOST_TEST(gen.offset == 5u + 4u);  // ⌈14/4⌉ blocks reserved
    for (std::int64_t i = 0; i < t.numel(); ++i)
        BOOST_TEST(t.data()[i] == 1.0 + 2.0 * philox_normal<double>(17, 3, 5, static_cast<std::uint64_t>(i)));
    auto u = tensor<float>::empty({5});
    ops::fill_uniform(u.view(), gen, -1.0, 3.0);
    BOOST_TEST(gen.offset == 9u + 2u);
    for (std::int64_t i = 0; i < u.numel(); ++i)
        BOOST_TEST(u.data()[i] == -1.0f + 4.0f * philox_uniform<float>(17, 3, 9, static_cast<std::uint64_t>(i)));
}

BOOST_AUTO_TEST_CASE(affine_maps_round_once_in_every_build) {
    // lo + (hi − lo)·U and mean + stddev·N are single fused roundings (std::fma), not left to the
    // compiler's FMA contraction, which -march=native builds applied and generic builds did not
    // (40% of these uniform draws differed in the last bit); the cuda backend computes the same.
    const std::int64_t n = 4096;
    philox_generator gen{.seed = 5, .stream = 1};
    auto u = tensor<float>::zeros({n});
    ops::fill_uniform(u.view(), gen, -0.3f, 0.45f);
    auto z = tensor<float>::zeros({n});
    ops::fill_normal(z.view(), gen, 0.25f, 1.5f);
    std::int64_t uniform_mismatches = 0, normal_mismatches = 0, rounded_twice_differs = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const auto ui = static_cast<std::uint64_t>(i);
        const float draw = philox_uniform<float>(5, 1, 0, ui);
        if (u.at(i) != std::fma(0.75f, draw, -0.3f)) ++uniform_mismatches;
        volatile float product = 0.75f * draw;  // volatile: rounded on its own, never contracted
        if (-0.3f + product != u.at(i)) ++rounded_twice_differs;
        if (z.at(i) != std::fma(1.5f, static_cast<float>(philox_normal<double>(5, 1, n / 4, ui)), 0.25f)) ++normal_mismatches;
    }
    BOOST_TEST(uniform_mismatches == 0);
    BOOST_TEST(normal_mismatches == 0);
    BOOST_TEST(rounded_twice_differs > n / 10);  // the two roundings are distinguishable here
}

BOOST_AUTO_TEST_CASE(identical_for_any_thread_count) {
    // 2^17 + 3 elements: beyond the parallel grain, so two threads really split the range.
    const tensor_shape shape{131075};
    auto draw = [&](int threads) {
        return with_threads(threads, [&] {
            philox_generator gen{7, 1, 0};
            auto n = ops::normal<float>(shape, gen, 0.0, 1.0);
            auto u = ops::uniform<double>(shape, gen);
            auto b = tensor<float>::empty(shape);
            ops::fill_bernoulli(b.view(), gen, 0.3, 2.0);
            std::vector<double> all;
            for (float v : n.span()) all.push_back(v);
            for (double v : u.span()) all.push_back(v);
            for (float v : b.span()) all.push_back(v);
            all.push_back(double(gen.offset));
            return all;
        });
    };
    const auto one = draw(1), two = draw(2);
    BOOST_TEST(one.size() == two.size());
    BOOST_TEST((one == two));
}

BOOST_AUTO_TEST_CASE(distributions) {
    philox_generator gen{3, 0, 0};
    const tensor_shape shape{400000};
    const auto n = moments_of(ops::normal<double>(shape, gen, 2.0, 0.5));
    BOOST_TEST(std::abs(n.mean - 2.0) < 0.005);
    BOOST_TEST(std::abs(n.var - 0.25) < 0.005);
    auto u = ops::uniform<float>(shape, gen, -2.0, 4.0);
    const auto um = moments_of(u);
    BOOST_TEST(std::abs(um.mean - 1.0) < 0.02);
    BOOST_TEST(std::abs(um.var - 3.0) < 0.03);  // (hi − lo)²/12
    bool in_range = true;
    for (float v : u.span()) in_range = in_range && v > -2.0f && v < 4.0f;
    BOOST_TEST(in_range);

    auto b = tensor<double>::empty(shape);
    ops::fill_bernoulli(b.view(), gen, 0.25, 4.0);
    std::int64_t ones = 0;
    bool values_ok = true;
    for (double v : b.span()) {
        ones += v != 0.0;
        values_ok = values_ok && (v == 0.0 || v == 4.0);
    }
    BOOST_TEST(values_ok);
    // Binomial(400000, 0.25): standard deviation 274, so 5 sigma is about 0.0034 in the fraction.
    BOOST_TEST(std::abs(double(ones) / 400000 - 0.25) < 0.0035);
    BOOST_CHECK_THROW(ops::fill_bernoulli(b.view(), gen, 1.5), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(offsets_separate_consecutive_fills) {
    philox_generator gen{9, 0, 0};
    auto a = ops::normal<double>({6}, gen), b = ops::normal<double>({6}, gen);
    BOOST_TEST(a.at(0) != b.at(0));
    // Rewinding the offset replays the stream.
    gen.offset = 0;
    auto c = ops::normal<double>({6}, gen);
    BOOST_TEST(c.to_vector() == a.to_vector());
    // A different stream of the same seed gives different numbers.
    philox_generator other{9, 1, 0};
    BOOST_TEST(ops::normal<double>({6}, other).at(0) != a.at(0));
}

BOOST_AUTO_TEST_CASE(replacement_hits_the_elements_whose_draw_is_below_p) {
    philox_generator gen{23, 4, 2};
    std::vector<std::int32_t> before(37);
    for (std::size_t i = 0; i < before.size(); ++i) before[i] = static_cast<std::int32_t>(i % 10);
    auto labels = tensor<std::int32_t>::from_host({37}, std::span<const std::int32_t>(before));
    ops::replace_with_probability(labels.view(), gen, 0.3, 10);
    BOOST_TEST(gen.offset == 2u + 10u);  // ⌈37/4⌉ blocks reserved
    int replaced = 0;
    for (std::size_t i = 0; i < before.size(); ++i) {
        const bool hit = philox_uniform<double>(23, 4, 2, i) < 0.3;
        BOOST_TEST(labels.data()[i] == (hit ? 10 : before[i]));
        replaced += hit;
    }
    BOOST_TEST(replaced > 0);
    BOOST_TEST(replaced < 37);
    BOOST_CHECK_THROW(ops::replace_with_probability(labels.view(), gen, 1.5, 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(training_times_stay_inside_the_open_unit_interval) {
    // sigmoid(±40) rounds to 1 and underflows towards 0 in float: the ends are pulled inside.
    BOOST_TEST(training_time<float>(40.0, true, 1.0) == 1.0f - std::numeric_limits<float>::epsilon() / 2);
    BOOST_TEST(training_time<float>(40.0, true, 1.0) < 1.0f);
    BOOST_TEST(training_time<float>(-800.0, true, 1.0) == std::numeric_limits<float>::denorm_min());
    BOOST_TEST(training_time<double>(0.0, true, 1.0) == 0.5);
    BOOST_TEST(training_time<double>(0.25, false, 3.0) == 3.0 * 0.25 / (3.0 * 0.25 + 0.75));
    BOOST_TEST(training_time<double>(0.25, false, 1.0) == 0.25);
    // The cpu kernel applies it in place to every element.
    auto t = tensor<float>::from_host({3}, {-2.0f, 0.0f, 3.0f});
    random_kernels<cpu>::training_times(t.data(), 3, true, 0.3);
    BOOST_TEST(t.at(1) == training_time<float>(0.0, true, 0.3));
    BOOST_TEST(t.at(2) == training_time<float>(3.0, true, 0.3));
}

// Data parallel: a generator sharded {r, count} fills its n elements with elements r·n .. r·n + n − 1
// of the draw an unsharded generator makes of n·count elements, for every kind of fill, for
// shard boundaries inside a Philox block (n = 7), and over consecutive fills (the offsets
// advance alike on every rank, so the next fill lines up too).
BOOST_AUTO_TEST_CASE(sharded_fills_are_slices_of_the_one_process_draw) {
    const std::int64_t n = 7, count = 3;
    philox_generator whole{21, 4, 5};
    std::vector<philox_generator> ranks(count, whole);
    for (std::int64_t r = 0; r < count; ++r) ranks[static_cast<std::size_t>(r)].shard = {static_cast<std::uint64_t>(r), static_cast<std::uint64_t>(count)};
    for (int kind = 0; kind < 4; ++kind) {
        auto fill = [&](const tensor<float>& t, philox_generator& g) {
            switch (kind) {
            case 0: ops::fill_normal(t.view(), g, 0.5f, 2.0f); break;
            case 1: ops::fill_uniform(t.view(), g, -1.0f, 1.0f); break;
            case 2: ops::fill_bernoulli(t.view(), g, 0.4, 3.0f); break;
            default: ops::replace_with_probability(t.view(), g, 0.3, -7.0f); break;
            }
        };
        auto all = tensor<float>::zeros({n * count});
        fill(all, whole);
        for (std::int64_t r = 0; r < count; ++r) {
            auto part = tensor<float>::zeros({n});
            fill(part, ranks[static_cast<std::size_t>(r)]);
            for (std::int64_t i = 0; i < n; ++i) BOOST_TEST(part.at(i) == all.at(r * n + i), "kind " << kind << " rank " << r << " i " << i);
            BOOST_TEST(ranks[static_cast<std::size_t>(r)].offset == whole.offset);
        }
    }
    // Four fills of the 21-element global draw, ⌈21/4⌉ blocks each.
    BOOST_TEST(whole.offset == 5u + 4u * ((n * count + 3) / 4));
}

