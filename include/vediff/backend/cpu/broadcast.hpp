#pragma once
// cpu kernels for arithmetic between a tensor and a smaller operand broadcast over some of its
// axes. The small operand has the full tensor's rank with extent 1 on every broadcast axis
// (PyTorch broadcasting after unsqueezing to equal rank). Adjacent axes of the same kind are
// merged first, so (B, 1, D) over (B, N, D) and (1, C, 1, 1) over (B, C, H, W) both become at most
// three groups and the innermost loop runs over a contiguous block.
#include <array>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/shape.hpp"

namespace vediff {

namespace cpu_detail {

/// Runs of axes of a full shape, each either kept by the small operand or broadcast over.
struct broadcast_groups {
    int count = 0;
    std::array<std::int64_t, max_rank> extent{};
    std::array<bool, max_rank> broadcast{};          // true: the small operand repeats along this group
    std::array<std::int64_t, max_rank> full_stride{};   // row-major stride of the group in the full tensor
    std::array<std::int64_t, max_rank> small_stride{};  // stride in the small operand; 0 where broadcast

    std::int64_t inner() const { return extent[static_cast<std::size_t>(count - 1)]; }
    bool inner_broadcast() const { return broadcast[static_cast<std::size_t>(count - 1)]; }
    /// Number of innermost blocks (the product of every group but the last).
    std::int64_t rows() const {
        std::int64_t n = 1;
        for (int g = 0; g + 1 < count; ++g) n *= extent[static_cast<std::size_t>(g)];
        return n;
    }
    /// Offset in the small operand of the first element of innermost block `row`.
    std::int64_t small_offset(std::int64_t row) const {
        std::int64_t off = 0;
        for (int g = count - 2; g >= 0; --g) {
            const auto k = static_cast<std::size_t>(g);
            off += (row % extent[k]) * small_stride[k];
            row /= extent[k];
        }
        return off;
    }
};

/// Merges the axes of `full` against `small` (same rank, small extents equal or 1; the caller
/// has checked this). Axes of extent 1 in `full` belong to neither kind and are dropped.
inline broadcast_groups merge_broadcast_axes(const tensor_shape& full, const tensor_shape& small) {
    broadcast_groups g;
    for (int a = 0; a < full.rank(); ++a) {
        if (full[a] == 1) continue;
        const bool b = small[a] == 1;
        if (g.count > 0 && g.broadcast[static_cast<std::size_t>(g.count - 1)] == b) {
            g.extent[static_cast<std::size_t>(g.count - 1)] *= full[a];
        } else {
            g.extent[static_cast<std::size_t>(g.count)] = full[a];
            g.broadcast[static_cast<std::size_t>(g.count)] = b;
            ++g.count;
        }
    }
    if (g.count == 0) {  // every extent is 1: one element, one kept group
        g.extent[0] = 1;
        g.count = 1;
    }
    std::int64_t fs = 1, ss = 1;
    for (int k = g.count - 1; k >= 0; --k) {
        const auto i = static_cast<std::size_t>(k);
        g.full_stride[i] = fs;
        fs *= g.extent[i];
        g.small_stride[i] = g.broadcast[i] ? 0 : ss;
        if (!g.broadcast[i]) ss *= g.extent[i];
    }
    return g;
}

/// Calls block(out_row, small_row, inner_is_broadcast) for every innermost block of the full
/// tensor: `row` elements [row·inner, (row + 1)·inner) of the full tensor pair with the small
/// operand's elements starting at small_row (contiguous, or one repeated value).
template <class Block>
void for_each_broadcast_block(const broadcast_groups& g, Block&& block) {
    const std::int64_t inner = g.inner();
    parallel_for(g.rows(), [&](std::int64_t row) { block(row * inner, g.small_offset(row)); }, inner);
}

} // namespace cpu_detail

template <>
struct broadcast_kernels<cpu> {
    /// out = scale · b broadcast to the shape `full`.
    template <class T>
    static void expand(T* out, const T* b, const tensor_shape& full, const tensor_shape& small, T scale = T(1)) {
        const auto g = cpu_detail::merge_broadcast_axes(full, small);
        const std::int64_t n = g.inner();
        if (g.inner_broadcast()) {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = scale * b[s];
            });
        } else {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = scale * b[s + j];
            });
        }
    }
    /// out = x + b
    template <class T>
    static void add(T* out, const T* x, const T* b, const tensor_shape& full, const tensor_shape& small) {
        binary(out, x, b, full, small, [](T u, T v) { return u + v; });
    }
    /// out = x · b
    template <class T>
    static void mul(T* out, const T* x, const T* b, const tensor_shape& full, const tensor_shape& small) {
        binary(out, x, b, full, small, [](T u, T v) { return u * v; });
    }
    /// out = x · (1 + scale)
    template <class T>
    static void mul_one_plus(T* out, const T* x, const T* scale, const tensor_shape& full, const tensor_shape& small) {
        binary(out, x, scale, full, small, [](T u, T v) { return u * (T(1) + v); });
    }
    /// out = x · (1 + scale) + shift; shift and scale share the small shape. out may be x (in place).
    template <class T>
    static void modulate(T* out, const T* x, const T* shift, const T* scale, const tensor_shape& full,
                         const tensor_shape& small) {
        const auto g = cpu_detail::merge_broadcast_axes(full, small);
        const std::int64_t n = g.inner();
        if (g.inner_broadcast()) {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                const T a = T(1) + scale[s], c = shift[s];
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = x[o + j] * a + c;
            });
        } else {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = x[o + j] * (T(1) + scale[s + j]) + shift[s + j];
            });
        }
    }

    /// out = x + a · b; x and a share the full shape, b the small one. out may be x (in place).
    template <class T>
    static void addcmul(T* out, const T* x, const T* a, const T* b, const tensor_shape& full, const tensor_shape& small) {
        const auto g = cpu_detail::merge_broadcast_axes(full, small);
        const std::int64_t n = g.inner();
        if (g.inner_broadcast()) {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                const T v = b[s];
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = x[o + j] + a[o + j] * v;
            });
        } else {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = x[o + j] + a[o + j] * b[s + j];
            });
        }
    }

private:
    template <class T, class Op>
    static void binary(T* out, const T* x, const T* b, const tensor_shape& full, const tensor_shape& small, Op op) {
        const auto g = cpu_detail::merge_broadcast_axes(full, small);
        const std::int64_t n = g.inner();
        if (g.inner_broadcast()) {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                const T v = b[s];
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = op(x[o + j], v);
            });
        } else {
            cpu_detail::for_each_broadcast_block(g, [&](std::int64_t o, std::int64_t s) {
                for (std::int64_t j = 0; j < n; ++j) out[o + j] = op(x[o + j], b[s + j]);
            });
        }
    }
};

} // namespace vediff
