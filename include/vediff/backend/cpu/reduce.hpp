#pragma once
// cpu kernels for sums over axes. One kernel covers every case: the sum of a tensor down to a
// shape that broadcasts back to it (extent 1 on each summed axis), which is also the adjoint of
// broadcasting. Sums accumulate in double, and the order of additions is fixed by the shapes
// alone, so results are identical for any number of threads.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "vediff/backend/cpu/broadcast.hpp"
#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cpu_detail {

/// Row-major enumeration of a subset of broadcast groups: maps an index to an offset in the full tensor.
struct group_walk {
    int count = 0;
    std::array<std::int64_t, max_rank> extent{};
    std::array<std::int64_t, max_rank> stride{};

    void push(std::int64_t e, std::int64_t s) {
        extent[static_cast<std::size_t>(count)] = e;
        stride[static_cast<std::size_t>(count)] = s;
        ++count;
    }
    std::int64_t size() const {
        std::int64_t n = 1;
        for (int k = 0; k < count; ++k) n *= extent[static_cast<std::size_t>(k)];
        return n;
    }
    std::int64_t offset(std::int64_t idx) const {
        std::int64_t off = 0;
        for (int k = count - 1; k >= 0; --k) {
            const auto i = static_cast<std::size_t>(k);
            off += (idx % extent[i]) * stride[i];
            idx /= extent[i];
        }
        return off;
    }
};

} // namespace cpu_detail

template <>
struct reduce_kernels<cpu> {
    // Fixed work sizes (never the thread count) keep the summation order reproducible.
    static constexpr std::int64_t tile_width = 256;     // kept inner elements accumulated together
    static constexpr std::int64_t block_size = 32768;   // elements per partial sum of a long reduction
    static constexpr std::int64_t many_outputs = 16;    // from here on, outputs are split across threads
    static constexpr std::int64_t lanes = 8;             // independent accumulators of a contiguous run

    /// out = scale · (x summed over every axis where `small` has extent 1 and `full` does not).
    template <class T>
    static void sum_to(T* out, const T* x, const tensor_shape& full, const tensor_shape& small, double scale = 1.0) {
        reduce_to(out, [x](std::int64_t i) { return double(x[i]); }, full, small, scale);
    }
    /// out = sum_to(a · b): the gradient of a broadcast factor, without materializing a · b.
    template <class T>
    static void sum_to_product(T* out, const T* a, const T* b, const tensor_shape& full, const tensor_shape& small) {
        reduce_to(out, [a, b](std::int64_t i) { return double(a[i]) * double(b[i]); }, full, small, 1.0);
    }

private:
    template <class T, class Load>
    static void reduce_to(T* out, Load load, const tensor_shape& full, const tensor_shape& small, double scale) {
        const auto g = cpu_detail::merge_broadcast_axes(full, small);
        cpu_detail::group_walk kept, reduced;
        for (int k = 0; k + 1 < g.count; ++k) {
            const auto i = static_cast<std::size_t>(k);
            (g.broadcast[i] ? reduced : kept).push(g.extent[i], g.full_stride[i]);
        }
        if (g.inner_broadcast()) sum_runs(out, load, kept, reduced, g.inner(), scale);
        else sum_rows(out, load, kept, reduced, g.inner(), scale);
    }

    // The innermost group is kept: out row p (length n) is the sum of the rows of x at the reduced coordinates.
    template <class T, class Load>
    static void sum_rows(T* out, Load load, const cpu_detail::group_walk& kept, const cpu_detail::group_walk& reduced,
                         std::int64_t n, double scale) {
        const std::int64_t tiles_per_row = (n + tile_width - 1) / tile_width;
        const std::int64_t rows = kept.size(), terms = reduced.size();
        cpu_detail::parallel_for(rows * tiles_per_row, [&](std::int64_t t) {
            const std::int64_t p = t / tiles_per_row;
            const std::int64_t j0 = (t % tiles_per_row) * tile_width;
            const std::int64_t w = std::min(tile_width, n - j0);
            std::array<double, tile_width> acc{};
            const std::int64_t base = kept.offset(p) + j0;
            for (std::int64_t r = 0; r < terms; ++r) {
                const std::int64_t src = base + reduced.offset(r);
                for (std::int64_t j = 0; j < w; ++j) acc[static_cast<std::size_t>(j)] += load(src + j);
            }
            for (std::int64_t j = 0; j < w; ++j) out[p * n + j0 + j] = static_cast<T>(scale * acc[static_cast<std::size_t>(j)]);
        }, terms * tile_width);
    }

    // The innermost group is summed: out[o] adds up `terms` contiguous runs of length n.
    template <class T, class Load>
    static void sum_runs(T* out, Load load, const cpu_detail::group_walk& kept, const cpu_detail::group_walk& reduced,
                         std::int64_t n, double scale) {
        const std::int64_t outputs = kept.size(), terms = reduced.size();
        auto range_sum = [&](std::int64_t base, std::int64_t k0, std::int64_t k1) {
            // Elements [k0, k1) of the flattened (term, run) index space of one output, added into
            // `lanes` independent accumulators (by position in the run), so that the additions
            // pipeline and vectorize instead of waiting on one another.
            std::array<double, static_cast<std::size_t>(lanes)> acc{};
            while (k0 < k1) {
                const std::int64_t r = k0 / n, i = k0 % n;
                const std::int64_t len = std::min(n - i, k1 - k0);
                const std::int64_t src = base + reduced.offset(r) + i;
                std::int64_t j = 0;
                for (; j + lanes <= len; j += lanes)
                    for (std::int64_t l = 0; l < lanes; ++l) acc[static_cast<std::size_t>(l)] += load(src + j + l);
                for (; j < len; ++j) acc[0] += load(src + j);
                k0 += len;
            }
            double total = 0;
            for (double a : acc) total += a;
            return total;
        };
        const std::int64_t per_output = terms * n;
        if (outputs >= many_outputs) {
            cpu_detail::parallel_for(outputs, [&](std::int64_t o) {
                out[o] = static_cast<T>(scale * range_sum(kept.offset(o), 0, per_output));
            }, per_output);
            return;
        }
        // Few outputs (a full sum, a per-channel sum): split each into fixed blocks of partial sums.
        const std::int64_t blocks = std::max<std::int64_t>(1, (per_output + block_size - 1) / block_size);
        std::vector<double> partial(static_cast<std::size_t>(blocks));
        for (std::int64_t o = 0; o < outputs; ++o) {
            const std::int64_t base = kept.offset(o);
            cpu_detail::parallel_for(blocks, [&](std::int64_t b) {
                partial[static_cast<std::size_t>(b)] = range_sum(base, b * block_size, std::min(per_output, (b + 1) * block_size));
            }, block_size);
            double acc = 0;
            for (double v : partial) acc += v;
            out[o] = static_cast<T>(scale * acc);
        }
    }
};

} // namespace vediff
