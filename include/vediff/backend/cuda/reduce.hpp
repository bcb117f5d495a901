#pragma once
// cuda kernels for sums over axes: the sum of a tensor down to a shape that broadcasts back to it
// (the adjoint of broadcasting), as in the cpu backend. Two passes with a fixed order, so results
// do not depend on scheduling: partial sums in double over chunks of at most `chunk` reduced
// elements (one thread per output and chunk), then one thread per output adds its chunks in order.
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/broadcast.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

/// The kept axes (those of the output, in its row-major order) and the reduced axes of `full`
/// summed down to `small`, both as offsets into the full tensor.
struct reduction_plan {
    axis_walk kept, reduced;
    std::int64_t outputs = 1, per_output = 1;
};

inline reduction_plan plan_reduction(const tensor_shape& full, const tensor_shape& small) {
    reduction_plan p;
    const auto strides = full.strides();
    for (int a = 0; a < full.rank(); ++a) {
        const std::int64_t stride = strides[static_cast<std::size_t>(a)];
        if (small[a] == full[a]) {
            p.kept.push(full[a], stride);
            p.outputs *= full[a];
        } else {
            p.reduced.push(full[a], stride);
            p.per_output *= full[a];
        }
    }
    return p;
}

/// partial[o · chunks + c] = Σ load(element) over chunk c of output o's reduced elements. Tasks
/// run output-fastest, so that where the kept axes are innermost (a bias-like (B, N, D) → (B, 1, D))
/// neighbouring threads read neighbouring elements.
template <class Load>
struct partial_sum_op {
    reduction_plan plan;
    std::int64_t chunk, chunks;
    Load load;
    double* partial;
    __host__ __device__ void operator()(std::int64_t task) const {
        const std::int64_t o = index_mod(task, plan.outputs), c = index_div(task, plan.outputs);
        const std::int64_t base = plan.kept.offset(o);
        const std::int64_t first = c * chunk, last = first + chunk < plan.per_output ? first + chunk : plan.per_output;
        double s = 0;
        for (std::int64_t t = first; t < last; ++t) s += load(base + plan.reduced.offset(t));
        partial[o * chunks + c] = s;
    }
};

/// out[o] = scale · Σ_c partial[o · chunks + c], in order.
template <class T>
struct finish_sum_op {
    const double* partial;
    std::int64_t chunks;
    double scale;
    T* out;
    __host__ __device__ void operator()(std::int64_t o) const {
        double s = 0;
        for (std::int64_t c = 0; c < chunks; ++c) s += partial[o * chunks + c];
        out[o] = static_cast<T>(scale * s);
    }
};

template <class T>
struct load_op {
    const T* x;
    __host__ __device__ double operator()(std::int64_t i) const { return double(x[i]); }
};
template <class T>
struct load_product_op {
    const T *a, *b;
    __host__ __device__ double operator()(std::int64_t i) const { return double(a[i]) * double(b[i]); }
};

} // namespace cuda_detail

template <>
struct reduce_kernels<cuda> {
    static constexpr std::int64_t chunk = 4096;  // reduced elements per partial sum (fixed: reproducible)

    /// out = scale · (x summed over every axis where `small` has extent 1 and `full` does not).
    template <class T>
    static void sum_to(T* out, const T* x, const tensor_shape& full, const tensor_shape& small, double scale = 1.0) {
        reduce_to(out, cuda_detail::load_op<T>{x}, full, small, scale);
    }
    /// out = sum_to(a · b): the gradient of a broadcast factor, without materializing a · b.
    template <class T>
    static void sum_to_product(T* out, const T* a, const T* b, const tensor_shape& full, const tensor_shape& small) {
        reduce_to(out, cuda_detail::load_product_op<T>{a, b}, full, small, 1.0);
    }

private:
    template <class T, class Load>
    static void reduce_to(T* out, Load load, const tensor_shape& full, const tensor_shape& small, double scale) {
        const auto plan = cuda_detail::plan_reduction(full, small);
        const std::int64_t chunks = (plan.per_output + chunk - 1) / chunk;
        if (plan.outputs <= 0) return;
        tensor<double, cuda> partial(tensor_shape{plan.outputs * (chunks > 0 ? chunks : 1)});
        const auto policy = thrust::cuda::par_nosync.on(cuda_detail::stream());
        if (chunks == 0) {  // nothing to sum (an extent-0 reduced axis): zeros
            cuda_detail::thrust_call("thrust::for_each", [&] {
                return thrust::for_each(policy, thrust::counting_iterator<std::int64_t>(0),
                                        thrust::counting_iterator<std::int64_t>(plan.outputs),
                                        cuda_detail::finish_sum_op<T>{partial.data(), 0, scale, out});
            });
            return;
        }
        cuda_detail::thrust_call("thrust::for_each", [&] {
            return thrust::for_each(policy, thrust::counting_iterator<std::int64_t>(0),
                                    thrust::counting_iterator<std::int64_t>(plan.outputs * chunks),
                                    cuda_detail::partial_sum_op<Load>{plan, chunk, chunks, load, partial.data()});
        });
        cuda_detail::thrust_call("thrust::for_each", [&] {
            return thrust::for_each(policy, thrust::counting_iterator<std::int64_t>(0),
                                    thrust::counting_iterator<std::int64_t>(plan.outputs),
                                    cuda_detail::finish_sum_op<T>{partial.data(), chunks, scale, out});
        });
    }
};

} // namespace vediff
