#pragma once
// Users' own images: a folder of PNG/JPEG files (searched recursively) loaded into memory as
// square tensors for the tokenizer, and a random horizontal flip to apply per batch.
// Each image is center-cropped to a square (side min(H, W)), resized with stb_image_resize
// (Mitchell filter when shrinking, Catmull-Rom when enlarging, clamped edges, 8-bit linear) and
// scaled to [−1, 1]. Files are listed in sorted path order, so indices and labels are the same on
// every machine; a label is the index of the image's top-level subfolder (torchvision's
// ImageFolder convention), "" standing for images at the top. Symlinked files are read;
// symlinked subfolders are not entered (a link cycle would never end). JPEG EXIF orientation is
// ignored (libjpeg does not apply it), as PIL's Image.open ignores it.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <stb_image_resize.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/error.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/data/loader.hpp"
#include "vediff/io/image.hpp"

namespace vediff::data {

struct image_folder_options {
    std::int64_t size = 32;                        // side of the square output images
    int channels = 3;                              // 1 (luminance) or 3 (RGB); alpha is dropped
    bool recursive = true;                         // also search subfolders
    io::value_range range = io::symmetric_range;   // pixel values of the tensors
};

/// The images of a folder with their files and class names.
template <class T = float>
struct image_folder {
    labeled_images<T> data;                   // images (N, channels, size, size); labels index `classes`
    std::vector<std::filesystem::path> files; // (N), sorted
    std::vector<std::string> classes;         // sorted names of the top-level subfolders ("" for the top itself)

    std::int64_t size() const { return data.size(); }
};

/// True for the extensions the loader reads: .png, .jpg, .jpeg, in any letter case.
inline bool is_image_file(const std::filesystem::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

/// The image files of a folder, sorted. Throws io_error when the folder is missing or unreadable.
inline std::vector<std::filesystem::path> list_image_files(const std::filesystem::path& dir, bool recursive = true) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw io_error(fmt::format("image_folder: {}: {}", dir.string(), fs::exists(dir, ec) ? "not a directory" : "no such directory"));
    std::vector<fs::path> files;
    const auto visit = [&](auto it) {
        for (const auto end = decltype(it){}; it != end; it.increment(ec)) {
            if (ec) break;
            if (it->is_regular_file(ec) && is_image_file(it->path())) files.push_back(it->path());
        }
    };
    if (recursive) visit(fs::recursive_directory_iterator(dir, ec));
    else visit(fs::directory_iterator(dir, ec));
    if (ec) throw io_error(fmt::format("image_folder: {}: cannot list the folder: {}", dir.string(), ec.message()));
    std::sort(files.begin(), files.end());
    return files;
}

/// The labeled files of a folder (the ImageFolder convention), listed once.
struct image_files {
    std::vector<std::filesystem::path> files;  // sorted
    std::vector<std::int32_t> labels;          // index into classes, per file
    std::vector<std::string> classes;          // sorted names of the top-level subfolders ("" for the top itself)

    std::int64_t size() const { return static_cast<std::int64_t>(files.size()); }

