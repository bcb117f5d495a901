#pragma once
// The parts of the FID Inception network (models/inception.hpp), with the state_dict names of
// torchvision's Inception3 as pytorch-fid patches it:
//   basic_conv2d   conv (no bias) → BatchNorm2d(eps = 0.001) in evaluation mode → ReLU, named
//                  conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var,
//                  bn.num_batches_tracked. The norm is folded into the convolution on every
//                  forward (weight rows × scale, shift as the bias), so one pass over the
//                  activations does conv + norm, and ReLU rectifies that output in place.
//   inception_a    Mixed_5b–5d: 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg-pool 3×3 → 1×1
//   inception_b    Mixed_6a (grid 35 → 17): 3×3/2 | 1×1 → 3×3 → 3×3/2 | max-pool 3×3/2
//   inception_c    Mixed_6b–6e: 1×1 | 1×1 → 1×7 → 7×1 | 1×1 → 7×1 → 1×7 → 7×1 → 1×7 | avg-pool → 1×1
//   inception_d    Mixed_7a (grid 17 → 8): 1×1 → 3×3/2 | 1×1 → 1×7 → 7×1 → 3×3/2 | max-pool 3×3/2
//   inception_e    Mixed_7b, 7c: 1×1 | 1×1 → (1×3, 3×1) | 1×1 → 3×3 → (1×3, 3×1) | pool → 1×1
// Branch outputs are concatenated along channels in that order. The FID patches (TensorFlow's
// 2015 graph): every 3×3 stride-1 average pool of a pool branch excludes the padding from its
// divisor (count_include_pad=False), and the last block (Mixed_7c) pools its pool branch with a
// 3×3 stride-1 max pool instead of the average.
// Forward only: the network is a frozen feature extractor, never trained or differentiated here,
// so these parts have no backward and are not nn::layer (whose contract includes one). cpu only,
// through its ops (pool, resize, batch_norm have no cuda kernels; core/kernels.hpp).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "vediff/nn/init.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/activation.hpp"
#include "vediff/ops/batch_norm.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/conv.hpp"
#include "vediff/ops/pool.hpp"

namespace vediff::models {

struct basic_conv2d_config {
    std::int64_t in_channels = 0, out_channels = 0;
    std::int64_t kernel_h = 1, kernel_w = 1;
    std::int64_t stride = 1;
    std::int64_t pad_h = 0, pad_w = 0;  // on both sides of each axis, as Conv2d's padding=(pad_h, pad_w)
};

/// Shorthands for the kernels of the reference: square k×k, and kh×kw with "same" padding.
inline basic_conv2d_config conv_k(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride = 1,
                                  std::int64_t pad = 0) {
    return {in, out, k, k, stride, pad, pad};
}
inline basic_conv2d_config conv_same(std::int64_t in, std::int64_t out, std::int64_t kh, std::int64_t kw) {
    return {in, out, kh, kw, 1, kh / 2, kw / 2};
}

template <class T = float, device D = cpu>
struct basic_conv2d {
    using value_type = T;
    using device_type = D;
    static constexpr double bn_eps = 0.001;

    nn::parameter<T, D> conv_weight;       // conv.weight (out, in, kh, kw)
    nn::parameter<T, D> bn_weight;         // bn.weight (out)
    nn::parameter<T, D> bn_bias;           // bn.bias (out)
    nn::parameter<T, D> bn_running_mean;   // bn.running_mean (out), a buffer
    nn::parameter<T, D> bn_running_var;    // bn.running_var (out), a buffer
    nn::parameter<T, D> bn_num_batches_tracked;  // bn.num_batches_tracked (), a buffer evaluation ignores
    basic_conv2d_config config;

    basic_conv2d() = default;
    /// PyTorch's defaults (conv U(±1/√fan_in), norm weight 1, bias 0, mean 0, var 1): the network
    /// is meant to be loaded from the converted weights (tools/convert_inception.py).
    explicit basic_conv2d(const basic_conv2d_config& c, std::uint64_t seed = 0) : config(c) {
        const std::int64_t fan_in = c.in_channels * c.kernel_h * c.kernel_w;
        conv_weight = nn::make_parameter<T, D>({c.out_channels, c.in_channels, c.kernel_h, c.kernel_w},
                                               nn::init_rule::uniform(nn::default_init_bound(fan_in)),
                                               nn::parameter_key(seed, "conv.weight"));
        const tensor_shape channels{c.out_channels};
        bn_weight = nn::make_parameter<T, D>(channels, nn::init_rule::constant(1), 0);
        bn_bias = nn::make_parameter<T, D>(channels, nn::init_rule::constant(0), 0);
        bn_running_mean = nn::make_parameter<T, D>(channels, nn::init_rule::constant(0), 0);
        bn_running_var = nn::make_parameter<T, D>(channels, nn::init_rule::constant(1), 0);
        bn_num_batches_tracked = nn::make_parameter<T, D>(tensor_shape{}, nn::init_rule::constant(0), 0);
        for (auto* buffer : {&bn_running_mean, &bn_running_var, &bn_num_batches_tracked}) buffer->trainable = false;
    }

