#pragma once
// The LDM encoder (ldm.modules.diffusionmodules.model.Encoder with double_z):
//   conv_in (in → ch, 3×3) → down.{i} for each level i: num_res_blocks ResnetBlocks
//   (ch·mult[i−1] → ch·mult[i], mult[−1] = 1), AttnBlocks where the level's resolution is in
//   attn_resolutions, a Downsample except at the last level → mid (block_1, attn_1, block_2) →
//   norm_out → SiLU → conv_out (→ 2·z_channels: mean and log-variance channels).
#include <cstdint>
#include <string>
#include <vector>

#include "vediff/nn/gradient_listener.hpp"
#include "vediff/models/autoencoder_config.hpp"
#include "vediff/models/mid_block.hpp"
#include "vediff/models/output_head.hpp"
#include "vediff/models/resample.hpp"
#include "vediff/models/resolution_level.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/module_list.hpp"

namespace vediff::models {

template <class T = float, device D = cpu, precision_policy P = fp32>
struct encoder {
    using value_type = T;
    using device_type = D;
    using level = resolution_level<T, D, nn::named<"downsample", downsample<T, D, P>>, P>;

    nn::conv2d<T, D, P> conv_in;
    nn::module_list<level> down;
    mid_block<T, D, P> mid;
    output_head<T, D, P> head;  // norm_out, conv_out

    encoder() = default;
    /// Weights as nn::initialize(*this, seed) draws them.
    explicit encoder(const autoencoder_config& c, std::uint64_t seed = 0) {
        c.validate();
        conv_in = nn::conv2d<T, D, P>(
            {.in_channels = c.in_channels, .out_channels = c.ch, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)});
        std::int64_t res = c.resolution, channels = c.ch;
        for (std::int64_t i = 0; i < c.levels(); ++i) {
            const bool last = i + 1 == c.levels();
            down.push_back(level({.in_channels = channels,
                                  .out_channels = c.level_channels(i),
                                  .blocks = c.num_res_blocks,
                                  .attention = c.attends_at(res),
                                  .resample = !last,
                                  .norm_groups = c.norm_groups,
                                  .norm_eps = c.norm_eps}));
            channels = c.level_channels(i);
            if (!last) res /= 2;
        }
        mid = mid_block<T, D, P>(channels, c.norm_groups, c.norm_eps);
        head = output_head<T, D, P>(channels, 2 * c.z_channels, c.norm_groups, c.norm_eps);
        nn::initialize(*this, seed);
    }

    /// x (B, in, H, W) → (B, 2·z_channels, H/f, W/f), f = 2^(levels − 1).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        outputs_.clear();
        outputs_.push_back(conv_in.forward(x));
        for (auto& l : down) outputs_.push_back(l.forward(outputs_.back()));
        outputs_.push_back(mid.forward(outputs_.back()));
        return head.forward(outputs_.back());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        // Each part's gradients are final after its backward: announced for data parallelism. Each
        // part's output is released once it and the part that read it have run backward.
        auto d = head.backward(dy);
        nn::announce_final_gradients(head);
        d = mid.backward(d);
        nn::announce_final_gradients(mid);
        release_output();
        for (std::size_t i = down.size(); i-- > 0;) {
            d = down[i].backward(d);
            nn::announce_final_gradients(down[i]);
            release_output();
        }
        d = conv_in.backward(d);
        nn::announce_final_gradients(conv_in);
        release_output();
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        conv_in.for_each_parameter(f, nn::join_name(prefix, "conv_in"));
        down.for_each_parameter(f, nn::join_name(prefix, "down"));
        mid.for_each_parameter(f, nn::join_name(prefix, "mid"));
        head.for_each_parameter(f, prefix);
    }

private:
    // outputs_ is in forward order and backward runs in reverse: the last one is the output of the
    // part whose backward has just run (the head's reader ran before).
    void release_output() {
        if (nn::backward_releases() && !outputs_.empty()) outputs_.pop_back();
    }

    std::vector<tensor<T, D>> outputs_;  // conv_in's, each level's and mid's outputs
};

} // namespace vediff::models
