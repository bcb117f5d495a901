#pragma once
// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the IDX files of Debian's dataset-fashion-mnist
// package: 60000 training and 10000 test images of 28×28 grey pixels, ten clothing classes.
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/error.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/idx.hpp"

namespace vediff::data {

inline const std::filesystem::path fashion_mnist_default_dir = "/usr/share/datasets/fashion-mnist";

/// Class names by label, as published with the data set.
inline constexpr std::array<std::string_view, 10> fashion_mnist_classes = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

enum class split { train, test };

struct fashion_mnist_options {
    std::filesystem::path directory = fashion_mnist_default_dir;
    /// Adds a 2-pixel background border (28 → 32), so that the tokenizer's power-of-two
    /// down-sampling divides the image evenly.
    bool pad_to_32 = false;
    /// Pixels in [−1, 1] instead of [0, 1] (background −1).
    bool symmetric_range = false;
};

/// The format the tokenizer trains on: 32×32, pixels in [−1, 1].
inline fashion_mnist_options fashion_mnist_tokenizer_format(std::filesystem::path directory = fashion_mnist_default_dir) {
    return {std::move(directory), true, true};
}

/// The image and label file names of a split.
inline std::pair<std::filesystem::path, std::filesystem::path> fashion_mnist_files(split which, const std::filesystem::path& dir) {
    const char* prefix = which == split::train ? "train" : "t10k";
    return {dir / fmt::format("{}-images-idx3-ubyte.gz", prefix), dir / fmt::format("{}-labels-idx1-ubyte.gz", prefix)};
}

/// True when all four files are in `dir`.
inline bool fashion_mnist_available(const std::filesystem::path& dir = fashion_mnist_default_dir) {
    std::error_code ec;
    for (auto which : {split::train, split::test}) {
        auto [images, labels] = fashion_mnist_files(which, dir);
        if (!std::filesystem::exists(images, ec) || !std::filesystem::exists(labels, ec)) return false;
    }
    return true;
}

/// Loads one split: images (N, 1, 28, 28) in [0, 1] by default (see the options), labels 0..9.
template <class T = float>
labeled_images<T> load_fashion_mnist(split which, const fashion_mnist_options& opt = {}) {
    const auto [image_path, label_path] = fashion_mnist_files(which, opt.directory);
    const auto images = io::read_idx_images(image_path);
    const auto labels = io::read_idx_labels(label_path);
    const std::int64_t n = images.dims[0], rows = images.dims[1], cols = images.dims[2];
    if (labels.dims[0] != n)
        throw io_error(fmt::format("fashion_mnist: {} holds {} images but {} holds {} labels", image_path.string(), n,
                                   label_path.string(), labels.dims[0]));
    if (rows != 28 || cols != 28)
        throw io_error(fmt::format("fashion_mnist: {}: images are {}×{}, expected 28×28", image_path.string(), rows, cols));

    labeled_images<T> out;
    out.labels.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
        const std::uint8_t label = labels.data[static_cast<std::size_t>(i)];
        if (label >= fashion_mnist_classes.size())
            throw io_error(fmt::format("fashion_mnist: {}: label {} of sample {} is not a class (0..9)", label_path.string(), label, i));
        out.labels[static_cast<std::size_t>(i)] = label;
    }

    // Decoding bytes to pixels is host work on host memory, done once at load time.
    const std::int64_t pad = opt.pad_to_32 ? 2 : 0, side = 28 + 2 * pad;
    const double divisor = opt.symmetric_range ? 127.5 : 255.0;  // a division keeps 255 → exactly 1
    const double offset = opt.symmetric_range ? -1.0 : 0.0;
    out.images = tensor<T, cpu>::full({n, 1, side, side}, static_cast<T>(offset));
    T* dst = out.images.data();
    const std::uint8_t* src = images.data.data();
    cpu_detail::parallel_for(n, [=](std::int64_t i) {
        for (std::int64_t r = 0; r < 28; ++r)
            for (std::int64_t c = 0; c < 28; ++c)
                dst[(i * side + r + pad) * side + c + pad] = static_cast<T>(src[(i * 28 + r) * 28 + c] / divisor + offset);
    }, 784);
    return out;
}

} // namespace vediff::data