    /// x (N, in, H, W) → relu(bn(conv(x))) (N, out, Ho, Wo).
    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        auto [scale, shift] = ops::batch_norm_fold(bn_weight.value.view(), bn_bias.value.view(), bn_running_mean.value.view(),
                                                   bn_running_var.value.view(), bn_eps);
        const auto folded = ops::mul_broadcast(conv_weight.value.view(), scale.view().reshape({config.out_channels, 1, 1, 1}));
        const ops::conv2d_options options{config.stride, {config.pad_h, config.pad_h, config.pad_w, config.pad_w}};
        auto y = ops::conv2d(x, folded.view(), shift.view(), options);
        ops::relu_inplace(y.view());
        return y;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "conv.weight"), conv_weight);
        f(nn::join_name(prefix, "bn.weight"), bn_weight);
        f(nn::join_name(prefix, "bn.bias"), bn_bias);
        f(nn::join_name(prefix, "bn.running_mean"), bn_running_mean);
        f(nn::join_name(prefix, "bn.running_var"), bn_running_var);
        f(nn::join_name(prefix, "bn.num_batches_tracked"), bn_num_batches_tracked);
    }
};

namespace detail {

/// The pool branches' 3×3 stride-1 pools keep the grid: padding 1 on every side.
inline constexpr ops::pool2d_options same_grid_pool{3, 1, 1};
/// The grid reductions' pools: 3×3, stride 2, no padding.
inline constexpr ops::pool2d_options reducing_pool{3, 2, 0};

template <class T, device D>
tensor<T, D> concat_channels(std::vector<tensor<T, D>>& parts) {
    std::vector<tensor_view<T, D>> views;
    for (auto& p : parts) views.push_back(p.view());
    return ops::concat(views, 1);
}

} // namespace detail

/// Mixed_5b–5d: 64 + 64 + 96 + pool_features output channels.
template <class T = float, device D = cpu>
struct inception_a {
    basic_conv2d<T, D> branch1x1, branch5x5_1, branch5x5_2, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3, branch_pool;

    inception_a() = default;
    inception_a(std::int64_t in, std::int64_t pool_features)
        : branch1x1(conv_k(in, 64, 1)), branch5x5_1(conv_k(in, 48, 1)), branch5x5_2(conv_k(48, 64, 5, 1, 2)),
          branch3x3dbl_1(conv_k(in, 64, 1)), branch3x3dbl_2(conv_k(64, 96, 3, 1, 1)), branch3x3dbl_3(conv_k(96, 96, 3, 1, 1)),
          branch_pool(conv_k(in, pool_features, 1)) {}

    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        std::vector<tensor<T, D>> parts;
        parts.push_back(branch1x1.forward(x));
        parts.push_back(branch5x5_2.forward(branch5x5_1.forward(x)));
        parts.push_back(branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x))));
        parts.push_back(branch_pool.forward(ops::avg_pool2d(x, detail::same_grid_pool, /*count_include_pad=*/false)));
        return detail::concat_channels(parts);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        branch1x1.for_each_parameter(f, nn::join_name(prefix, "branch1x1"));
        branch5x5_1.for_each_parameter(f, nn::join_name(prefix, "branch5x5_1"));
        branch5x5_2.for_each_parameter(f, nn::join_name(prefix, "branch5x5_2"));
        branch3x3dbl_1.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_1"));
        branch3x3dbl_2.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_2"));
        branch3x3dbl_3.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_3"));
        branch_pool.for_each_parameter(f, nn::join_name(prefix, "branch_pool"));
    }
};

/// Mixed_6a: 384 + 96 + in output channels on a grid (H − 3)/2 + 1.
template <class T = float, device D = cpu>
struct inception_b {
    basic_conv2d<T, D> branch3x3, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3;

