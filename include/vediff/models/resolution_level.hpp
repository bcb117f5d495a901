#pragma once
// One resolution level of the LDM encoder (`down.{i}`) or decoder (`up.{i}`): ResnetBlocks
// `block.{j}`, each followed by an AttnBlock `attn.{j}` when the level attends, then an optional
// resampling block (`downsample` or `upsample`, absent at the coarsest encoder level and the
// finest decoder level). Its parameter names follow the order LDM registers them in.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vediff/models/attn_block.hpp"
#include "vediff/models/resnet_block.hpp"
#include "vediff/nn/module_list.hpp"
#include "vediff/nn/optional_layer.hpp"

namespace vediff::models {

struct resolution_level_config {
    std::int64_t in_channels = 0;   // of the first block
    std::int64_t out_channels = 0;  // of every block, and of the resampling
    std::int64_t blocks = 1;
    bool attention = false;
    bool resample = false;
    std::int64_t norm_groups = 32;
    double norm_eps = 1e-6;
};

/// Resample is named<"downsample", downsample<T, D, P>> or named<"upsample", upsample<T, D, P>>.
template <class T, device D, class Resample, precision_policy P = fp32>
struct resolution_level {
    using value_type = T;
    using device_type = D;

    nn::module_list<resnet_block<T, D, P>> block;
    nn::module_list<attn_block<T, D, P>> attn;  // empty, or one per block
    nn::optional_layer<Resample> resample;

    resolution_level() = default;
    explicit resolution_level(const resolution_level_config& c) {
        for (std::int64_t j = 0; j < c.blocks; ++j) {
            block.push_back(resnet_block<T, D, P>({.in_channels = j == 0 ? c.in_channels : c.out_channels,
                                                .out_channels = c.out_channels,
                                                .norm_groups = c.norm_groups,
                                                .norm_eps = c.norm_eps}));
            if (c.attention)
                attn.push_back(attn_block<T, D, P>({.channels = c.out_channels, .norm_groups = c.norm_groups, .norm_eps = c.norm_eps}));
        }
        if (c.resample) resample = Resample(c.out_channels);
    }

    /// x (B, in, H, W) → (B, out, H', W'), H' = H/2, H or 2H.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        outputs_.clear();
        tensor_view<T, D> h = x;
        const auto step = [&](auto& layer) {
            outputs_.push_back(layer.forward(h));
            h = outputs_.back();
        };
        for (std::size_t j = 0; j < block.size(); ++j) {
            step(block[j]);
            if (!attn.empty()) step(attn[j]);
        }
        if (resample.has_value()) step(*resample);
        // The last output goes to the caller; the others stay as the cached inputs of their successors.
        auto y = std::move(outputs_.back());
        outputs_.pop_back();
        return y;
    }

    /// Releases each output it keeps once the layer that made it and the one that read it have run backward.
    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        tensor<T, D> d;
        tensor_view<T, D> g = dy;
        bool last = true;  // the last layer's output went to the caller
        const auto step = [&](auto& layer) {
            d = layer.backward(g);
            g = d;
            if (!last && nn::backward_releases() && !outputs_.empty()) outputs_.pop_back();
            last = false;
        };
        if (resample.has_value()) step(*resample);
        for (std::size_t j = block.size(); j-- > 0;) {
            if (!attn.empty()) step(attn[j]);
            step(block[j]);
        }
        return d;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        block.for_each_parameter(f, nn::join_name(prefix, "block"));
        attn.for_each_parameter(f, nn::join_name(prefix, "attn"));
        resample.for_each_parameter(f, nn::join_name(prefix, Resample::child_name));
    }

private:
    std::vector<tensor<T, D>> outputs_;  // every layer's output but the last, in forward order
};

} // namespace vediff::models
