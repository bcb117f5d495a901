#pragma once
// cuda kernels for broadcasting ops (a small operand whose extent-1 axes repeat against the full
// shape): one thread per element of the full tensor, which finds its element of the small operand
// through axis_walk, the row-major index arithmetic both this family and the reductions use.
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/shape.hpp"

namespace vediff {

namespace cuda_detail {

/// Row-major enumeration of some axes of a tensor: index → offset (Σ digit_k · stride_k), where
/// the digits of the index are taken over the extents, innermost last. Plain arrays, so it is
/// copied into kernels by value.
struct axis_walk {
    int count = 0;
    std::int64_t extent[max_rank] = {};
    std::int64_t stride[max_rank] = {};

    __host__ __device__ std::int64_t offset(std::int64_t index) const {
        std::int64_t off = 0;
        for (int k = count - 1; k >= 0; --k) {
            off += index_mod(index, extent[k]) * stride[k];
            index = index_div(index, extent[k]);
        }
        return off;
    }
    void push(std::int64_t e, std::int64_t s) {
        extent[count] = e;
        stride[count] = s;
        ++count;
    }
};

/// Full element index → element of the small operand (stride 0 along its extent-1 axes).
inline axis_walk small_operand_walk(const tensor_shape& full, const tensor_shape& small) {
    axis_walk w;
    const auto small_strides = small.strides();
    for (int a = 0; a < full.rank(); ++a) w.push(full[a], small[a] == 1 ? 0 : small_strides[static_cast<std::size_t>(a)]);
    return w;
}

/// out[i] = f(i, small element of i) over the full tensor.
template <class F>
struct broadcast_op {
    axis_walk small;
    F f;
    __host__ __device__ void operator()(std::int64_t i) const { f(i, small.offset(i)); }
};

template <class F>
void for_each_broadcast(const tensor_shape& full, const tensor_shape& small, F f) {
    const std::int64_t n = full.numel();
    if (n <= 0) return;
    cuda_detail::thrust_call("thrust::for_each", [&] {
        return thrust::for_each(thrust::cuda::par_nosync.on(stream()), thrust::counting_iterator<std::int64_t>(0),
                                thrust::counting_iterator<std::int64_t>(n), broadcast_op<F>{small_operand_walk(full, small), f});
    });
}

template <class T>
struct expand_f {
    T* out;
    const T* b;
    T scale;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = scale * b[s]; }
};
template <class T>
struct add_f {
    T* out;
    const T *x, *b;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = x[i] + b[s]; }
};
template <class T>
struct mul_f {
    T* out;
    const T *x, *b;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = x[i] * b[s]; }
};
template <class T>
struct mul_one_plus_f {
    T* out;
    const T *x, *scale;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = x[i] * (T(1) + scale[s]); }
};
template <class T>
struct modulate_f {
    T* out;
    const T *x, *shift, *scale;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = x[i] * (T(1) + scale[s]) + shift[s]; }
};
template <class T>
struct addcmul_f {
    T* out;
    const T *x, *a, *b;
    __host__ __device__ void operator()(std::int64_t i, std::int64_t s) const { out[i] = x[i] + a[i] * b[s]; }
};

} // namespace cuda_detail

template <>
struct broadcast_kernels<cuda> {
    /// out (full) = scale · b (small) repeated along b's extent-1 axes.
    template <class T>
    static void expand(T* out, const T* b, const tensor_shape& full, const tensor_shape& small, T scale = T(1)) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::expand_f<T>{out, b, scale});
    }
    /// out = x + b
    template <class T>
    static void add(T* out, const T* x, const T* b, const tensor_shape& full, const tensor_shape& small) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::add_f<T>{out, x, b});
    }
    /// out = x · b
    template <class T>
    static void mul(T* out, const T* x, const T* b, const tensor_shape& full, const tensor_shape& small) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::mul_f<T>{out, x, b});
    }
    /// out = x · (1 + scale)
    template <class T>
    static void mul_one_plus(T* out, const T* x, const T* scale, const tensor_shape& full, const tensor_shape& small) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::mul_one_plus_f<T>{out, x, scale});
    }
    /// out = x · (1 + scale) + shift; shift and scale share the small shape. out may be x (in place).
    template <class T>
    static void modulate(T* out, const T* x, const T* shift, const T* scale, const tensor_shape& full, const tensor_shape& small) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::modulate_f<T>{out, x, shift, scale});
    }
    /// out = x + a · b; x and a share the full shape, b the small one. out may be x (in place).
    template <class T>
    static void addcmul(T* out, const T* x, const T* a, const T* b, const tensor_shape& full, const tensor_shape& small) {
        cuda_detail::for_each_broadcast(full, small, cuda_detail::addcmul_f<T>{out, x, a, b});
    }
};

} // namespace vediff
