#pragma once
// cuda kernels for the optimizers: the fused AdamW update (one pass over p, m, v, g, with the cpu
// backend's operation order) and a sum of squares for gradient norms, returned to the host.
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

namespace cuda_detail {

template <class T>
struct adamw_op {
    T *p, *m, *v;
    const T* g;
    T decay, b1, b2, c1, c2, eps, neg_step, bc2;
    __host__ __device__ void operator()(std::int64_t i) const {
        const T gi = g[i];
        const T mi = m[i] * b1 + gi * c1;
        const T vi = v[i] * b2 + c2 * gi * gi;
        const T denom = sqrt(vi) / bc2 + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay + neg_step * mi / denom;
    }
};

template <class T>
struct square_in_double_op {
    __host__ __device__ double operator()(T x) const { return double(x) * double(x); }
};

} // namespace cuda_detail

template <>
struct optim_kernels<cuda> {
    /// p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
    /// p ← p − step_size·m / (√v / √(1 − β2^t) + eps), as optim_kernels<cpu>.
    template <class T>
    static void adamw_update(T* p, T* m, T* v, const T* g, std::int64_t n, const adamw_scalars& s) {
        if (n <= 0) return;
        const cuda_detail::adamw_op<T> op{p, m, v, g, T(s.decay_factor), T(s.beta1), T(s.beta2), T(1 - s.beta1), T(1 - s.beta2),
                                          T(s.eps), T(-s.step_size), T(s.bias_correction2_sqrt)};
        cuda_detail::thrust_call("thrust::for_each", [&] { return thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                         thrust::counting_iterator<std::int64_t>(n), op); });
    }

    /// Σ x² in double, returned to the host (waits for the stream). The device's summation order
    /// differs from the cpu's fixed chunks: equal within double rounding, not bit for bit.
    template <class T>
    static double sum_of_squares(const T* x, std::int64_t n) {
        if (n <= 0) return 0.0;
        return cuda_detail::thrust_call("thrust::transform_reduce", [&] { return thrust::transform_reduce(thrust::cuda::par.on(cuda_detail::stream()), x, x + n,
                                        cuda_detail::square_in_double_op<T>{}, 0.0, thrust::plus<double>()); });
    }
};

} // namespace vediff