    /// The files at these indices, in this order (a split), with the same classes.
    image_files subset(std::span<const std::int64_t> indices) const {
        image_files out;
        out.classes = classes;
        for (const auto i : indices) {
            out.files.push_back(files.at(static_cast<std::size_t>(i)));
            out.labels.push_back(labels.at(static_cast<std::size_t>(i)));
        }
        return out;
    }
};

/// Lists a folder's images with their labels; io_error when it is missing or holds no image.
inline image_files list_labeled_images(const std::filesystem::path& dir, bool recursive = true) {
    image_files out;
    out.files = list_image_files(dir, recursive);
    if (out.files.empty())
        throw io_error(fmt::format("image_folder: {}: no image files (.png, .jpg, .jpeg){}", dir.string(),
                                   recursive ? " in it or its subfolders" : ""));
    std::map<std::string, std::int32_t> class_index;
    std::vector<std::string> class_of(out.files.size());
    for (std::size_t i = 0; i < out.files.size(); ++i) {
        const auto rel = out.files[i].lexically_relative(dir);
        class_of[i] = std::distance(rel.begin(), rel.end()) > 1 ? rel.begin()->string() : std::string();
        class_index.emplace(class_of[i], 0);
    }
    for (auto& [name, index] : class_index) {
        index = static_cast<std::int32_t>(out.classes.size());
        out.classes.push_back(name);
    }
    for (std::size_t i = 0; i < out.files.size(); ++i) out.labels.push_back(class_index.at(class_of[i]));
    return out;
}

/// The central square of an image (side min(H, W), offset rounded down), resized to size × size.
inline io::image center_crop_resize(const io::image& img, std::int64_t size) {
    if (size < 1) throw std::invalid_argument(fmt::format("center_crop_resize: size {} < 1", size));
    const std::int64_t side = std::min(img.height, img.width);
    const std::int64_t top = (img.height - side) / 2, left = (img.width - side) / 2;
    const std::int64_t row_bytes = img.width * img.channels;
    const std::uint8_t* origin = img.pixels.data() + top * row_bytes + left * img.channels;
    io::image out(size, size, img.channels);
    if (side == size) {  // a crop only: keep the pixels exactly
        for (std::int64_t y = 0; y < size; ++y)
            std::copy_n(origin + y * row_bytes, size * img.channels, out.pixels.begin() + y * size * img.channels);
    } else if (!stbir_resize_uint8(origin, static_cast<int>(side), static_cast<int>(side), static_cast<int>(row_bytes),
                                   out.pixels.data(), static_cast<int>(size), static_cast<int>(size), 0, img.channels)) {
        throw std::runtime_error(fmt::format("center_crop_resize: stb_image_resize failed ({}² → {}²)", side, size));
    }
    return out;
}

/// Loads every image of a folder: decode, center crop, resize, scale. Throws io_error naming the
/// folder when it holds no image, and naming the file and the cause when one cannot be read.
template <class T = float>
image_folder<T> load_image_folder(const std::filesystem::path& dir, const image_folder_options& opt = {}) {
    if (opt.channels != 1 && opt.channels != 3)
        throw std::invalid_argument(fmt::format("load_image_folder: channels {} is not 1 or 3", opt.channels));
    if (opt.size < 1) throw std::invalid_argument(fmt::format("load_image_folder: size {} < 1", opt.size));
    image_folder<T> out;
    auto listed = list_labeled_images(dir, opt.recursive);
    out.files = std::move(listed.files);
    out.classes = std::move(listed.classes);
    out.data.labels = std::move(listed.labels);
    const auto n = static_cast<std::int64_t>(out.files.size());

    // Decoding is host work done once; files decode in parallel, and the first failure in file
    // order is reported (an exception must not leave an OpenMP region).
    const std::int64_t plane = opt.size * opt.size, per_image = plane * opt.channels;
    std::vector<T> host(static_cast<std::size_t>(n * per_image));
    std::vector<std::string> errors(out.files.size());
    cpu_detail::parallel_for(n, [&](std::int64_t i) {
        try {
            const auto img = center_crop_resize(io::read_image(out.files[static_cast<std::size_t>(i)], opt.channels), opt.size);
            const auto t = io::image_to_tensor<T, cpu>(img, opt.range);
            std::copy_n(t.data(), per_image, host.begin() + i * per_image);
        } catch (const std::exception& e) {
            errors[static_cast<std::size_t>(i)] = e.what();
        }
    }, 1 << 20);
    for (std::size_t i = 0; i < errors.size(); ++i)
        if (!errors[i].empty()) {
            const std::string& msg = errors[i];
            throw io_error(msg.starts_with("read_image: ") ? fmt::format("image_folder: {}", msg.substr(12))
                                                           : fmt::format("image_folder: {}: {}", out.files[i].string(), msg));
        }
    out.data.images = tensor<T, cpu>::from_host({n, opt.channels, opt.size, opt.size}, std::span<const T>(host));
    return out;
}

/// Mirrors images left-right at random, as a per-batch augmentation. Whether image i of the batch
/// of step s flips is a pure function of (seed, s, i): Philox draw i of stream
/// flip_stream + s (block index i / 4) is below `probability`. The streams live at 0x666c6970·2³²
/// ("flip") and up, far from the small stream numbers of initializers and loaders that may share
/// the seed, so a resumed run flips exactly as the uninterrupted one without any saved state.
struct random_horizontal_flip {
    static constexpr std::uint64_t flip_stream = std::uint64_t{0x666c6970} << 32;

    std::uint64_t seed = 0;
    double probability = 0.5;

    bool flips(std::uint64_t step, std::int64_t index) const {
        return philox_uniform<double>(seed, flip_stream + step, 0, static_cast<std::uint64_t>(index)) < probability;
    }

    /// Flips the chosen images of batch (B, C, H, W) in place; returns how many flipped. Row i is
    /// row first_row + i of the step's global batch (a data-parallel shard's offset), whose draw
    /// decides.
    template <class T, device D>
    std::int64_t operator()(const tensor_view<T, D>& batch, std::uint64_t step, std::int64_t first_row = 0) const {
        require_rank("random_horizontal_flip", batch, 4, "batch");
        if (!(probability >= 0.0 && probability <= 1.0))
            throw std::invalid_argument(fmt::format("random_horizontal_flip: probability {} is outside [0, 1]", probability));
        std::vector<std::int64_t> chosen;
        for (std::int64_t i = 0; i < batch.dim(0); ++i)
            if (flips(step, first_row + i)) chosen.push_back(i);
        if (chosen.empty()) return 0;
        // Host work on the batch, staged through host memory on other devices.
        const std::int64_t rows = batch.dim(1) * batch.dim(2), w = batch.dim(3), per_image = rows * w;
        const auto mirror = [&](T* data) {
            for (auto i : chosen)
                for (std::int64_t r = 0; r < rows; ++r) std::reverse(data + i * per_image + r * w, data + i * per_image + (r + 1) * w);
        };
        if constexpr (D::host_accessible) {
            mirror(batch.data());
        } else {
            auto host = batch.to_vector();
            mirror(host.data());
            memory<D>::copy_from_host(batch.data(), host.data(), host.size() * sizeof(T));
        }
        return static_cast<std::int64_t>(chosen.size());
    }
};

} // namespace vediff::data
