#pragma once
// cuda kernels that move elements between layouts: embedding rows (gather and scatter-add),
// patchify / unpatchify, nearest 2× upsampling and its adjoint, and row copies for concat; one
// thread per output element (or per column, where several rows add into one element), with the
// cpu backend's index arithmetic.
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

/// out (n, dim)[i, j] = table[index[i], j]
template <class T>
struct gather_rows_op {
    T* out;
    const T* table;
    const std::int32_t* index;
    std::int64_t dim, rows;
    // An index outside the table (which its deferred check reports) reads as a row of zeros.
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t r = index[index_div(e, dim)];
        out[e] = r >= 0 && r < rows ? table[r * dim + index_mod(e, dim)] : T(0);
    }
};

/// Column j of the table: table[index[i], j] += rows[i, j] for i in order (one thread per column,
/// so repeated indices add in order, as on the cpu).
template <class T>
struct scatter_add_column_op {
    T* table;
    const T* rows;
    const std::int32_t* index;
    std::int64_t n, dim, table_rows;
    __host__ __device__ void operator()(std::int64_t j) const {
        for (std::int64_t i = 0; i < n; ++i) {
            const std::int64_t r = index[i];
            if (r >= 0 && r < table_rows) table[r * dim + j] += rows[i * dim + j];  // outside: reported by its check
        }
    }
};

template <class T>
struct index_outside_op {
    std::int64_t rows;
    __host__ __device__ bool operator()(std::int32_t v) const { return v < 0 || v >= rows; }
};

/// Token element e of (B, h·w, p·p·C) ↔ pixel of (B, C, H, W): the cpu backend's pairing.
struct patch_map {
    std::int64_t C, H, W, p;
    __host__ __device__ std::int64_t pixel(std::int64_t e) const {
        const std::int64_t w = W / p, h = H / p, dim = p * p * C;
        const std::int64_t c = index_mod(e, C), j = index_mod(index_div(e, C), p), i = index_mod(index_div(e, C * p), p);
        const std::int64_t token = index_div(e, dim), col = index_mod(token, w), row = index_mod(index_div(token, w), h),
                           b = index_div(token, w * h);
        return ((b * C + c) * H + row * p + i) * W + col * p + j;
    }
};

template <class T>
struct patchify_op {
    T* tokens;
    const T* image;
    patch_map map;
    __host__ __device__ void operator()(std::int64_t e) const { tokens[e] = image[map.pixel(e)]; }
};
template <class T>
struct unpatchify_op {
    T* image;
    const T* tokens;
    patch_map map;
    __host__ __device__ void operator()(std::int64_t e) const { image[map.pixel(e)] = tokens[e]; }
};

/// out (planes, 2H, 2W)[y, x] = scale · in[y/2, x/2]
template <class T>
struct nearest2x_op {
    T* out;
    const T* in;
    std::int64_t H, W;
    T scale;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t x = index_mod(e, 2 * W), y = index_mod(index_div(e, 2 * W), 2 * H), plane = index_div(e, 4 * H * W);
        out[e] = scale * in[(plane * H + y / 2) * W + x / 2];
    }
};
/// out (planes, H/2, W/2)[y, x] = scale · Σ of the 2×2 block at (2y, 2x), summed as the cpu does.
template <class T>
struct block_sum2x2_op {
    T* out;
    const T* in;
    std::int64_t H, W;
    T scale;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t w = W / 2, h = H / 2, x = index_mod(e, w), y = index_mod(index_div(e, w), h), plane = index_div(e, w * h);
        const T* top = in + (plane * H + 2 * y) * W + 2 * x;
        const T* bottom = top + W;
        out[e] = scale * ((top[0] + top[1]) + (bottom[0] + bottom[1]));
    }
};

/// dst[r·dst_stride + j] = src[r·src_stride + j]
template <class T>
struct copy_rows_op {
    T* dst;
    std::int64_t dst_stride;
    const T* src;
    std::int64_t src_stride, len;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t row = index_div(e, len), j = index_mod(e, len);
        dst[row * dst_stride + j] = src[row * src_stride + j];
    }
};

} // namespace cuda_detail

