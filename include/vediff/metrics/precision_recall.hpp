#pragma once
// Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen & Aila, "Improved precision
// and recall metric for assessing generative models", NeurIPS 2019). Each feature set stands for
// a manifold: the union of the closed balls around its points whose radius is the distance to the
// point's k-th nearest other point of the same set (k = 3 by default). Then
//     precision = fraction of generated features inside the real manifold   (are samples realistic?)
//     recall    = fraction of real features inside the generated manifold   (is the data covered?)
// A point exactly on a sphere counts as inside (the reference compares distance ≤ radius). The
// neighbour of a point is any *other* point: its own index is excluded, so a duplicate counts as a
// neighbour at distance 0.
//
// Pairwise squared distances come from ‖a‖² + ‖b‖² − 2·a·b, one matrix product per block of rows
// in double (Eigen), after subtracting the real set's mean from both sets: distances do not change,
// and features far from the origin no longer lose their digits to the cancellation. Blocks hold at
// most `block_elements` distances (32 MiB by default), so 10,000 × 10,000 features never need the
// 800 MB of the full matrix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // Eigen 3.4's packet code under GCC 12 (see backend/cpu/eigen.hpp)
#include <Eigen/Dense>
#pragma GCC diagnostic pop
#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::metrics {

struct precision_recall_options {
    int k = 3;                                          // the k-th nearest other point sets a ball's radius
    std::int64_t block_elements = std::int64_t{1} << 22;  // distances computed at once (4 Mi doubles)
};

struct precision_recall_result {
    double precision = 0;  // fraction of generated features inside the real manifold
    double recall = 0;     // fraction of real features inside the generated manifold
};

namespace detail {

using feature_matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T, device D>
feature_matrix to_feature_matrix(const tensor_view<T, D>& features) {
    const auto host = features.to_vector();
    using map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
    return map(host.data(), features.dim(0), features.dim(1)).template cast<double>();
}

/// Calls visit(first_row, block) for consecutive blocks of rows of the squared distances between
/// the rows of a and the rows of b; block is row-major (rows, b.rows()), clamped at 0 (rounding).
template <class Visit>
void for_each_distance_block(const feature_matrix& a, const feature_matrix& b, std::int64_t block_elements, Visit&& visit) {
    const Eigen::VectorXd a_norms = a.rowwise().squaredNorm(), b_norms = b.rowwise().squaredNorm();
    const std::int64_t rows_per_block = std::max<std::int64_t>(1, block_elements / std::max<std::int64_t>(1, b.rows()));
    feature_matrix block;
    for (std::int64_t first = 0; first < a.rows(); first += rows_per_block) {
        const std::int64_t rows = std::min(rows_per_block, a.rows() - first);
        block.noalias() = a.middleRows(first, rows) * b.transpose();
        block *= -2.0;
        block.colwise() += a_norms.segment(first, rows);
        block.rowwise() += b_norms.transpose();
        // Rounding can leave a tiny negative square; a plain loop (Eigen's AVX-512 max packets
        // trip GCC 12's -Wuninitialized).
        for (Eigen::Index i = 0; i < block.size(); ++i) block.data()[i] = std::max(block.data()[i], 0.0);
        visit(first, static_cast<const feature_matrix&>(block));
    }
}

/// The squared distance from each row to its k-th nearest other row.
inline std::vector<double> kth_neighbour_squared_radii(const feature_matrix& x, int k, std::int64_t block_elements) {
    std::vector<double> radii(static_cast<std::size_t>(x.rows()));
    for_each_distance_block(x, x, block_elements, [&](std::int64_t first, const feature_matrix& d) {
        cpu_detail::parallel_for(d.rows(), [&](std::int64_t r) {
            // The k smallest distances to other rows, kept sorted (k is small: insertion beats a sort).
            std::vector<double> nearest(static_cast<std::size_t>(k), std::numeric_limits<double>::infinity());
            for (std::int64_t c = 0; c < d.cols(); ++c) {
                const double v = d(r, c);
                if (c == first + r || !(v < nearest.back())) continue;
                auto at = std::upper_bound(nearest.begin(), nearest.end(), v);
                std::copy_backward(at, nearest.end() - 1, nearest.end());
                *at = v;
            }
            radii[static_cast<std::size_t>(first + r)] = nearest.back();
        }, d.cols());
    });
    return radii;
}

/// Fraction of the queries within (≤) the ball of at least one manifold point.
inline double manifold_coverage(const feature_matrix& manifold, const std::vector<double>& squared_radii, const feature_matrix& queries,
                                std::int64_t block_elements) {
    std::int64_t inside = 0;
    for_each_distance_block(queries, manifold, block_elements, [&](std::int64_t, const feature_matrix& d) {
        std::vector<char> covered(static_cast<std::size_t>(d.rows()));
        cpu_detail::parallel_for(d.rows(), [&](std::int64_t r) {
            for (std::int64_t c = 0; c < d.cols(); ++c)
                if (d(r, c) <= squared_radii[static_cast<std::size_t>(c)]) {
                    covered[static_cast<std::size_t>(r)] = 1;
                    break;
                }
        }, d.cols());
        inside += std::count(covered.begin(), covered.end(), char{1});
    });
    return double(inside) / double(queries.rows());
}

/// what: "real ", "generated " or "" (one set on its own).
template <class T, device D>
void require_feature_set(const char* op, const char* what, const tensor_view<T, D>& x, int k) {
    if (k < 1) throw std::invalid_argument(fmt::format("{}: k = {} must be at least 1", op, k));
    if (x.rank() != 2 || x.dim(1) < 1)
        throw shape_error(fmt::format("{}: {}features must be (N, F) with F ≥ 1, got shape {}", op, what, x.shape()));
    if (k >= x.dim(0))
        throw std::invalid_argument(
            fmt::format("{}: k = {} needs at least {} {}features (each point's k-th nearest other one), got shape {}", op, k, k + 1, what, x.shape()));
}

} // namespace detail

