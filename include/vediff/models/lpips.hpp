#pragma once
// LPIPS (Zhang et al. 2018; the `lpips` package, net 'vgg', version 0.1), the perceptual distance
// of LDM's and VA-VAE's tokenizer losses. For images x0, x1 (N, 3, H, W) in [−1, 1]:
//   scaling_layer   (x − shift) / scale per channel, shift (−.030, −.088, −.188), scale (.458, .448, .450)
//   net             VGG16's features up to relu5_3, in five slices ending at relu1_2, relu2_2,
//                   relu3_3, relu4_3, relu5_3 (channels 64, 128, 256, 512, 512)
//   per slice k     f̂ = f / (‖f‖₂ over channels + 1e-10) for both images, d = (f̂0 − f̂1)²,
//                   lin_k: a 1×1 convolution to one channel, no bias (its weights are non-negative)
//   distance        Σ_k mean over positions of lin_k(d), one value per image pair (N).
// The network is frozen (its parameters are fixed, not trained); backward gives the distance's
// gradient with respect to x0, through which a decoder trains. Parameter names are the lpips
// package's state_dict names (`net.slice1.0.weight` … `net.slice5.28.bias`, the VGG feature
// indices; `lin0.model.1.weight` …; `scaling_layer.shift`, `.scale`), so its weights load
// (tools/ converts torchvision's VGG16 and lpips' vgg.pth into one file).
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/nn/init.hpp"
#include "vediff/nn/pool.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/channel_norm.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/reduce.hpp"

namespace vediff::models {

template <class T = float, device D = cpu>
struct lpips {
    using value_type = T;
    using device_type = D;
    using conv = nn::conv2d<T, D>;
    using relu = nn::relu<T, D>;
    using pool = nn::max_pool2d<T, D>;
    using slice1_type = nn::sequential<conv, relu, conv, relu>;
    using slice2_type = nn::sequential<pool, conv, relu, conv, relu>;
    using slice3_type = nn::sequential<pool, conv, relu, conv, relu, conv, relu>;

    static constexpr std::array<int, 5> first_index{0, 4, 9, 16, 23};  // of each slice in VGG16's features

    nn::parameter<T, D> shift, scale;  // scaling_layer, (1, 3, 1, 1), fixed
    slice1_type slice1;
    slice2_type slice2;
    slice3_type slice3, slice4, slice5;
    std::array<conv, 5> lin;  // lin_k.model.1: 1×1, C_k → 1, no bias

    /// Random weights (PyTorch's default init) unless loaded; the constants of the scaling layer.
    /// width_divisor > 1 divides every VGG width (64 … 512) for tests; the real network has 1.
    explicit lpips(std::uint64_t seed = 0, std::int64_t width_divisor = 1)
        : slice1(layer(3, w(64, width_divisor)), relu{}, layer(w(64, width_divisor), w(64, width_divisor)), relu{}),
          slice2(pool{}, layer(w(64, width_divisor), w(128, width_divisor)), relu{}, layer(w(128, width_divisor), w(128, width_divisor)),
                 relu{}),
          slice3(pool{}, layer(w(128, width_divisor), w(256, width_divisor)), relu{}, layer(w(256, width_divisor), w(256, width_divisor)),
                 relu{}, layer(w(256, width_divisor), w(256, width_divisor)), relu{}),
          slice4(pool{}, layer(w(256, width_divisor), w(512, width_divisor)), relu{}, layer(w(512, width_divisor), w(512, width_divisor)),
                 relu{}, layer(w(512, width_divisor), w(512, width_divisor)), relu{}),
          slice5(pool{}, layer(w(512, width_divisor), w(512, width_divisor)), relu{}, layer(w(512, width_divisor), w(512, width_divisor)),
                 relu{}, layer(w(512, width_divisor), w(512, width_divisor)), relu{}),
          lin{head(w(64, width_divisor)), head(w(128, width_divisor)), head(w(256, width_divisor)), head(w(512, width_divisor)),
              head(w(512, width_divisor))} {
        shift = nn::parameter<T, D>(tensor_shape{1, 3, 1, 1}, false);
        scale = nn::parameter<T, D>(tensor_shape{1, 3, 1, 1}, false);
        nn::initialize(*this, seed);
        shift.value = tensor<T, D>::from_host({1, 3, 1, 1}, {T(-.030), T(-.088), T(-.188)});
        scale.value = tensor<T, D>::from_host({1, 3, 1, 1}, {T(.458), T(.448), T(.450)});
        for_each_parameter([](const std::string&, nn::parameter<T, D>& p) { p.trainable = false; }, std::string{});
    }

