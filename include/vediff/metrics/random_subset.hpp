#pragma once
// A seeded random subset of a set's rows. Precision / recall compare equally many real and
// generated images; taking the first m of a larger set would score a prefix, and the sample job
// writes its samples class by class (class 0's first), so the prefix may hold only a few classes.
// The subset is m distinct indices drawn uniformly (a partial Fisher–Yates shuffle on Philox
// uniforms of (seed, stream)), returned in increasing order: the same for the same seed and stream.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::metrics {

/// m distinct indices of 0..n−1, uniformly at random from (seed, stream), in increasing order;
/// all of them (0..n−1) when m == n.
inline std::vector<std::int64_t> random_subset(std::int64_t n, std::int64_t m, std::uint64_t seed, std::uint64_t stream) {
    if (n < 0 || m < 0 || m > n) throw std::invalid_argument(fmt::format("random_subset: {} of {} items is not a subset", m, n));
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    for (std::int64_t i = 0; i < m && m < n; ++i) {
        const double u = philox_uniform<double>(seed, stream, 0, static_cast<std::uint64_t>(i));
        const auto j = i + std::min(n - i - 1, static_cast<std::int64_t>(u * double(n - i)));
        std::swap(order[std::size_t(i)], order[std::size_t(j)]);
    }
    order.resize(static_cast<std::size_t>(m));
    std::sort(order.begin(), order.end());
    return order;
}

/// The rows `rows` of a host tensor (N, ...), in that order.
inline tensor<float> select_rows(const tensor_view<float>& x, const std::vector<std::int64_t>& rows) {
    if (x.rank() < 1) throw shape_error(fmt::format("select_rows: a tensor of shape {} has no rows", x.shape()));
    auto shape = x.shape();
    shape[0] = static_cast<std::int64_t>(rows.size());
    auto out = tensor<float>::empty(shape);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        if (rows[i] < 0 || rows[i] >= x.dim(0))
            throw std::out_of_range(fmt::format("select_rows: row {} of a tensor of {} rows", rows[i], x.dim(0)));
        ops::copy(out[static_cast<std::int64_t>(i)], x[rows[i]]);
    }
    return out;
}

} // namespace vediff::metrics
