#pragma once
// The fixed position tables of the diffusion transformers, computed on the host in double (as
// the reference code does with numpy) and rounded once to the element type.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

namespace vediff::models {

/// DiT's pos_embed (grid·grid, dim), row-major over the patch grid: the first dim/2 columns encode
/// the token's column index, the second dim/2 its row; each half is [sin(p·ω_k) | cos(p·ω_k)] with
/// ω_k = 10000^(−k/(dim/4)), k < dim/4.
inline std::vector<double> sincos_pos_embed_2d(std::int64_t dim, std::int64_t grid) {
    if (dim <= 0 || dim % 4 != 0) throw std::invalid_argument(fmt::format("sincos_pos_embed_2d: dim {} must be a multiple of 4", dim));
    const std::int64_t quarter = dim / 4;
    std::vector<double> table(static_cast<std::size_t>(grid * grid * dim));
    for (std::int64_t row = 0; row < grid; ++row)
        for (std::int64_t col = 0; col < grid; ++col) {
            double* e = table.data() + (row * grid + col) * dim;
            for (std::int64_t k = 0; k < quarter; ++k) {
                const double omega = std::pow(10000.0, -double(k) / double(quarter));
                e[k] = std::sin(double(col) * omega);
                e[quarter + k] = std::cos(double(col) * omega);
                e[2 * quarter + k] = std::sin(double(row) * omega);
                e[3 * quarter + k] = std::cos(double(row) * omega);
            }
        }
    return table;
}

/// LightningDiT's 2-D RoPE angles (grid·grid, head_dim), EVA-02 style: head_dim/2 per axis with
/// frequencies f_k = 10000^(−2k/(head_dim/2)), k < head_dim/4, each repeated twice (the rotated
/// pairs are adjacent), and the angle vector of the token at (row, col) is [row·f | col·f].
inline std::vector<double> rope_2d_angles(std::int64_t head_dim, std::int64_t grid) {
    if (head_dim <= 0 || head_dim % 4 != 0)
        throw std::invalid_argument(fmt::format("rope_2d_angles: head_dim {} must be a multiple of 4", head_dim));
    const std::int64_t axis_dim = head_dim / 2;
    std::vector<double> angles(static_cast<std::size_t>(grid * grid * head_dim));
    for (std::int64_t row = 0; row < grid; ++row)
        for (std::int64_t col = 0; col < grid; ++col) {
            double* a = angles.data() + (row * grid + col) * head_dim;
            for (std::int64_t i = 0; i < axis_dim; ++i) {
                const double f = std::pow(10000.0, -2.0 * double(i / 2) / double(axis_dim));
                a[i] = double(row) * f;
                a[axis_dim + i] = double(col) * f;
            }
        }
    return angles;
}

} // namespace vediff::models