    inception_b() = default;
    explicit inception_b(std::int64_t in)
        : branch3x3(conv_k(in, 384, 3, 2)), branch3x3dbl_1(conv_k(in, 64, 1)), branch3x3dbl_2(conv_k(64, 96, 3, 1, 1)),
          branch3x3dbl_3(conv_k(96, 96, 3, 2)) {}

    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        std::vector<tensor<T, D>> parts;
        parts.push_back(branch3x3.forward(x));
        parts.push_back(branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x))));
        parts.push_back(ops::max_pool2d(x, detail::reducing_pool));
        return detail::concat_channels(parts);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        branch3x3.for_each_parameter(f, nn::join_name(prefix, "branch3x3"));
        branch3x3dbl_1.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_1"));
        branch3x3dbl_2.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_2"));
        branch3x3dbl_3.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_3"));
    }
};

/// Mixed_6b–6e: 4 × 192 output channels; c7 channels inside the factorized 7×7 branches.
template <class T = float, device D = cpu>
struct inception_c {
    basic_conv2d<T, D> branch1x1, branch7x7_1, branch7x7_2, branch7x7_3, branch7x7dbl_1, branch7x7dbl_2, branch7x7dbl_3,
        branch7x7dbl_4, branch7x7dbl_5, branch_pool;

    inception_c() = default;
    inception_c(std::int64_t in, std::int64_t c7)
        : branch1x1(conv_k(in, 192, 1)), branch7x7_1(conv_k(in, c7, 1)), branch7x7_2(conv_same(c7, c7, 1, 7)),
          branch7x7_3(conv_same(c7, 192, 7, 1)), branch7x7dbl_1(conv_k(in, c7, 1)), branch7x7dbl_2(conv_same(c7, c7, 7, 1)),
          branch7x7dbl_3(conv_same(c7, c7, 1, 7)), branch7x7dbl_4(conv_same(c7, c7, 7, 1)),
          branch7x7dbl_5(conv_same(c7, 192, 1, 7)), branch_pool(conv_k(in, 192, 1)) {}

    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        std::vector<tensor<T, D>> parts;
        parts.push_back(branch1x1.forward(x));
        parts.push_back(branch7x7_3.forward(branch7x7_2.forward(branch7x7_1.forward(x))));
        auto dbl = branch7x7dbl_2.forward(branch7x7dbl_1.forward(x));
        dbl = branch7x7dbl_3.forward(dbl);
        dbl = branch7x7dbl_4.forward(dbl);
        parts.push_back(branch7x7dbl_5.forward(dbl));
        parts.push_back(branch_pool.forward(ops::avg_pool2d(x, detail::same_grid_pool, /*count_include_pad=*/false)));
        return detail::concat_channels(parts);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        branch1x1.for_each_parameter(f, nn::join_name(prefix, "branch1x1"));
        branch7x7_1.for_each_parameter(f, nn::join_name(prefix, "branch7x7_1"));
        branch7x7_2.for_each_parameter(f, nn::join_name(prefix, "branch7x7_2"));
        branch7x7_3.for_each_parameter(f, nn::join_name(prefix, "branch7x7_3"));
        branch7x7dbl_1.for_each_parameter(f, nn::join_name(prefix, "branch7x7dbl_1"));
        branch7x7dbl_2.for_each_parameter(f, nn::join_name(prefix, "branch7x7dbl_2"));
        branch7x7dbl_3.for_each_parameter(f, nn::join_name(prefix, "branch7x7dbl_3"));
        branch7x7dbl_4.for_each_parameter(f, nn::join_name(prefix, "branch7x7dbl_4"));
        branch7x7dbl_5.for_each_parameter(f, nn::join_name(prefix, "branch7x7dbl_5"));
        branch_pool.for_each_parameter(f, nn::join_name(prefix, "branch_pool"));
    }
};

/// Mixed_7a: 320 + 192 + in output channels on a grid (H − 3)/2 + 1.
template <class T = float, device D = cpu>
struct inception_d {
    basic_conv2d<T, D> branch3x3_1, branch3x3_2, branch7x7x3_1, branch7x7x3_2, branch7x7x3_3, branch7x7x3_4;

