#pragma once
// Random draws that belong to samples, not to batches. A fill of a batch takes its numbers from
// where the generator stands, so the noise sample i receives would change with the batch size
// (and with the 4-word Philox blocks split across samples). Metrics that promise the same value
// for any batch size reserve every sample's draws up front instead: `draws` fills of `per_draw`
// elements for each of `samples` samples, each fill starting at a block of its own, and hand out
// a generator positioned at sample i's fill d.
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "vediff/core/random.hpp"

namespace vediff::metrics {

class per_sample_draws {
public:
    /// Advances gen past the whole reservation.
    per_sample_draws(philox_generator& gen, std::int64_t samples, std::int64_t per_draw, std::int64_t draws = 1)
        : seed_(gen.seed), stream_(gen.stream), samples_(samples), draws_(draws),
          blocks_per_draw_((static_cast<std::uint64_t>(per_draw) + 3) / 4) {
        if (samples < 0 || per_draw < 0 || draws < 0)
            throw std::invalid_argument(fmt::format("per_sample_draws: {} samples × {} draws × {} elements is not a valid reservation",
                                                    samples, draws, per_draw));
        first_block_ = gen.advance(4 * static_cast<std::uint64_t>(samples) * static_cast<std::uint64_t>(draws) * blocks_per_draw_);
    }

    /// The generator for fill `draw` of sample `sample` (ops::fill_* of per_draw elements).
    philox_generator operator()(std::int64_t sample, std::int64_t draw = 0) const {
        if (sample < 0 || sample >= samples_ || draw < 0 || draw >= draws_)
            throw std::out_of_range(fmt::format("per_sample_draws: draw {} of sample {} is outside the {} × {} reserved", draw, sample,
                                                samples_, draws_));
        const auto index = static_cast<std::uint64_t>(sample) * static_cast<std::uint64_t>(draws_) + static_cast<std::uint64_t>(draw);
        return {.seed = seed_, .stream = stream_, .offset = first_block_ + index * blocks_per_draw_};
    }

private:
    std::uint64_t seed_, stream_;
    std::int64_t samples_, draws_;
    std::uint64_t blocks_per_draw_;
    std::uint64_t first_block_ = 0;
};

} // namespace vediff::metrics
