#pragma once
// Eigen for the cpu backend. GCC 12 with AVX-512 reports hundreds of false -Wmaybe-uninitialized
// warnings inside Eigen 3.4's packet code; they are silenced for Eigen's headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"

namespace vediff::cpu_detail {

template <class T>
using array_map = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>, Eigen::Aligned16>;
template <class T>
using const_array_map = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using unaligned_array_map = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// Calls body(begin, count) on contiguous chunks of [0, n), in parallel when n is large: chunks
/// let Eigen's vectorized array expressions (exp, tanh) run over each piece.
template <class Body>
inline void parallel_chunks(std::int64_t n, Body&& body, std::int64_t chunk = 16384) {
    const std::int64_t chunks = (n + chunk - 1) / chunk;
    parallel_for(chunks, [&](std::int64_t c) {
        const std::int64_t begin = c * chunk;
        body(begin, std::min(chunk, n - begin));
    }, chunk);
}

} // namespace vediff::cpu_detail
