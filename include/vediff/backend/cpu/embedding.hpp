#pragma once
// cpu kernels for embedding lookup: gather table rows by index, and its adjoint, the scatter-add
// of row gradients into the table. The scatter splits the columns across threads (never the
// indices), so repeated indices need no atomics and the sums keep a fixed order.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct embedding_kernels<cpu> {
    static constexpr std::int64_t column_tile = 64;

    /// Position of the first index outside [0, rows), or -1 when all are valid.
    static std::int64_t first_invalid(const std::int32_t* index, std::int64_t n, std::int64_t rows) {
        for (std::int64_t i = 0; i < n; ++i)
            if (index[i] < 0 || index[i] >= rows) return i;
        return -1;
    }
    /// The index at position i (for error messages).
    static std::int64_t index_at(const std::int32_t* index, std::int64_t i) { return index[i]; }

    /// out (n, dim) row i = table row index[i], the indices checked against the table's rows by
    /// the caller (first_invalid).
    template <class T>
    static void gather_rows(T* out, const T* table, std::int64_t /*rows*/, const std::int32_t* index, std::int64_t n, std::int64_t dim) {
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            std::memcpy(out + i * dim, table + std::int64_t{index[i]} * dim, static_cast<std::size_t>(dim) * sizeof(T));
        }, dim);
    }
    /// table row index[i] += rows (n, dim) row i, for i in order (indices checked by the caller).
    template <class T>
    static void scatter_add_rows(T* table, std::int64_t /*table_rows*/, const T* rows, const std::int32_t* index, std::int64_t n,
                                 std::int64_t dim) {
        const std::int64_t tiles = (dim + column_tile - 1) / column_tile;
        cpu_detail::parallel_for(tiles, [=](std::int64_t t) {
            const std::int64_t j0 = t * column_tile, j1 = std::min(dim, j0 + column_tile);
            for (std::int64_t i = 0; i < n; ++i) {
                T* dst = table + std::int64_t{index[i]} * dim;
                const T* src = rows + i * dim;
                for (std::int64_t j = j0; j < j1; ++j) dst[j] += src[j];
            }
        }, n * column_tile);
    }
};

} // namespace vediff
