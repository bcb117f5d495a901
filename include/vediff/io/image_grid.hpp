#pragma once
// Grids of images for looking at results: each batch (N, C, H, W) fills a band of rows, the bands
// are stacked top to bottom (originals above, reconstructions below), with a gap of background
// pixels between neighbouring images and around the border.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/io/image.hpp"

namespace vediff::io {

struct grid_options {
    value_range range = symmetric_range;  // the values of the tensors; [0, 1] is unit_range
    std::int64_t columns = 0;             // images per row; 0 puts each band in one row
    std::int64_t gap = 2;                 // pixels between images and around the border
    std::uint8_t background = 255;        // the gap's grey level (white, visible against dark images)
};

/// Where the images of a grid lie: image j of band k has its top-left pixel at
/// (top(k, j), left(j)).
struct grid_layout {
    std::int64_t columns = 0, gap = 0, image_height = 0, image_width = 0;
    std::vector<std::int64_t> first_row;  // (bands + 1): band k occupies grid rows [first_row[k], first_row[k + 1])
    std::int64_t height = 0, width = 0;   // of the whole grid, in pixels

    std::int64_t top(std::size_t band, std::int64_t j) const { return gap + (first_row[band] + j / columns) * (image_height + gap); }
    std::int64_t left(std::int64_t j) const { return gap + (j % columns) * (image_width + gap); }
};

/// The layout for bands of the given image counts and image size.
inline grid_layout make_grid_layout(const std::vector<std::int64_t>& counts, std::int64_t image_height, std::int64_t image_width,
                                    const grid_options& opt = {}) {
    if (opt.gap < 0 || opt.columns < 0)
        throw std::invalid_argument(fmt::format("image grid: gap {} and columns {} must be >= 0", opt.gap, opt.columns));
    grid_layout g;
    g.gap = opt.gap;
    g.image_height = image_height;
    g.image_width = image_width;
    const std::int64_t widest = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
    g.columns = std::max<std::int64_t>(1, opt.columns > 0 ? std::min(opt.columns, widest) : widest);
    g.first_row.push_back(0);
    for (auto n : counts) g.first_row.push_back(g.first_row.back() + (n + g.columns - 1) / g.columns);
    const std::int64_t rows = g.first_row.back();
    g.width = g.columns * image_width + (g.columns + 1) * g.gap;
    g.height = rows * image_height + (rows + 1) * g.gap;
    return g;
}

/// One band per tensor (N_k, C, H, W), all with the same C (1 or 3), H and W.
template <class T, device D>
image make_image_grid(const std::vector<tensor_view<T, D>>& bands, const grid_options& opt = {}) {
    if (bands.empty()) throw std::invalid_argument("make_image_grid: no images");
    for (const auto& b : bands) {
        require_rank("make_image_grid", b, 4, "each band");
        if (b.dim(0) < 1 || !(b.shape().drop_front() == bands[0].shape().drop_front()))
            throw shape_error(fmt::format("make_image_grid: bands {} and {} differ in image shape (or one is empty)", bands[0].shape(),
                                          b.shape()));
    }
    const std::int64_t channels = bands[0].dim(1), h = bands[0].dim(2), w = bands[0].dim(3);
    if (channels != 1 && channels != 3)
        throw shape_error(fmt::format("make_image_grid: {} channels in shape {}; images have 1 or 3", channels, bands[0].shape()));
    std::vector<std::int64_t> counts;
    for (const auto& b : bands) counts.push_back(b.dim(0));
    const auto g = make_grid_layout(counts, h, w, opt);

    image grid(g.height, g.width, static_cast<int>(channels), opt.background);
    for (std::size_t k = 0; k < bands.size(); ++k)
        for (std::int64_t j = 0; j < bands[k].dim(0); ++j) {
            const image tile = tensor_to_image(bands[k][j], opt.range);
            const std::int64_t top = g.top(k, j), left = g.left(j);
            for (std::int64_t y = 0; y < h; ++y)
                std::copy_n(tile.pixels.begin() + y * w * channels, w * channels,
                            grid.pixels.begin() + ((top + y) * g.width + left) * channels);
        }
    return grid;
}

/// Originals above, their reconstructions below (same shapes).
template <class T, device D>
image reconstruction_grid(const tensor_view<T, D>& originals, const tensor_view<T, D>& reconstructions, const grid_options& opt = {}) {
    require_same_shape("reconstruction_grid: originals and reconstructions", originals, reconstructions);
    return make_image_grid(std::vector<tensor_view<T, D>>{originals, reconstructions}, opt);
}

/// Writes reconstruction_grid(...) as a PNG file, atomically.
template <class T, device D>
void write_reconstruction_grid(const std::filesystem::path& path, const tensor_view<T, D>& originals,
                               const tensor_view<T, D>& reconstructions, const grid_options& opt = {}) {
    write_png(path, reconstruction_grid(originals, reconstructions, opt));
}

} // namespace vediff::io
