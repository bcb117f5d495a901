#pragma once
// Two-dimensional toy data on a curve, and the distance of points from that curve: the setting of
// the VE paper's Figure 1, where a tokenizer's latent manifold and the samples a diffusion model
// draws in it can be looked at directly.
//
// The curve is an Archimedean spiral r = θ, θ ∈ [θ0, θ1], scaled so that its outer end lies at
// `radius` from the origin: (x, y) = radius·(θ/θ1)·(cos θ, sin θ). Its arms are 2π·radius/θ1
// apart (0.44 for the defaults), the natural unit for "how far off the curve" a point is.
// A point's position on the curve is s = (θ − θ0)/(θ1 − θ0) ∈ [0, 1]; points are drawn uniformly
// in s (denser, per unit length, towards the centre).
//
// Distances are taken to a dense polyline of the curve (point-to-segment, exact for the
// polyline); with n segments the polyline is within (arc length / n)²/(8·r_min) of the curve
// (a chord's sagitta; r_min the smallest radius of curvature), 1e-6 for the defaults (arc length
// 2π, r_min ≈ 1/3) and 4,000 segments.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::data {

using point2 = std::array<double, 2>;

struct spiral {
    double theta_begin = 1.5 * std::numbers::pi;  // θ0
    double theta_end = 4.5 * std::numbers::pi;    // θ1
    double radius = 1.0;                          // of the outer end, after scaling

    void validate() const {
        if (!(theta_begin >= 0 && theta_end > theta_begin && radius > 0) || !std::isfinite(theta_end) || !std::isfinite(radius))
            throw std::invalid_argument(fmt::format("spiral: θ ∈ [{}, {}] with radius {} is not a spiral (need 0 ≤ θ0 < θ1, radius > 0)",
                                                    theta_begin, theta_end, radius));
    }

    /// The point at position s ∈ [0, 1].
    point2 at(double s) const {
        const double theta = theta_begin + s * (theta_end - theta_begin);
        const double r = radius * theta / theta_end;
        return {r * std::cos(theta), r * std::sin(theta)};
    }

    /// Distance between neighbouring arms.
    double arm_gap() const { return 2 * std::numbers::pi * radius / theta_end; }
};

/// Points at positions 0, 1/n, …, 1: a polyline of n segments through the curve.
inline std::vector<point2> spiral_polyline(const spiral& curve, std::int64_t segments) {
    curve.validate();
    if (segments < 1) throw std::invalid_argument(fmt::format("spiral_polyline: {} segments, need at least 1", segments));
    std::vector<point2> line(static_cast<std::size_t>(segments) + 1);
    for (std::int64_t i = 0; i <= segments; ++i) line[static_cast<std::size_t>(i)] = curve.at(double(i) / double(segments));
    return line;
}

/// Points on the curve, with their positions.
template <class T>
struct curve_sample {
    tensor<T, cpu> points;         // (N, 2)
    std::vector<double> position;  // (N) s ∈ [0, 1]
};

/// n points at positions s ~ U(0, 1) from Philox (seed, stream), plus N(0, noise²) per
/// coordinate (0: exactly on the curve). Draw i uses Philox elements 3i (position) and 3i + 1,
/// 3i + 2 (noise), so a sample does not depend on n beyond its length.
template <class T = float>
curve_sample<T> sample_spiral(const spiral& curve, std::int64_t n, std::uint64_t seed, std::uint64_t stream = 0,
                              double noise = 0.0) {
    curve.validate();
    if (n < 1) throw std::invalid_argument(fmt::format("sample_spiral: {} points, need at least 1", n));
    if (!(noise >= 0)) throw std::invalid_argument(fmt::format("sample_spiral: noise {} must be >= 0", noise));
    std::vector<T> xy(static_cast<std::size_t>(2 * n));
    curve_sample<T> out;
    out.position.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::uint64_t>(3 * i);
        const double s = philox_uniform<double>(seed, stream, 0, k);
        auto p = curve.at(s);
        if (noise > 0) {
            p[0] += noise * philox_normal<double>(seed, stream, 0, k + 1);
            p[1] += noise * philox_normal<double>(seed, stream, 0, k + 2);
        }
        out.position[static_cast<std::size_t>(i)] = s;
        xy[static_cast<std::size_t>(2 * i)] = static_cast<T>(p[0]);
        xy[static_cast<std::size_t>(2 * i + 1)] = static_cast<T>(p[1]);
    }
    out.points = tensor<T, cpu>::from_host(tensor_shape{n, 2}, std::span<const T>(xy));
    return out;
}

/// The distance from p to the segment [a, b].
inline double segment_distance(const point2& p, const point2& a, const point2& b) {
    const double dx = b[0] - a[0], dy = b[1] - a[1];
    const double len2 = dx * dx + dy * dy;
    double u = len2 > 0 ? ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2 : 0.0;
    u = std::clamp(u, 0.0, 1.0);
    const double ex = a[0] + u * dx - p[0], ey = a[1] + u * dy - p[1];
    return std::sqrt(ex * ex + ey * ey);
}

/// The distance from each point to the polyline (at least one vertex).
inline std::vector<double> polyline_distances(std::span<const point2> points, std::span<const point2> polyline) {
    if (polyline.empty()) throw std::invalid_argument("polyline_distances: the polyline has no vertices");
    std::vector<double> d(points.size());
    for (std::size_t i = 0; i < points.size(); ++i) {
        double best = std::numeric_limits<double>::infinity();
        const auto& p = points[i];
        if (!std::isfinite(p[0]) || !std::isfinite(p[1])) {
            d[i] = std::numeric_limits<double>::infinity();  // a diverged sample is off every curve
            continue;
        }
        if (polyline.size() == 1) best = segment_distance(p, polyline[0], polyline[0]);
        for (std::size_t k = 0; k + 1 < polyline.size(); ++k) best = std::min(best, segment_distance(p, polyline[k], polyline[k + 1]));
        d[i] = best;
    }
    return d;
}

/// The rows of points (N, 2) as host pairs.
template <class T>
std::vector<point2> to_points(const tensor_view<T, cpu>& points) {
    if (points.rank() != 2 || points.dim(1) != 2)
        throw shape_error(fmt::format("to_points: points must be (N, 2), got shape {}", points.shape()));
    const auto v = points.to_vector();
    std::vector<point2> out(static_cast<std::size_t>(points.dim(0)));
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = {double(v[2 * i]), double(v[2 * i + 1])};
    return out;
}

/// The distance of each row of points (N, 2) to the polyline.
template <class T>
std::vector<double> polyline_distances(const tensor_view<T, cpu>& points, std::span<const point2> polyline) {
    const auto p = to_points(points);
    return polyline_distances(std::span<const point2>(p), polyline);
}

/// The fraction of distances above threshold (a NaN or infinite distance counts as above).
inline double off_curve_fraction(std::span<const double> distances, double threshold) {
    if (distances.empty()) throw std::invalid_argument("off_curve_fraction: no distances");
    std::int64_t off = 0;
    for (double d : distances) off += !(d <= threshold);
    return double(off) / double(distances.size());
}

} // namespace vediff::data
