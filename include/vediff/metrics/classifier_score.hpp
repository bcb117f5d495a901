#pragma once
// The Fashion-MNIST classifier (models/fashion_classifier.hpp, trained by `vediff classifier`) as
// a measuring instrument: its accuracy on class-conditional samples against their conditioning
// labels, and its penultimate activations as the feature network of the Fréchet distance and of
// precision / recall. Images arrive in the tokenizer format (N, 1, 32, 32) in [−1, 1]; the
// classifier sees Fashion-MNIST's own (N, 1, 28, 28) in [0, 1], the 2-pixel border cut off again.
// Both run under nn::no_grad: the network keeps nothing (no view of the local classifier-format
// copy, no activations) after they return.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/models/fashion_classifier.hpp"
#include "vediff/nn/grad_mode.hpp"
#include "vediff/ops/cross_entropy.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::metrics {

/// Tokenizer-format images (N, 1, S, S), S ≥ 28, in [−1, 1] → (N, 1, 28, 28) in [0, 1], center crop.
inline tensor<float> to_classifier_format(const tensor_view<float>& images) {
    if (images.rank() != 4 || images.dim(1) != 1 || images.dim(2) < 28 || images.dim(2) != images.dim(3))
        throw std::invalid_argument(fmt::format("to_classifier_format: images {} must be (N, 1, S, S) with S >= 28", images.shape()));
    const std::int64_t n = images.dim(0), pad = (images.dim(2) - 28) / 2;
    auto out = tensor<float>::empty({n, 1, 28, 28});
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t r = 0; r < 28; ++r)
            for (std::int64_t c = 0; c < 28; ++c) out.at(i, 0, r, c) = (images.at(i, 0, r + pad, c + pad) + 1.0f) / 2.0f;
    return out;
}

/// Loads classifier weights saved by the classifier job (its width from the file's metadata).
inline models::fashion_classifier<float> load_fashion_classifier(const std::filesystem::path& weights) {
    if (!std::filesystem::exists(weights))
        throw io_error(fmt::format("classifier {}: no such file (train it with `vediff classifier`)", weights.string()));
    const io::safetensors_file f(weights);
    models::fashion_classifier_config c;
    if (auto it = f.metadata().find("width"); it != f.metadata().end()) c.width = std::stoll(it->second);
    models::fashion_classifier<float> net(c);
    io::load_state_dict(weights, net);
    return net;
}

/// The classifier's penultimate features (N, feature_dim) of tokenizer-format images, in batches.
inline tensor<float> classifier_features(models::fashion_classifier<float>& net, const tensor_view<float>& images,
                                         std::int64_t batch = 500) {
    const nn::no_grad inference;
    const auto x = to_classifier_format(images);
    tensor<float> out;
    for (std::int64_t begin = 0; begin < x.dim(0); begin += batch) {
        const std::int64_t end = std::min(x.dim(0), begin + batch);
        const auto f = net.features(x.slice(begin, end));
        if (!out.defined()) out = tensor<float>::empty({x.dim(0), f.dim(1)});
        ops::copy(out.slice(begin, end), f.view());
    }
    return out;
}

/// The fraction of tokenizer-format images the classifier assigns to their label.
inline double classifier_accuracy(models::fashion_classifier<float>& net, const tensor_view<float>& images,
                                  const std::vector<std::int32_t>& labels) {
    if (static_cast<std::int64_t>(labels.size()) != images.dim(0))
        throw std::invalid_argument(fmt::format("classifier_accuracy: {} labels for images {}", labels.size(), images.shape()));
    const nn::no_grad inference;
    const auto x = to_classifier_format(images);
    std::int64_t correct = 0;
    for (std::int64_t begin = 0; begin < x.dim(0); begin += 500) {
        const std::int64_t end = std::min(x.dim(0), begin + 500);
        const auto logits = net.forward(x.slice(begin, end));
        const auto predicted = ops::argmax(logits.view()).to_vector();
        for (std::int64_t i = begin; i < end; ++i) correct += predicted[std::size_t(i - begin)] == labels[std::size_t(i)];
    }
    return double(correct) / double(x.dim(0));
}

} // namespace vediff::metrics
