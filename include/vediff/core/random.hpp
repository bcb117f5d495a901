#pragma once
// Counter-based random numbers: Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011). A draw is a pure function of (seed, stream, offset, element index), so
// the same seed gives the same numbers on any device and with any number of threads.
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

namespace vediff {

struct philox4x32 {
    using counter = std::array<std::uint32_t, 4>;
    using key = std::array<std::uint32_t, 2>;

    static constexpr std::uint32_t multiplier0 = 0xD2511F53u;
    static constexpr std::uint32_t multiplier1 = 0xCD9E8D57u;
    static constexpr std::uint32_t weyl0 = 0x9E3779B9u;  // golden ratio
    static constexpr std::uint32_t weyl1 = 0xBB67AE85u;  // sqrt(3) - 1
    static constexpr int rounds = 10;

    static constexpr counter generate(counter c, key k) {
        for (int r = 0; r < rounds; ++r) {
            if (r) {
                k[0] += weyl0;
                k[1] += weyl1;
            }
            const std::uint64_t p0 = std::uint64_t{multiplier0} * c[0];
            const std::uint64_t p1 = std::uint64_t{multiplier1} * c[2];
            c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
                 static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
        }
        return c;
    }

    /// The block of four words for (seed, stream, block index): key = seed, counter = (index, stream).
    static constexpr counter block(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
        return generate({static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                         static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)},
                        {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
    }
};

/// Uniform in the open interval (0, 1) from the top bits of a word: never 0 (log() is safe) and
/// never 1 (1/(1 − u) is safe). Keeps k = min(24, digits − 1) bits and returns (bits + ½)·2^−k, so
/// that the largest value 1 − 2^−(k+1) is representable in T: with float's 24-bit significand,
/// 24 kept bits would give (2²⁴ − ½)·2^−24, which rounds to exactly 1.
template <class T>
constexpr T uniform_from_bits(std::uint32_t bits) {
    constexpr int kept = std::numeric_limits<T>::digits - 1 < 24 ? std::numeric_limits<T>::digits - 1 : 24;
    return (static_cast<T>(bits >> (32 - kept)) + T(0.5)) * (T(1) / static_cast<T>(std::uint32_t{1} << kept));
}

/// Element i of a uniform (0, 1) stream: word i % 4 of block offset + i / 4.
template <class T>
inline T philox_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t i) {
    return uniform_from_bits<T>(philox4x32::block(seed, stream, offset + i / 4)[i % 4]);
}

/// Element i of a standard normal stream: Box-Muller on words (0,1) and (2,3) of block
/// offset + i / 4, giving four normals per block.
template <class T>
inline T philox_normal(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t i) {
    const auto w = philox4x32::block(seed, stream, offset + i / 4);
    const unsigned pair = static_cast<unsigned>(i % 4) / 2;
    const double u1 = uniform_from_bits<double>(w[2 * pair]);
    const double u2 = uniform_from_bits<double>(w[2 * pair + 1]);
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 6.283185307179586476925 * u2;
    return static_cast<T>(i % 2 == 0 ? radius * std::cos(angle) : radius * std::sin(angle));
}

/// A flow-matching training time from one draw v: sigmoid(v) for logit-normal draws (v itself for
/// uniform ones), warped by the time shift t' = s·t/(s·t + (1 − t)) unless s = 1, rounded to T and
/// kept inside the open interval (0, 1): in float, sigmoid(17) already rounds to 1, and a time of
/// exactly 0 or 1 would make x_t pure noise or pure data. Shared by the backends' kernels, so every
/// device maps draws to times with the same arithmetic.
/// The time shift t' = s·t/(s·t + (1 − t)) for s > 0 (written so that t = 0 and t = 1 map exactly).
constexpr double shifted_time(double t, double s) { return s == 1.0 ? t : s * t / (s * t + (1.0 - t)); }

template <class T>
constexpr T training_time(double v, bool logistic, double shift) {
    const double u = shifted_time(logistic ? 1.0 / (1.0 + std::exp(-v)) : v, shift);
    T r = static_cast<T>(u);
    if (!(r > T(0))) r = std::numeric_limits<T>::denorm_min();
    if (!(r < T(1))) r = T(1) - std::numeric_limits<T>::epsilon() / T(2);  // the largest T below 1
    return r;
}

/// Which part of every draw one process takes in data-parallel training: the draws of a global
/// batch split into `count` equal consecutive slices, this process taking slice `index` (its
/// rank). A batch-shaped draw (batch outermost) then gives each rank exactly the rows of the
/// global batch it trains on, and the union over ranks is the single-process draw.
struct batch_shard {
    std::uint64_t index = 0;
    std::uint64_t count = 1;
};

/// Where a fill's n elements lie in the Philox stream: element i of the fill is element
/// first + i of the draw that starts at block `offset`.
struct philox_range {
    std::uint64_t offset = 0;
    std::uint64_t first = 0;
};

/// A stream of draws: (seed, stream) fixed, offset advancing by the blocks each draw consumes.
/// Saving `offset` is enough to resume the stream exactly. `shard` is not part of the stream's
/// state: the training loop sets it from the process's rank, and a checkpoint taken by any
/// number of processes resumes on any other number.
struct philox_generator {
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;
    std::uint64_t offset = 0;
    batch_shard shard{};

    /// Reserves the blocks for n elements and returns the offset at which they start.
    std::uint64_t advance(std::uint64_t n) {
        const std::uint64_t start = offset;
        offset += (n + 3) / 4;
        return start;
    }

    /// Reserves a draw of n · shard.count elements and returns where this shard's n lie in it.
    philox_range reserve_slice(std::uint64_t n) {
        const std::uint64_t start = advance(n * shard.count);
        return {start, n * shard.index};
    }
};

} // namespace vediff
