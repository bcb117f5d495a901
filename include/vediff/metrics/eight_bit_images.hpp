#pragma once
// Images as the reference protocols score them: 8-bit. Every published sample metric reads PNGs or
// uint8 arrays, so a metric of raw float decodes (values outside [−1, 1], between levels) is not
// comparable. quantize_to_8bit is the one place where [−1, 1] floats become bytes:
//     b = floor(clamp(127.5·(x + 1), 0, 255) + ½)   (round half up)
// DiT's and LightningDiT's sample_ddp.py: clamp(127.5·x + 128, 0, 255).to(uint8), which truncates
// 127.5·(x + 1) + ½, i.e. rounds half up (ADM's image_sample.py truncates ((x + 1)·127.5) without
// the ½). from_8bit maps b back to b/127.5 − 1, Fashion-MNIST's own mapping
// (data/fashion_mnist.hpp), so a test image survives the round trip exactly and quantizing twice
// changes nothing. as_8bit_images = from_8bit ∘ quantize_to_8bit is what every metric path
// (gFD, precision / recall, classifier accuracy, PSNR, rFD) computes on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"

namespace vediff::metrics {

/// The byte of a [−1, 1] pixel value; NaN is an error (it has no byte).
inline std::uint8_t quantize_to_8bit(float x) {
    if (std::isnan(x)) throw std::invalid_argument("quantize_to_8bit: a pixel value is NaN");
    const double u = std::clamp(127.5 * (double(x) + 1.0), 0.0, 255.0);
    return static_cast<std::uint8_t>(std::floor(u + 0.5));
}

/// The bytes of host images in [−1, 1], element for element.
inline std::vector<std::uint8_t> quantize_to_8bit(const tensor_view<float>& images) {
    const auto values = images.to_vector();
    std::vector<std::uint8_t> bytes(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) bytes[i] = quantize_to_8bit(values[i]);
    return bytes;
}

/// Bytes → [−1, 1] pixel values b/127.5 − 1, shaped `shape`.
inline tensor<float> from_8bit(std::span<const std::uint8_t> bytes, const tensor_shape& shape) {
    if (static_cast<std::int64_t>(bytes.size()) != shape.numel())
        throw std::invalid_argument(fmt::format("from_8bit: {} bytes for images of shape {}", bytes.size(), shape));
    auto out = tensor<float>::empty(shape);
    for (std::size_t i = 0; i < bytes.size(); ++i) out.data()[i] = static_cast<float>(bytes[i] / 127.5 - 1.0);
    return out;
}

/// The images as the metrics see them: quantized to 8 bits and mapped back to [−1, 1].
inline tensor<float> as_8bit_images(const tensor_view<float>& images) {
    const auto bytes = quantize_to_8bit(images);
    return from_8bit(bytes, images.shape());
}

} // namespace vediff::metrics
