#pragma once
// The Inception-v3 network of FID (pytorch-fid's port of TensorFlow's 2015 graph,
// pt_inception-2015-12-05): images in [0, 1] → pool3 features (N, 2048), logits (N, 1008) and
// sFID's spatial features (N, 2023). Parameter names are the PyTorch model's state_dict names
// (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_mean, ..., fc.weight, fc.bias), so a
// file made by tools/convert_inception.py loads strictly (io::load_state_dict names any missing,
// extra or mis-shaped tensor). Forward only and cpu only (models/inception_blocks.hpp says why).
//
//   x (N, 3, H, W) in [0, 1]; N, 1, H, W (grayscale) is replicated to 3 channels first
//   resize_bilinear to 299×299 (align_corners=False; pytorch-fid's resize_input), then 2x − 1
//   Conv2d_1a_3x3 (3→32, /2) · Conv2d_2a_3x3 (32→32) · Conv2d_2b_3x3 (32→64, pad 1) · max-pool 3/2
//   Conv2d_3b_1x1 (64→80) · Conv2d_4a_3x3 (80→192) · max-pool 3/2
//   Mixed_5b, 5c, 5d (inception_a) · Mixed_6a (b) · Mixed_6b–6e (c) · Mixed_7a (d) · Mixed_7b, 7c (e)
//   global average → pool3 (2048) → fc → logits (1008; TF's 1008 classes, dropout is off in eval)
//
// The spatial features. ADM's evaluator (openai/guided-diffusion evaluations/evaluator.py) reads
// the TF tensor "mixed_6/conv:0" and keeps spatial[..., :7], flattened per image. The 2015 graph
// names its Inception blocks mixed, mixed_1, ..., mixed_10 in order, which are PyTorch's Mixed_5b,
// 5c, 5d, 6a, 6b, 6c, 6d, ...: mixed_6 is Mixed_6d (the third 17×17 InceptionC block; not 6a, the
// grid reduction, which is mixed_3). Inside a block, TF's scope "conv" is the 1×1 branch
// (branch1x1; the others are tower, tower_1, tower_2), and the node named by the scope itself is
// that layer's last op, the ReLU after conv2d_params and batchnorm (its children). So the tensor
// is Mixed_6d.branch1x1's output (N, 17, 17, 192) in TF's NHWC layout; since PyTorch concatenates
// branch1x1 first, its first 7 channels are also Mixed_6d's output channels 0–6. The feature
// vector is flattened in TF's order (row, column, channel), 17·17·7 = 2023 values, so that it
// equals the evaluator's element for element (the Fréchet distance would not change under a fixed
// permutation, but features written to files should match). At 299×299 the grid is 17×17 for
// every input size, since the input is always resized.
#include <cstdint>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "vediff/models/inception_blocks.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/gemm.hpp"
#include "vediff/ops/patchify.hpp"
#include "vediff/ops/reduce.hpp"
#include "vediff/ops/resize.hpp"

namespace vediff::models {

/// What the FID Inception computes for a batch of N images.
template <class T = float, device D = cpu>
struct inception_features {
    tensor<T, D> pool3;    // (N, 2048): FID's features
    tensor<T, D> logits;   // (N, 1008): the Inception Score's logits (softmax of these)
    tensor<T, D> spatial;  // (N, 2023): sFID's features, Mixed_6d channels 0–6 in (row, column, channel) order
};

/// (N, 1, H, W) → (N, 3, H, W) by repeating the channel; (N, 3, H, W) is copied as is. Other
/// channel counts are an error naming the shape.
template <class T, device D>
tensor<T, D> replicate_grayscale(const tensor_view<T, D>& x) {
    if (x.rank() != 4 || (x.dim(1) != 1 && x.dim(1) != 3))
        throw shape_error(fmt::format("inception: images must be (N, 1, H, W) or (N, 3, H, W), got {}", x.shape()));
    if (x.dim(1) == 3) return tensor<T, D>::copy_of(x);
    return ops::concat(std::vector<tensor_view<T, D>>{x, x, x}, 1);
}

template <class T = float, device D = cpu>
struct fid_inception_v3 {
    using value_type = T;
    using device_type = D;
    static constexpr std::int64_t input_size = 299;
    static constexpr std::int64_t pool3_features = 2048;
    static constexpr std::int64_t num_classes = 1008;
    static constexpr std::int64_t spatial_channels = 7;
    static constexpr std::int64_t spatial_grid = 17;
    static constexpr std::int64_t spatial_features = spatial_channels * spatial_grid * spatial_grid;  // 2023

