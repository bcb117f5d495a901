#pragma once
// concat: N tensors joined along one axis; split: the inverse, into pieces of given sizes;
// chunk: split into k equal pieces (DiT's adaLN output, chunked into shift/scale/gate).
// Each is the other's backward. Pieces are copies: a piece along an inner axis is not contiguous.
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

namespace detail {
template <class T, device D>
std::string shape_list(const std::vector<tensor_view<T, D>>& xs) {
    std::string s;
    for (const auto& x : xs) s += (s.empty() ? "" : ", ") + x.shape().to_string();
    return "[" + s + "]";
}
inline int concat_axis(const char* op, const tensor_shape& s, int axis) {
    if (axis < -s.rank() || axis >= s.rank())
        throw shape_error(fmt::format("{}: axis {} is out of range for shape {}", op, axis, s));
    return s.normalize_axis(axis);
}
} // namespace detail

/// The tensors joined along `axis`; every other extent must agree. From tensors a and b:
/// concat<float, cpu>({a, b}, axis) (explicit arguments let the tensors convert to views).
template <class T, device D>
tensor<T, D> concat(const std::vector<tensor_view<T, D>>& xs, int axis) {
    if (xs.empty()) throw shape_error("concat: no tensors to join");
    const tensor_shape& first = xs.front().shape();
    const int a = detail::concat_axis("concat", first, axis);
    tensor_shape out_shape = first;
    out_shape[a] = 0;
    for (const auto& x : xs) {
        bool ok = x.rank() == first.rank();
        for (int k = 0; ok && k < first.rank(); ++k) ok = k == a || x.dim(k) == first[k];
        if (!ok)
            throw shape_error(fmt::format("concat: shapes {} do not agree off axis {}", detail::shape_list(xs), axis));
        out_shape[a] += x.dim(a);
    }
    tensor<T, D> out(out_shape);
    // Seen as (outer, extent·inner): each input fills a column block of every outer row.
    const std::int64_t outer = first.prod(0, a), inner = first.prod(a + 1, first.rank());
    const std::int64_t out_row = out_shape[a] * inner;
    std::int64_t col = 0;
    for (const auto& x : xs) {
        const std::int64_t len = x.dim(a) * inner;
        concat_kernels<D>::copy_rows(out.data() + col, out_row, x.data(), len, outer, len);
        col += len;
    }
    return out;
}

/// x cut along `axis` into pieces of the given extents (which must add up to x's extent).
template <class T, device D>
std::vector<tensor<T, D>> split(const tensor_view<T, D>& x, const std::vector<std::int64_t>& sizes, int axis) {
    const int a = detail::concat_axis("split", x.shape(), axis);
    std::int64_t total = 0;
    for (auto s : sizes) {
        if (s < 0) throw shape_error(fmt::format("split: negative piece extent {} for shape {}", s, x.shape()));
        total += s;
    }
    if (total != x.dim(a))
        throw shape_error(fmt::format("split: pieces add up to {}, but shape {} has {} on axis {}", total, x.shape(),
                                      x.dim(a), axis));
    const std::int64_t outer = x.shape().prod(0, a), inner = x.shape().prod(a + 1, x.rank());
    const std::int64_t in_row = x.dim(a) * inner;
    std::vector<tensor<T, D>> out;
    out.reserve(sizes.size());
    std::int64_t col = 0;
    for (auto s : sizes) {
        tensor_shape ps = x.shape();
        ps[a] = s;
        tensor<T, D> piece(ps);
        concat_kernels<D>::copy_rows(piece.data(), s * inner, x.data() + col, in_row, outer, s * inner);
        col += s * inner;
        out.push_back(std::move(piece));
    }
    return out;
}

/// x cut along `axis` into k pieces of equal extent (torch.chunk when the extent divides evenly).
template <class T, device D>
std::vector<tensor<T, D>> chunk(const tensor_view<T, D>& x, std::int64_t k, int axis) {
    const int a = detail::concat_axis("chunk", x.shape(), axis);
    if (k <= 0 || x.dim(a) % k != 0)
        throw shape_error(fmt::format("chunk: extent {} of shape {} on axis {} does not split into {} equal pieces",
                                      x.dim(a), x.shape(), axis, k));
    return split(x, std::vector<std::int64_t>(static_cast<std::size_t>(k), x.dim(a) / k), axis);
}

/// concat's backward: dy split back into the inputs' extents along `axis`.
template <class T, device D>
std::vector<tensor<T, D>> concat_backward(const tensor_view<T, D>& dy, const std::vector<std::int64_t>& sizes, int axis) {
    return split(dy, sizes, axis);
}

/// split's and chunk's backward: the pieces' gradients joined along `axis`.
template <class T, device D>
tensor<T, D> split_backward(const std::vector<tensor_view<T, D>>& dys, int axis) {
    return concat(dys, axis);
}
template <class T, device D>
tensor<T, D> chunk_backward(const std::vector<tensor_view<T, D>>& dys, int axis) {
    return concat(dys, axis);
}

} // namespace vediff::ops
