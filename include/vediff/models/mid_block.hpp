#pragma once
// LDM's `mid` module at the coarsest resolution of both encoder and decoder:
// block_1 (ResnetBlock) → attn_1 (AttnBlock) → block_2 (ResnetBlock), channels unchanged.
#include <cstdint>

#include "vediff/models/attn_block.hpp"
#include "vediff/models/resnet_block.hpp"
#include "vediff/nn/compose.hpp"

namespace vediff::models {

template <class T, device D, precision_policy P = fp32>
using mid_block_base = nn::sequential<nn::named<"block_1", resnet_block<T, D, P>>, nn::named<"attn_1", attn_block<T, D, P>>,
                                      nn::named<"block_2", resnet_block<T, D, P>>>;

template <class T = float, device D = cpu, precision_policy P = fp32>
struct mid_block : mid_block_base<T, D, P> {
    mid_block() = default;
    mid_block(std::int64_t channels, std::int64_t norm_groups, double norm_eps)
        : mid_block_base<T, D, P>(make(channels, norm_groups, norm_eps)) {}

private:
    static mid_block_base<T, D, P> make(std::int64_t channels, std::int64_t groups, double eps) {
        const resnet_block_config block{.in_channels = channels, .out_channels = channels, .norm_groups = groups, .norm_eps = eps};
        return mid_block_base<T, D, P>(resnet_block<T, D, P>(block),
                                    attn_block<T, D, P>({.channels = channels, .norm_groups = groups, .norm_eps = eps}),
                                    resnet_block<T, D, P>(block));
    }
};

} // namespace vediff::models
