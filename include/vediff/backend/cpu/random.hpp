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

// Every fill takes (seed, stream, offset, first): out[i] is element first + i of the draw that
// starts at Philox block `offset` (word (first + i) % 4 of block offset + (first + i) / 4), so a
// process of a data-parallel run fills its slice of a global draw without drawing the rest.
template <>
struct random_kernels<cpu> {
    /// out[i] = mean + stddev · N_{first+i}
    template <class T>
    static void normal(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first,
                       T mean, T stddev) {
        for_each_block(n, seed, stream, offset, first, [=](const philox4x32::counter& w, std::int64_t base, int k0, int k1) {
            for (int pair = k0 / 2; 2 * pair < k1; ++pair) {
                // The same expressions as philox_normal, so every element matches it bit for bit.
                const double u1 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair)]);
                const double u2 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair + 1)]);
                const double radius = std::sqrt(-2.0 * std::log(u1));
                const double angle = 6.283185307179586476925 * u2;
                if (2 * pair >= k0) out[base + 2 * pair] = std::fma(stddev, static_cast<T>(radius * std::cos(angle)), mean);
                if (2 * pair + 1 < k1) out[base + 2 * pair + 1] = std::fma(stddev, static_cast<T>(radius * std::sin(angle)), mean);
            }
        });
    }
    /// out[i] = lo + (hi − lo) · U_{first+i}, U in (0, 1)
    template <class T>
    static void uniform(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first,
                        T lo, T hi) {
        for_each_block(n, seed, stream, offset, first, [=](const philox4x32::counter& w, std::int64_t base, int k0, int k1) {
            for (int k = k0; k < k1; ++k) out[base + k] = std::fma(hi - lo, uniform_from_bits<T>(w[static_cast<std::size_t>(k)]), lo);
        });
    }
    /// out[i] = value if U_{first+i} < p, else 0
    template <class T>
    static void bernoulli(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first,
                          double p, T value) {
        for_each_block(n, seed, stream, offset, first, [=](const philox4x32::counter& w, std::int64_t base, int k0, int k1) {
            for (int k = k0; k < k1; ++k) out[base + k] = uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p ? value : T(0);
        });
    }
    /// t[i] = training_time(t[i], logistic, shift) (core/random.hpp), in place
    template <class T>
    static void training_times(T* t, std::int64_t n, bool logistic, double shift) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) { t[i] = training_time<T>(double(t[i]), logistic, shift); });
    }
    /// out[i] = value if U_{first+i} < p, else out[i] unchanged
    template <class T>
    static void replace(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first,
                        double p, T value) {
        for_each_block(n, seed, stream, offset, first, [=](const philox4x32::counter& w, std::int64_t base, int k0, int k1) {
            for (int k = k0; k < k1; ++k)
                if (uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p) out[base + k] = value;
        });
    }

private:
    // For every Philox block that holds elements first .. first + n − 1 of the draw:
    // f(its words, base, k0, k1), words k0 .. k1 − 1 of it going to out[base + k].
    template <class F>
    static void for_each_block(std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first, F f) {
        if (n <= 0) return;
        const auto first_block = static_cast<std::int64_t>(first / 4);
        const auto end_block = static_cast<std::int64_t>((first + static_cast<std::uint64_t>(n) + 3) / 4);
        const auto begin = static_cast<std::int64_t>(first), end = begin + n;
        cpu_detail::parallel_for(end_block - first_block, [=](std::int64_t j) {
            const std::int64_t block = first_block + j;
            const auto w = philox4x32::block(seed, stream, offset + static_cast<std::uint64_t>(block));
            const int k0 = static_cast<int>(std::max<std::int64_t>(0, begin - 4 * block));
            const int k1 = static_cast<int>(std::min<std::int64_t>(4, end - 4 * block));
            f(w, 4 * block - begin, k0, k1);
        }, 64);
    }
};

} // namespace vediff