/// The distance from each feature (rows of (N, F)) to its k-th nearest other feature.
template <class T, device D>
std::vector<double> kth_neighbour_radii(const tensor_view<T, D>& features, int k = 3, std::int64_t block_elements = std::int64_t{1} << 22) {
    detail::require_feature_set("kth_neighbour_radii", "", features, k);
    auto radii = detail::kth_neighbour_squared_radii(detail::to_feature_matrix(features), k, block_elements);
    for (auto& r : radii) r = std::sqrt(r);
    return radii;
}

/// Improved precision and recall of generated features (M, F) against real features (N, F).
template <class T, device D>
precision_recall_result precision_recall(const tensor_view<T, D>& real, const tensor_view<T, D>& generated,
                                         const precision_recall_options& opt = {}) {
    if (opt.block_elements < 1) throw std::invalid_argument(fmt::format("precision_recall: block_elements {} must be positive", opt.block_elements));
    detail::require_feature_set("precision_recall", "real ", real, opt.k);
    detail::require_feature_set("precision_recall", "generated ", generated, opt.k);
    if (real.dim(1) != generated.dim(1))
        throw shape_error(fmt::format("precision_recall: real features {} and generated features {} differ in dimension", real.shape(),
                                      generated.shape()));
    detail::feature_matrix r = detail::to_feature_matrix(real), g = detail::to_feature_matrix(generated);
    const Eigen::RowVectorXd center = r.colwise().mean();
    r.rowwise() -= center;
    g.rowwise() -= center;
    const auto real_radii = detail::kth_neighbour_squared_radii(r, opt.k, opt.block_elements);
    const auto generated_radii = detail::kth_neighbour_squared_radii(g, opt.k, opt.block_elements);
    return {.precision = detail::manifold_coverage(r, real_radii, g, opt.block_elements),
            .recall = detail::manifold_coverage(g, generated_radii, r, opt.block_elements)};
}

} // namespace vediff::metrics
