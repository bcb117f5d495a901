#pragma once
// The LDM decoder (ldm.modules.diffusionmodules.model.Decoder, without tanh_out):
//   conv_in (z_channels → ch·mult[last], 3×3) → mid (block_1, attn_1, block_2) → levels from the
//   coarsest to the finest, each num_res_blocks + 1 ResnetBlocks (+ AttnBlocks where the level's
//   resolution is in attn_resolutions) and an Upsample except at level 0 → norm_out → SiLU →
//   conv_out (→ out_channels). LDM builds the levels coarsest first but inserts each at the front,
//   so `up.{i}` is level i and up.0 is the finest: the forward runs up.{L−1} … up.0.
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
struct decoder {
    using value_type = T;
    using device_type = D;
    using level = resolution_level<T, D, nn::named<"upsample", upsample<T, D, P>>, P>;

    nn::conv2d<T, D, P> conv_in;
    mid_block<T, D, P> mid;
    nn::module_list<level> up;  // up[i] is level i; up[0] the finest
    output_head<T, D, P> head;     // norm_out, conv_out

    decoder() = default;
    /// Weights as nn::initialize(*this, seed) draws them.
    explicit decoder(const autoencoder_config& c, std::uint64_t seed = 0) {
        c.validate();
        std::int64_t channels = c.level_channels(c.levels() - 1), res = c.latent_resolution();
        conv_in = nn::conv2d<T, D, P>(
            {.in_channels = c.z_channels, .out_channels = channels, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)});
        mid = mid_block<T, D, P>(channels, c.norm_groups, c.norm_eps);
        // Built coarsest first (LDM's order), stored finest first.
        std::vector<level> levels;
        for (std::int64_t i = c.levels(); i-- > 0;) {
            levels.push_back(level({.in_channels = channels,
                                    .out_channels = c.level_channels(i),
                                    .blocks = c.num_res_blocks + 1,
                                    .attention = c.attends_at(res),
                                    .resample = i != 0,
                                    .norm_groups = c.norm_groups,
                                    .norm_eps = c.norm_eps}));
            channels = c.level_channels(i);
            if (i != 0) res *= 2;
        }
        for (std::size_t i = levels.size(); i-- > 0;) up.push_back(std::move(levels[i]));
        head = output_head<T, D, P>(channels, c.out_channels, c.norm_groups, c.norm_eps);
        nn::initialize(*this, seed);
    }

    /// z (B, z_channels, h, w) → (B, out, h·f, w·f), f = 2^(levels − 1).
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& z) {
        outputs_.clear();
        outputs_.push_back(conv_in.forward(z));
        outputs_.push_back(mid.forward(outputs_.back()));
        for (std::size_t i = up.size(); i-- > 0;) outputs_.push_back(up[i].forward(outputs_.back()));
        return head.forward(outputs_.back());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        // Each part's gradients are final after its backward: announced for data parallelism. Each
        // part's output is released once it and the part that read it have run backward.
        auto d = head.backward(dy);
        nn::announce_final_gradients(head);
        for (std::size_t i = 0; i < up.size(); ++i) {
            d = up[i].backward(d);
            nn::announce_final_gradients(up[i]);
            release_output();
        }
        d = mid.backward(d);
        nn::announce_final_gradients(mid);
        release_output();
        d = conv_in.backward(d);
        nn::announce_final_gradients(conv_in);
        release_output();
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        conv_in.for_each_parameter(f, nn::join_name(prefix, "conv_in"));
        mid.for_each_parameter(f, nn::join_name(prefix, "mid"));
        up.for_each_parameter(f, nn::join_name(prefix, "up"));
        head.for_each_parameter(f, prefix);
    }

private:
    // outputs_ is in forward order and backward runs in reverse: the last one is the output of the
    // part whose backward has just run (the head's reader ran before).
    void release_output() {
        if (nn::backward_releases() && !outputs_.empty()) outputs_.pop_back();
    }

    std::vector<tensor<T, D>> outputs_;  // conv_in's, mid's and each level's outputs
};

} // namespace vediff::models