    /// x0, x1 (N, 3, H, W) in [−1, 1], H and W ≥ 16 → the distance (N). x0 must outlive backward.
    tensor<T, D> forward(tensor<T, D>&&, const tensor_view<T, D>&) = delete;
    tensor<T, D> forward(const tensor_view<T, D>& x0, const tensor_view<T, D>& x1) {
        if (x0.rank() != 4 || x0.dim(1) != 3 || !(x0.shape() == x1.shape()) || x0.dim(2) < 16 || x0.dim(3) < 16)
            throw shape_error(fmt::format("lpips: x0 {} and x1 {} must both be (N, 3, H, W) with H, W ≥ 16", x0.shape(), x1.shape()));
        std::array<tensor<T, D>, 5> reference;  // x1's normalized features (no gradient)
        {
            nn::no_grad off;
            auto f = features(x1);
            for (std::size_t k = 0; k < 5; ++k) reference[k] = std::move(ops::unit_normalize_channels(f[k].view()).y);
        }
        const bool keep = record_.keep();
        scaled_ = scaled(x0);
        auto f = features(scaled_.view(), true);
        tensor<T, D> distance = tensor<T, D>::zeros({x0.dim(0)});
        for (std::size_t k = 0; k < 5; ++k) {
            auto normalized = ops::unit_normalize_channels(f[k].view());
            auto diff = ops::sub(normalized.y.view(), reference[k].view());
            auto squared = ops::mul(diff.view(), diff.view());
            auto l = lin[k].forward(squared);  // (N, 1, h, w)
            auto per_image = ops::mean(l.reshape({l.dim(0), l.dim(2) * l.dim(3)}), 1);
            ops::axpy(distance.view(), per_image.view());
            if (keep) {
                features_[k] = std::move(f[k]);
                norms_[k] = std::move(normalized.norm);
                diffs_[k] = std::move(diff);
                squared_[k] = std::move(squared);
                positions_[k] = l.dim(2) * l.dim(3);
            }
        }
        if (!keep) release_saved();
        return distance;
    }

    /// d distance (N) → d x0 (N, 3, H, W).
    tensor<T, D> backward(const tensor_view<T, D>& ddistance) {
        const bool release = record_.spend("lpips");
        std::array<tensor<T, D>, 5> dfeature;
        for (std::size_t k = 0; k < 5; ++k) {
            const auto n = ddistance.dim(0);
            const auto& sq = squared_[k];
            // mean over positions, then the 1×1 head, then the square and the normalization.
            const auto per_position = ops::scale(ddistance, T(1.0 / double(positions_[k])));
            auto dl = ops::broadcast_to(per_position.reshape({n, 1, 1, 1}), tensor_shape{n, 1, sq.dim(2), sq.dim(3)});
            auto dsquared = lin[k].backward(dl);
            auto ddiff = ops::scale(ops::mul(dsquared.view(), diffs_[k].view()).view(), T(2));
            dfeature[k] = ops::unit_normalize_channels_backward(ddiff.view(), features_[k].view(), norms_[k].view());
        }
        auto d = slice5.backward(dfeature[4]);
        ops::axpy(d.view(), dfeature[3].view());
        d = slice4.backward(d);
        ops::axpy(d.view(), dfeature[2].view());
        d = slice3.backward(d);
        ops::axpy(d.view(), dfeature[1].view());
        d = slice2.backward(d);
        ops::axpy(d.view(), dfeature[0].view());
        d = slice1.backward(d);
        if (release) release_saved();
        // (x − shift) / scale: the gradient is divided by scale per channel.
        const auto inverse = ops::div(tensor<T, D>::full(scale.shape(), T(1)).view(), scale.value.view());
        return ops::mul_broadcast(d.view(), inverse.view());
    }