    basic_conv2d<T, D> Conv2d_1a_3x3{conv_k(3, 32, 3, 2)};
    basic_conv2d<T, D> Conv2d_2a_3x3{conv_k(32, 32, 3)};
    basic_conv2d<T, D> Conv2d_2b_3x3{conv_k(32, 64, 3, 1, 1)};
    basic_conv2d<T, D> Conv2d_3b_1x1{conv_k(64, 80, 1)};
    basic_conv2d<T, D> Conv2d_4a_3x3{conv_k(80, 192, 3)};
    inception_a<T, D> Mixed_5b{192, 32};
    inception_a<T, D> Mixed_5c{256, 64};
    inception_a<T, D> Mixed_5d{288, 64};
    inception_b<T, D> Mixed_6a{288};
    inception_c<T, D> Mixed_6b{768, 128};
    inception_c<T, D> Mixed_6c{768, 160};
    inception_c<T, D> Mixed_6d{768, 160};
    inception_c<T, D> Mixed_6e{768, 192};
    inception_d<T, D> Mixed_7a{768};
    inception_e<T, D> Mixed_7b{1280, e_pool::average};
    inception_e<T, D> Mixed_7c{2048, e_pool::maximum};
    nn::parameter<T, D> fc_weight = nn::make_parameter<T, D>({num_classes, pool3_features},
                                                             nn::init_rule::uniform(nn::default_init_bound(pool3_features)),
                                                             nn::parameter_key(0, "fc.weight"));
    nn::parameter<T, D> fc_bias = nn::make_parameter<T, D>({num_classes}, nn::init_rule::uniform(nn::default_init_bound(pool3_features)),
                                                           nn::parameter_key(0, "fc.bias"));

    /// images (N, 3 or 1, H, W) with values in [0, 1] → pool3, logits and spatial features.
    inception_features<T, D> forward(const tensor_view<T, D>& images) const {
        const auto rgb = replicate_grayscale(images);
        auto x = ops::resize_bilinear(rgb.view(), input_size, input_size);
        x = ops::add_scalar(ops::scale(x.view(), T(2)).view(), T(-1));
        x = Conv2d_2b_3x3.forward(Conv2d_2a_3x3.forward(Conv2d_1a_3x3.forward(x)));
        x = ops::max_pool2d(x.view(), detail::reducing_pool);
        x = Conv2d_4a_3x3.forward(Conv2d_3b_1x1.forward(x));
        x = ops::max_pool2d(x.view(), detail::reducing_pool);
        x = Mixed_5d.forward(Mixed_5c.forward(Mixed_5b.forward(x)));
        x = Mixed_6c.forward(Mixed_6b.forward(Mixed_6a.forward(x)));
        x = Mixed_6d.forward(x);
        inception_features<T, D> out;
        out.spatial = spatial_of(x);
        x = Mixed_7a.forward(Mixed_6e.forward(x));
        x = Mixed_7c.forward(Mixed_7b.forward(x));
        out.pool3 = ops::global_avg_pool(x.view());
        out.logits = ops::linear(out.pool3.view(), fc_weight.value.view(), fc_bias.value.view());
        return out;
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        Conv2d_1a_3x3.for_each_parameter(f, nn::join_name(prefix, "Conv2d_1a_3x3"));
        Conv2d_2a_3x3.for_each_parameter(f, nn::join_name(prefix, "Conv2d_2a_3x3"));
        Conv2d_2b_3x3.for_each_parameter(f, nn::join_name(prefix, "Conv2d_2b_3x3"));
        Conv2d_3b_1x1.for_each_parameter(f, nn::join_name(prefix, "Conv2d_3b_1x1"));
        Conv2d_4a_3x3.for_each_parameter(f, nn::join_name(prefix, "Conv2d_4a_3x3"));
        Mixed_5b.for_each_parameter(f, nn::join_name(prefix, "Mixed_5b"));
        Mixed_5c.for_each_parameter(f, nn::join_name(prefix, "Mixed_5c"));
        Mixed_5d.for_each_parameter(f, nn::join_name(prefix, "Mixed_5d"));
        Mixed_6a.for_each_parameter(f, nn::join_name(prefix, "Mixed_6a"));
        Mixed_6b.for_each_parameter(f, nn::join_name(prefix, "Mixed_6b"));
        Mixed_6c.for_each_parameter(f, nn::join_name(prefix, "Mixed_6c"));
        Mixed_6d.for_each_parameter(f, nn::join_name(prefix, "Mixed_6d"));
        Mixed_6e.for_each_parameter(f, nn::join_name(prefix, "Mixed_6e"));
        Mixed_7a.for_each_parameter(f, nn::join_name(prefix, "Mixed_7a"));
        Mixed_7b.for_each_parameter(f, nn::join_name(prefix, "Mixed_7b"));
        Mixed_7c.for_each_parameter(f, nn::join_name(prefix, "Mixed_7c"));
        f(nn::join_name(prefix, "fc.weight"), fc_weight);
        f(nn::join_name(prefix, "fc.bias"), fc_bias);
    }

private:
    /// Mixed_6d's output (N, 768, 17, 17) → channels 0–6 as (N, 17·17·7), channel fastest.
    static tensor<T, D> spatial_of(const tensor<T, D>& mixed_6d) {
        const std::int64_t n = mixed_6d.dim(0);
        auto first = ops::split(mixed_6d.view(), {spatial_channels, mixed_6d.dim(1) - spatial_channels}, 1);
        auto channels_last = ops::patchify(first[0].view(), 1);  // (N, 17·17, 7): TF's NHWC order
        return std::move(channels_last).reshape({n, spatial_features});
    }
};

} // namespace vediff::models
