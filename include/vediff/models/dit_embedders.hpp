#pragma once
// The input embedders of a diffusion transformer:
//   patch_embedder      `proj` Conv2d(C → D, kernel = stride = p): latents (B, C, H, W) → tokens (B, N, D)
//   timestep_embedder   256 sinusoidal frequencies → `mlp.0` Linear → SiLU → `mlp.2` Linear: t (B) → (B, D)
//   label_embedder      `embedding_table` (classes + 1, D), the last row the null class of
//                       classifier-free guidance; in training, labels are dropped to it with a probability
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/nn/activation.hpp"
#include "vediff/nn/compose.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/nn/embedding.hpp"
#include "vediff/nn/linear.hpp"
#include "vediff/ops/embedding.hpp"
#include "vediff/ops/patchify.hpp"
#include "vediff/ops/positional.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::models {

template <class T = float, device D = cpu>
struct patch_embedder {
    using value_type = T;
    using device_type = D;

    nn::conv2d<T, D> proj;  // (D, C, p, p)

    patch_embedder() = default;
    patch_embedder(std::int64_t in_channels, std::int64_t hidden, std::int64_t patch, std::uint64_t seed = 0)
        : proj({.in_channels = in_channels, .out_channels = hidden, .kernel_size = patch, .stride = patch}, seed) {}

    /// x (B, C, H, W) → (B, (H/p)·(W/p), D), tokens row-major over the patch grid.
    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected
    tensor<T, D> forward(const tensor_view<T, D>& x) {
        auto projected = proj.forward(x);  // (B, D, h, w)
        // Channels-last: patchify with p = 1 is exactly the (B, D, h·w) → (B, h·w, D) transpose.
        auto tokens = ops::patchify(projected.view(), 1);
        projected_ = record_.keep() ? std::move(projected) : tensor<T, D>{};
        return tokens;
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        record_.require("patch_embedder");
        auto dprojected = ops::patchify_backward(dy, 1, projected_.dim(2), projected_.dim(3));
        return proj.backward(dprojected);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        proj.for_each_parameter(f, nn::join_name(prefix, "proj"));
    }

private:
    nn::backward_record record_;
    tensor<T, D> projected_;  // (B, D, h, w)
};

template <class T = float, device D = cpu>
struct timestep_embedder {
    using value_type = T;
    using device_type = D;
    static constexpr std::int64_t frequency_dim = 256;

    nn::sequential<nn::linear<T, D>, nn::silu<T, D>, nn::linear<T, D>> mlp;  // mlp.0, mlp.2

    timestep_embedder() = default;
    explicit timestep_embedder(std::int64_t hidden, std::uint64_t seed = 0)
        : mlp(nn::linear<T, D>(frequency_dim, hidden), nn::silu<T, D>{}, nn::linear<T, D>(hidden, hidden)) {
        nn::initialize(*this, seed);
    }

    /// t (B), used as given → (B, D).
    tensor<T, D> forward(const tensor_view<T, D>& t) {
        auto frequencies = ops::timestep_embedding(t, frequency_dim);
        auto y = mlp.forward(frequencies);
        frequencies_ = record_.keep() ? std::move(frequencies) : tensor<T, D>{};  // mlp.0's input
        return y;
    }
    /// Accumulates the MLP's parameter gradients (t itself gets none).
    void backward(const tensor_view<T, D>& dy) {
        record_.require("timestep_embedder");
        (void)mlp.backward(dy);
    }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        mlp.for_each_parameter(f, nn::join_name(prefix, "mlp"));
    }

private:
    nn::backward_record record_;
    tensor<T, D> frequencies_;  // (B, 256)
};

template <class T = float, device D = cpu>
struct label_embedder {
    using value_type = T;
    using device_type = D;

    std::int64_t num_classes = 0;
    double dropout_prob = 0.1;
    nn::embedding<T, D> embedding_table;  // (num_classes + 1, D); row num_classes: the null class
    philox_generator generator;            // label dropout draws
    bool training = true;

    label_embedder() = default;
    label_embedder(std::int64_t classes, std::int64_t hidden, double drop, std::uint64_t seed = 0)
        : num_classes(classes), dropout_prob(drop), embedding_table(classes + 1, hidden, seed, 0.02),
          generator{nn::mix64(seed ^ 0x6C6162656C73ull), 0, 0} {}

    std::int32_t null_class() const { return static_cast<std::int32_t>(num_classes); }
    void train(bool on) { training = on; }

    /// y (B) in [0, num_classes] → (B, D). In training, each label becomes the null class with
    /// probability dropout_prob (Philox, so the drops depend on the seed and step only). The
    /// labels used are kept here, so y need not outlive backward.
    tensor<T, D> forward(const tensor_view<std::int32_t, D>& y) {
        if constexpr (ops::defers_index_checks<D>) {
            embedding_kernels<D>::defer_index_check("label_embedder", "label (classes and the null class)", y.data(), y.numel(),
                                                    num_classes + 1);
        } else if (const auto bad = ops::find_index_outside(y, num_classes + 1)) {
            throw shape_error(fmt::format("label_embedder: label {} at {} is outside [0, {}] (classes and the null class)",
                                          bad->second, bad->first, num_classes));
        }
        labels_ = tensor<std::int32_t, D>::copy_of(y.reshape({y.numel()}));
        if (training && dropout_prob > 0) ops::replace_with_probability(labels_.view(), generator, dropout_prob, null_class());
        return embedding_table.forward(labels_);
    }
    void backward(const tensor_view<T, D>& dy) { embedding_table.backward(dy); }

    /// The labels of the last forward, after dropout.
    const tensor<std::int32_t, D>& last_labels() const { return labels_; }

    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        embedding_table.for_each_parameter(f, nn::join_name(prefix, "embedding_table"));
    }

private:
    tensor<std::int32_t, D> labels_;  // (B)
};

} // namespace vediff::models