    /// Drops what the last forward kept for backward (the VGG activations of x0, several hundred MB
    /// at 256 px), as backward itself does unless under nn::retain_graph; a backward after this is
    /// an error naming the layer.
    void forget() {
        nn::no_grad off;
        const auto tiny = tensor<T, D>::zeros({1, 3, 16, 16});
        (void)forward(tiny.view(), tiny.view());
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        f(nn::join_name(prefix, "scaling_layer.shift"), shift);
        f(nn::join_name(prefix, "scaling_layer.scale"), scale);
        visit_slice(slice1, 1, f, prefix);
        visit_slice(slice2, 2, f, prefix);
        visit_slice(slice3, 3, f, prefix);
        visit_slice(slice4, 4, f, prefix);
        visit_slice(slice5, 5, f, prefix);
        for (std::size_t k = 0; k < 5; ++k) lin[k].for_each_parameter(f, nn::join_name(prefix, fmt::format("lin{}.model.1", k)));
    }

private:
    static std::int64_t w(std::int64_t width, std::int64_t divisor) {
        if (divisor < 1 || width % divisor != 0)
            throw std::invalid_argument(fmt::format("lpips: width divisor {} does not divide the VGG width {}", divisor, width));
        return width / divisor;
    }
    static conv layer(std::int64_t in, std::int64_t out) {
        return conv({.in_channels = in, .out_channels = out, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)});
    }
    static conv head(std::int64_t in) { return conv({.in_channels = in, .out_channels = 1, .kernel_size = 1, .bias = false}); }

    // Names "net.slice<k>.<VGG feature index>.<weight|bias>": the slice's own child index plus
    // the slice's first feature index.
    template <class Slice, class F>
    static void visit_slice(Slice& slice, int k, F& f, const std::string& prefix) {
        slice.for_each_parameter([&](const std::string& name, nn::parameter<T, D>& p) {
            const auto dot = name.find('.');
            const int index = std::stoi(name.substr(0, dot)) + first_index[static_cast<std::size_t>(k - 1)];
            f(nn::join_name(prefix, fmt::format("net.slice{}.{}{}", k, index, name.substr(dot))), p);
        }, std::string{});
    }

    tensor<T, D> scaled(const tensor_view<T, D>& x) const {
        const auto negative_shift = ops::scale(shift.value.view(), T(-1));
        const auto centered = ops::add_broadcast(x, negative_shift.view());
        const auto inverse = ops::div(tensor<T, D>::full(scale.shape(), T(1)).view(), scale.value.view());
        return ops::mul_broadcast(centered.view(), inverse.view());
    }

    // The five relu outputs for the scaled image (already scaled when `is_scaled`); under
    // nn::no_grad nothing is kept, else the slices keep what their backward needs.
    std::array<tensor<T, D>, 5> features(const tensor_view<T, D>& x, bool is_scaled = false) {
        std::array<tensor<T, D>, 5> f;
        tensor<T, D> s;
        if (!is_scaled) s = scaled(x);
        f[0] = slice1.forward(is_scaled ? x : s.view());
        f[1] = slice2.forward(f[0]);
        f[2] = slice3.forward(f[1]);
        f[3] = slice4.forward(f[2]);
        f[4] = slice5.forward(f[3]);
        return f;
    }

    void release_saved() {
        scaled_ = tensor<T, D>{};
        for (std::size_t k = 0; k < 5; ++k) {
            features_[k] = tensor<T, D>{};
            norms_[k] = tensor<T, D>{};
            diffs_[k] = tensor<T, D>{};
            squared_[k] = tensor<T, D>{};
        }
    }

    nn::backward_record record_;
    tensor<T, D> scaled_;
    std::array<tensor<T, D>, 5> features_, norms_, diffs_, squared_;
    std::array<std::int64_t, 5> positions_{};
};

} // namespace vediff::models