template <>
struct embedding_kernels<cuda> {
    /// Position of the first index outside [0, rows), or -1 when all are valid (waits for the stream).
    static std::int64_t first_invalid(const std::int32_t* index, std::int64_t n, std::int64_t rows) {
        if (n <= 0) return -1;
        const auto found = cuda_detail::thrust_call("thrust::find_if", [&] {
            return thrust::find_if(thrust::cuda::par.on(cuda_detail::stream()), index, index + n,
                                   cuda_detail::index_outside_op<std::int32_t>{rows});
        });
        return found == index + n ? -1 : static_cast<std::int64_t>(found - index);
    }
    /// The index at position i (for error messages; copies one value to the host).
    static std::int64_t index_at(const std::int32_t* index, std::int64_t i) {
        std::int32_t v = 0;
        memory<cuda>::copy_to_host(&v, index + i, sizeof v);
        return v;
    }
    /// Checks that every index lies in [0, rows) without waiting: the first one outside is thrown
    /// (shape_error naming op, what, the index and its position) at the next read from the device
    /// (index_check.hpp). op and what: string literals.
    static void defer_index_check(const char* op, const char* what, const std::int32_t* index, std::int64_t n, std::int64_t rows) {
        if (n <= 0) return;
        if (n > cuda_detail::max_deferred_check_length) {  // positions past the fault's 32 bits: check now
            const auto bad = first_invalid(index, n, rows);
            if (bad >= 0)
                throw shape_error(fmt::format(fmt::runtime("{}: {} {} at position {} of {} is outside [0, {})"), op, what,
                                              index_at(index, bad), bad, n, rows));
            return;
        }
        auto* checks = cuda_detail::index_checks();
        unsigned long long* slot = checks->claim(op, what, n, rows);
        if (!slot) {  // every slot in use since the last read: read them now
            cuda_detail::synchronize();
            checks->raise_pending();
            slot = checks->claim(op, what, n, rows);
        }
        cuda_detail::for_each_element(n, cuda_detail::index_check_op{slot, index, rows});
    }
    template <class T>
    static void gather_rows(T* out, const T* table, std::int64_t rows, const std::int32_t* index, std::int64_t n, std::int64_t dim) {
        cuda_detail::for_each_element(n * dim, cuda_detail::gather_rows_op<T>{out, table, index, dim, rows});
    }
    template <class T>
    static void scatter_add_rows(T* table, std::int64_t table_rows, const T* rows, const std::int32_t* index, std::int64_t n,
                                 std::int64_t dim) {
        cuda_detail::for_each_element(dim, cuda_detail::scatter_add_column_op<T>{table, rows, index, n, dim, table_rows});
    }
};

template <>
struct patchify_kernels<cuda> {
    template <class T>
    static void patchify(T* tokens, const T* image, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t p) {
        cuda_detail::for_each_element(B * C * H * W, cuda_detail::patchify_op<T>{tokens, image, {C, H, W, p}});
    }
    template <class T>
    static void unpatchify(T* image, const T* tokens, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t p) {
        cuda_detail::for_each_element(B * C * H * W, cuda_detail::unpatchify_op<T>{image, tokens, {C, H, W, p}});
    }
};

template <>
struct upsample_kernels<cuda> {
    template <class T>
    static void nearest2x(T* out, const T* in, std::int64_t planes, std::int64_t H, std::int64_t W, T scale = T(1)) {
        cuda_detail::for_each_element(planes * 4 * H * W, cuda_detail::nearest2x_op<T>{out, in, H, W, scale});
    }
    template <class T>
    static void block_sum2x2(T* out, const T* in, std::int64_t planes, std::int64_t H, std::int64_t W, T scale = T(1)) {
        cuda_detail::for_each_element(planes * (H / 2) * (W / 2), cuda_detail::block_sum2x2_op<T>{out, in, H, W, scale});
    }
};

template <>
struct concat_kernels<cuda> {
    template <class T>
    static void copy_rows(T* dst, std::int64_t dst_stride, const T* src, std::int64_t src_stride, std::int64_t rows, std::int64_t len) {
        if (len > 0) cuda_detail::for_each_element(rows * len, cuda_detail::copy_rows_op<T>{dst, dst_stride, src, src_stride, len});
    }
};

} // namespace vediff
