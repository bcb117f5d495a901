#pragma once
// LDM's `mid` module at the coarsest resolution of both encoder and decoder:
// block_1 (ResnetBlock) → attn_1 (AttnBlock) → block_2 (ResnetBlock), channels unchanged.
#include <cstdint>

#include "vediff/models/attn_block.hpp"
#include "vediff/models/resnet_block.hpp"
#include "vediff/models/seed_sequence.hpp"
#include "vediff/nn/compose.hpp"

namespace vediff::models {

template <class T, device D>
using mid_block_base = nn::sequential<nn::named<"block_1", resnet_block<T, D>>, nn::named<"attn_1", attn_block<T, D>>,
                                      nn::named<"block_2", resnet_block<T, D>>>;

template <class T = float, device D = cpu>
struct mid_block : mid_block_base<T, D> {
    mid_block() = default;
    mid_block(std::int64_t channels, std::int64_t norm_groups, double norm_eps, seed_sequence& seeds)
        : mid_block_base<T, D>(make(channels, norm_groups, norm_eps, seeds)) {}

private:
    static mid_block_base<T, D> make(std::int64_t channels, std::int64_t groups, double eps, seed_sequence& seeds) {
        // Seeds drawn in statement order (function arguments have no evaluation order).
        const auto seed1 = seeds.next(), seed_attn = seeds.next(), seed2 = seeds.next();
        const resnet_block_config block{.in_channels = channels, .out_channels = channels, .norm_groups = groups, .norm_eps = eps};
        return mid_block_base<T, D>(resnet_block<T, D>(block, seed1),
                                    attn_block<T, D>({.channels = channels, .norm_groups = groups, .norm_eps = eps}, seed_attn),
                                    resnet_block<T, D>(block, seed2));
    }
};

} // namespace vediff::models
