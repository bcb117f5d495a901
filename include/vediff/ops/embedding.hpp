#pragma once
// Embedding lookup: rows of a table (num, dim) selected by integer indices, with the backward
// scatter-add. Indices are a tensor_view<std::int32_t, D> of any rank (usually (B)) on the same
// device as the table; the output has the indices' shape with dim appended. An index outside
// [0, num) throws shape_error naming its position: at once on the cpu, at the next read from the
// device on cuda (whose check does not make the host wait).
#include <cstdint>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::ops {

/// Devices whose index checks run without the host waiting, reporting at the next read from the
/// device (cuda: backend/cuda/index_check.hpp); the others check at once.
template <class D>
concept defers_index_checks = requires(const std::int32_t* index) {
    embedding_kernels<D>::defer_index_check("op", "index", index, std::int64_t{0}, std::int64_t{0});
};

namespace detail {
template <class T, device D>
void check_embedding(const char* op, const tensor_shape& table, const tensor_view<std::int32_t, D>& indices) {
    if (table.rank() != 2)
        throw shape_error(fmt::format("{}: table must have shape (num, dim), got {}", op, table));
    if (indices.rank() >= max_rank)
        throw shape_error(fmt::format("{}: indices of shape {} leave no room for the embedding axis", op, indices.shape()));
    if constexpr (defers_index_checks<D>) {
        embedding_kernels<D>::defer_index_check(op, "index", indices.data(), indices.numel(), table[0]);
    } else {
        const auto bad = embedding_kernels<D>::first_invalid(indices.data(), indices.numel(), table[0]);
        if (bad >= 0)
            throw shape_error(fmt::format("{}: index {} at position {} of indices {} is out of range for table {}", op,
                                          embedding_kernels<D>::index_at(indices.data(), bad), bad, indices.shape(), table));
    }
}
inline tensor_shape with_dim(const tensor_shape& s, std::int64_t dim) {
    tensor_shape out = s;
    out.push_back(dim);
    return out;
}
} // namespace detail

/// The first index outside [0, rows) as (position, value), or nothing when all are inside: one
/// small host result, for the callers' own error messages.
template <device D>
std::optional<std::pair<std::int64_t, std::int64_t>> find_index_outside(const tensor_view<std::int32_t, D>& indices, std::int64_t rows) {
    const auto bad = embedding_kernels<D>::first_invalid(indices.data(), indices.numel(), rows);
    if (bad < 0) return std::nullopt;
    return std::pair{bad, embedding_kernels<D>::index_at(indices.data(), bad)};
}

/// table (num, dim), indices (...) → (..., dim).
template <class T, device D>
tensor<T, D> embedding(const tensor_view<T, D>& table, const tensor_view<std::int32_t, D>& indices) {
    detail::check_embedding<T, D>("embedding", table.shape(), indices);
    tensor<T, D> out(detail::with_dim(indices.shape(), table.dim(1)));
    embedding_kernels<D>::gather_rows(out.data(), table.data(), table.dim(0), indices.data(), indices.numel(), table.dim(1));
    return out;
}

/// dtable += the rows of dy (..., dim) added at their indices (repeated indices add up).
template <class T, device D>
void embedding_accumulate_grad(const tensor_view<T, D>& dtable, const tensor_view<T, D>& dy,
                               const tensor_view<std::int32_t, D>& indices) {
    detail::check_embedding<T, D>("embedding_backward", dtable.shape(), indices);
    if (!(dy.shape() == detail::with_dim(indices.shape(), dtable.dim(1))))
        throw shape_error(fmt::format("embedding_backward: dy has shape {}, expected {} for indices {} and table {}",
                                      dy.shape(), detail::with_dim(indices.shape(), dtable.dim(1)), indices.shape(),
                                      dtable.shape()));
    embedding_kernels<D>::scatter_add_rows(dtable.data(), dtable.dim(0), dy.data(), indices.data(), indices.numel(), dtable.dim(1));
}

/// The table gradient (num, dim) of dy (..., dim): zeros except the scattered rows.
template <class T, device D>
tensor<T, D> embedding_backward(const tensor_view<T, D>& dy, const tensor_view<std::int32_t, D>& indices, std::int64_t num) {
    if (dy.rank() < 1)
        throw shape_error(fmt::format("embedding_backward: dy of shape {} has no embedding axis", dy.shape()));
    auto dtable = tensor<T, D>::zeros(tensor_shape{num, dy.dim(-1)});
    embedding_accumulate_grad(dtable.view(), dy, indices);
    return dtable;
}

} // namespace vediff::ops
