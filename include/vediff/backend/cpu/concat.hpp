#pragma once
// cpu kernel for concat and split: both copy a run of `len` contiguous elements from each of
// `rows` rows of one tensor into each row of another, at different row strides.
#include <cstdint>
#include <cstring>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct concat_kernels<cpu> {
    /// dst[r·dst_stride + j] = src[r·src_stride + j] for r < rows, j < len.
    template <class T>
    static void copy_rows(T* dst, std::int64_t dst_stride, const T* src, std::int64_t src_stride, std::int64_t rows,
                          std::int64_t len) {
        if (len == 0) return;
        cpu_detail::parallel_for(rows, [=](std::int64_t r) {
            std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<std::size_t>(len) * sizeof(T));
        }, len);
    }
};

} // namespace vediff