    inception_d() = default;
    explicit inception_d(std::int64_t in)
        : branch3x3_1(conv_k(in, 192, 1)), branch3x3_2(conv_k(192, 320, 3, 2)), branch7x7x3_1(conv_k(in, 192, 1)),
          branch7x7x3_2(conv_same(192, 192, 1, 7)), branch7x7x3_3(conv_same(192, 192, 7, 1)),
          branch7x7x3_4(conv_k(192, 192, 3, 2)) {}

    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        std::vector<tensor<T, D>> parts;
        parts.push_back(branch3x3_2.forward(branch3x3_1.forward(x)));
        auto b = branch7x7x3_2.forward(branch7x7x3_1.forward(x));
        b = branch7x7x3_3.forward(b);
        parts.push_back(branch7x7x3_4.forward(b));
        parts.push_back(ops::max_pool2d(x, detail::reducing_pool));
        return detail::concat_channels(parts);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        branch3x3_1.for_each_parameter(f, nn::join_name(prefix, "branch3x3_1"));
        branch3x3_2.for_each_parameter(f, nn::join_name(prefix, "branch3x3_2"));
        branch7x7x3_1.for_each_parameter(f, nn::join_name(prefix, "branch7x7x3_1"));
        branch7x7x3_2.for_each_parameter(f, nn::join_name(prefix, "branch7x7x3_2"));
        branch7x7x3_3.for_each_parameter(f, nn::join_name(prefix, "branch7x7x3_3"));
        branch7x7x3_4.for_each_parameter(f, nn::join_name(prefix, "branch7x7x3_4"));
    }
};

/// How an inception_e block pools its pool branch: FIDInceptionE_1 (Mixed_7b) averages without
/// the padding, FIDInceptionE_2 (Mixed_7c) takes the maximum (the 2015 graph's quirk).
enum class e_pool { average, maximum };

/// Mixed_7b, 7c: 320 + 768 + 768 + 192 = 2048 output channels.
template <class T = float, device D = cpu>
struct inception_e {
    basic_conv2d<T, D> branch1x1, branch3x3_1, branch3x3_2a, branch3x3_2b, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3a,
        branch3x3dbl_3b, branch_pool;
    e_pool pool = e_pool::average;

    inception_e() = default;
    inception_e(std::int64_t in, e_pool p)
        : branch1x1(conv_k(in, 320, 1)), branch3x3_1(conv_k(in, 384, 1)), branch3x3_2a(conv_same(384, 384, 1, 3)),
          branch3x3_2b(conv_same(384, 384, 3, 1)), branch3x3dbl_1(conv_k(in, 448, 1)), branch3x3dbl_2(conv_k(448, 384, 3, 1, 1)),
          branch3x3dbl_3a(conv_same(384, 384, 1, 3)), branch3x3dbl_3b(conv_same(384, 384, 3, 1)), branch_pool(conv_k(in, 192, 1)),
          pool(p) {}

    tensor<T, D> forward(const tensor_view<T, D>& x) const {
        std::vector<tensor<T, D>> parts;
        parts.push_back(branch1x1.forward(x));
        {
            const auto mid = branch3x3_1.forward(x);
            parts.push_back(branch3x3_2a.forward(mid));
            parts.push_back(branch3x3_2b.forward(mid));
        }
        {
            const auto mid = branch3x3dbl_2.forward(branch3x3dbl_1.forward(x));
            parts.push_back(branch3x3dbl_3a.forward(mid));
            parts.push_back(branch3x3dbl_3b.forward(mid));
        }
        const auto pooled = pool == e_pool::maximum ? ops::max_pool2d(x, detail::same_grid_pool)
                                                    : ops::avg_pool2d(x, detail::same_grid_pool, /*count_include_pad=*/false);
        parts.push_back(branch_pool.forward(pooled));
        return detail::concat_channels(parts);  // (1×3, 3×1) pairs side by side: the reference's nested cat
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        branch1x1.for_each_parameter(f, nn::join_name(prefix, "branch1x1"));
        branch3x3_1.for_each_parameter(f, nn::join_name(prefix, "branch3x3_1"));
        branch3x3_2a.for_each_parameter(f, nn::join_name(prefix, "branch3x3_2a"));
        branch3x3_2b.for_each_parameter(f, nn::join_name(prefix, "branch3x3_2b"));
        branch3x3dbl_1.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_1"));
        branch3x3dbl_2.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_2"));
        branch3x3dbl_3a.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_3a"));
        branch3x3dbl_3b.for_each_parameter(f, nn::join_name(prefix, "branch3x3dbl_3b"));
        branch_pool.for_each_parameter(f, nn::join_name(prefix, "branch_pool"));
    }
};

} // namespace vediff::models
