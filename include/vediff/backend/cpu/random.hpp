#pragma once
// cpu kernels filling arrays from Philox streams. Element i always takes draw i of
// (seed, stream, offset), whichever thread computes it, so results do not depend on the thread
// count. Work is split by Philox block: one block yields the four draws of elements 4k .. 4k + 3
// (two Box-Muller pairs for normals), with exactly the arithmetic of philox_normal/philox_uniform.
// The affine maps (mean + stddev·N, lo + (hi − lo)·U) are explicit fused multiply-adds: left to
// the compiler, they were contracted into FMAs in -march=native builds and not in generic ones,
// and 40% of uniform draws differed in the last bit between the two; the cuda backend computes
// the same std::fma, so both devices and every build give the same values.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"

namespace vediff {

template <>
struct random_kernels<cpu> {
    /// out[i] = mean + stddev · N_i
    template <class T>
    static void normal(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, T mean, T stddev) {
        for_each_block(n, seed, stream, offset, [=](const philox4x32::counter& w, std::int64_t first, int count) {
            for (int pair = 0; pair < 2 && 2 * pair < count; ++pair) {
                // The same expressions as philox_normal, so every element matches it bit for bit.
                const double u1 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair)]);
                const double u2 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair + 1)]);
                const double radius = std::sqrt(-2.0 * std::log(u1));
                const double angle = 6.283185307179586476925 * u2;
                out[first + 2 * pair] = std::fma(stddev, static_cast<T>(radius * std::cos(angle)), mean);
                if (2 * pair + 1 < count) out[first + 2 * pair + 1] = std::fma(stddev, static_cast<T>(radius * std::sin(angle)), mean);
            }
        });
    }
    /// out[i] = lo + (hi − lo) · U_i, U_i in (0, 1)
    template <class T>
    static void uniform(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, T lo, T hi) {
        for_each_block(n, seed, stream, offset, [=](const philox4x32::counter& w, std::int64_t first, int count) {
            for (int k = 0; k < count; ++k) out[first + k] = std::fma(hi - lo, uniform_from_bits<T>(w[static_cast<std::size_t>(k)]), lo);
        });
    }
    /// out[i] = value if U_i < p, else 0
    template <class T>
    static void bernoulli(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, double p, T value) {
        for_each_block(n, seed, stream, offset, [=](const philox4x32::counter& w, std::int64_t first, int count) {
            for (int k = 0; k < count; ++k) out[first + k] = uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p ? value : T(0);
        });
    }
    /// t[i] = training_time(t[i], logistic, shift) (core/random.hpp), in place
    template <class T>
    static void training_times(T* t, std::int64_t n, bool logistic, double shift) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { t[i] = training_time<T>(double(t[i]), logistic, shift); });
    }
    /// out[i] = value if U_i < p, else out[i] unchanged
    template <class T>
    static void replace(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, double p, T value) {
        for_each_block(n, seed, stream, offset, [=](const philox4x32::counter& w, std::int64_t first, int count) {
            for (int k = 0; k < count; ++k)
                if (uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p) out[first + k] = value;
        });
    }

private:
    // f(words of block offset + k, first element 4k, number of elements of this block in range).
    template <class F>
    static void for_each_block(std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, F f) {
        const std::int64_t blocks = (n + 3) / 4;
        cpu_detail::parallel_for(blocks, [=](std::int64_t k) {
            const auto w = philox4x32::block(seed, stream, offset + static_cast<std::uint64_t>(k));
            f(w, 4 * k, static_cast<int>(std::min<std::int64_t>(4, n - 4 * k)));
        }, 64);
    }
};

} // namespace vediff
