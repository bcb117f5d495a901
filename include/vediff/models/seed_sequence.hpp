#pragma once
// models::seed_sequence: one initialization seed per layer of a model, all distinct. The base is
// the model seed passed through SplitMix64 (Steele et al., "Fast splittable pseudorandom number
// generators", OOPSLA 2014), so that models with neighbouring seeds (0, 1, ...) do not share
// layer seeds; each layer then draws from its own Philox key.
#include <cstdint>

namespace vediff::models {

struct seed_sequence {
    std::uint64_t base = 0;
    std::uint64_t count = 0;

    explicit seed_sequence(std::uint64_t seed) : base(mix(seed)) {}

    /// The seed of the next layer.
    std::uint64_t next() { return base + count++; }

    static constexpr std::uint64_t mix(std::uint64_t z) {
        z += 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

} // namespace vediff::models
