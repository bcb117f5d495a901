#pragma once
// cuda kernels for positional encodings (the sinusoidal timestep embedding and 2-D RoPE) and for
// the classifier's cross-entropy, with the cpu backend's arithmetic in double.
#include <cmath>
#include <cstdint>
#include <vector>

#include <thrust/count.h>
#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/inner_product.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/layout.hpp"
#include "vediff/backend/cuda/memory.hpp"
#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff {

namespace cuda_detail {

/// out (B, 2·half) = [cos(t·f_k) | sin(t·f_k)], f_k = exp(−ln(max_period)·k/half); one thread per (b, k).
template <class T>
struct timestep_embedding_op {
    T* out;
    const T* t;
    std::int64_t half;
    double max_period;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t b = index_div(e, half), k = index_mod(e, half);
        const double angle = double(t[b]) * exp(-log(max_period) * double(k) / double(half));
        out[b * 2 * half + k] = static_cast<T>(cos(angle));
        out[b * 2 * half + half + k] = static_cast<T>(sin(angle));
    }
};

/// One pair (2i, 2i + 1) of one (row, token, head): y = x·cos + rotate_half(x)·sin, or its
/// transpose for the backward.
template <class T, bool Backward>
struct rope_pair_op {
    T* out;
    const T *in, *cos, *sin;
    std::int64_t tokens, heads, dim;
    __host__ __device__ void operator()(std::int64_t e) const {
        const std::int64_t pairs = dim / 2, i = 2 * index_mod(e, pairs), vec = index_div(e, pairs);  // vec = (row·tokens + token)·heads + head
        const std::int64_t token = index_mod(index_div(vec, heads), tokens);
        const T* c = cos + token * dim;
        const T* s = sin + token * dim;
        const T* a = in + vec * dim;
        T* o = out + vec * dim;
        if (Backward) {
            o[i] = a[i] * c[i] + a[i + 1] * s[i + 1];
            o[i + 1] = a[i + 1] * c[i + 1] - a[i] * s[i];
        } else {
            o[i] = a[i] * c[i] - a[i + 1] * s[i];
            o[i + 1] = a[i + 1] * c[i + 1] + a[i] * s[i + 1];
        }
    }
};

/// The row maximum and log Σ exp(z − max), kept apart (see the cpu backend).
template <class T>
__host__ __device__ inline void max_and_log_sum_exp(const T* z, std::int64_t K, double& m, double& log_s) {
    m = double(z[0]);
    for (std::int64_t k = 1; k < K; ++k) m = double(z[k]) > m ? double(z[k]) : m;
    double s = 0;
    for (std::int64_t k = 0; k < K; ++k) s += exp(double(z[k]) - m);
    log_s = log(s);
}

template <class T>
struct cross_entropy_row_op {
    double* row_loss;
    const T* logits;
    const std::int32_t* labels;
    std::int64_t K;
    __host__ __device__ void operator()(std::int64_t i) const {
        double m, log_s;
        max_and_log_sum_exp(logits + i * K, K, m, log_s);
        row_loss[i] = (m - double(logits[i * K + labels[i]])) + log_s;
    }
};

template <class T>
struct cross_entropy_backward_op {
    T* dlogits;
    const T* logits;
    const std::int32_t* labels;
    std::int64_t K;
    double f;
    __host__ __device__ void operator()(std::int64_t i) const {
        double m, log_s;
        max_and_log_sum_exp(logits + i * K, K, m, log_s);
        for (std::int64_t k = 0; k < K; ++k)
            dlogits[i * K + k] = static_cast<T>(f * (exp((double(logits[i * K + k]) - m) - log_s) - (k == labels[i] ? 1.0 : 0.0)));
    }
};

template <class T>
struct argmax_op {
    std::int32_t* out;
    const T* logits;
    std::int64_t K;
    __host__ __device__ void operator()(std::int64_t i) const {
        std::int64_t best = 0;
        for (std::int64_t k = 1; k < K; ++k)
            if (logits[i * K + k] > logits[i * K + best]) best = k;
        out[i] = static_cast<std::int32_t>(best);
    }
};

struct equal_op {
    __host__ __device__ std::int64_t operator()(std::int32_t a, std::int32_t b) const { return a == b ? 1 : 0; }
};

} // namespace cuda_detail

template <>
struct positional_kernels<cuda> {
    template <class T>
    static void timestep_embedding(T* out, const T* t, std::int64_t batch, std::int64_t half, double max_period) {
        cuda_detail::for_each_element(batch * half, cuda_detail::timestep_embedding_op<T>{out, t, half, max_period});
    }
    /// x, y (rows, tokens, heads, dim); cos, sin (tokens, dim).
    template <class T>
    static void rope_forward(T* y, const T* x, const T* cos, const T* sin, std::int64_t rows, std::int64_t tokens,
                             std::int64_t heads, std::int64_t dim) {
        cuda_detail::for_each_element(rows * tokens * heads * (dim / 2), cuda_detail::rope_pair_op<T, false>{y, x, cos, sin, tokens, heads, dim});
    }
    template <class T>
    static void rope_backward(T* dx, const T* dy, const T* cos, const T* sin, std::int64_t rows, std::int64_t tokens,
                              std::int64_t heads, std::int64_t dim) {
        cuda_detail::for_each_element(rows * tokens * heads * (dim / 2), cuda_detail::rope_pair_op<T, true>{dx, dy, cos, sin, tokens, heads, dim});
    }
};

template <>
struct cross_entropy_kernels<cuda> {
    /// Row of the first label outside [0, K), or -1 (waits for the stream).
    static std::int64_t first_invalid(const std::int32_t* labels, std::int64_t B, std::int64_t K) {
        return embedding_kernels<cuda>::first_invalid(labels, B, K);
    }
    static std::int64_t label_at(const std::int32_t* labels, std::int64_t i) { return embedding_kernels<cuda>::index_at(labels, i); }

    /// loss[0] = mean over rows of logsumexp(row) − row[label]; the row losses are added on the
    /// host in row order (B doubles cross), as the cpu does.
    template <class T>
    static void forward(T* loss, const T* logits, const std::int32_t* labels, std::int64_t B, std::int64_t K) {
        double total = 0;
        if (B > 0) {
            tensor<double, cuda> row_loss(tensor_shape{B});
            cuda_detail::for_each_element(B, cuda_detail::cross_entropy_row_op<T>{row_loss.data(), logits, labels, K});
            for (double v : row_loss.to_vector()) total += v;
        }
        const T value = static_cast<T>(B > 0 ? total / double(B) : 0.0);
        memory<cuda>::copy_from_host(loss, &value, sizeof value);
    }
    /// dlogits = scale · (softmax(logits) − onehot(labels)) / B.
    template <class T>
    static void backward(T* dlogits, const T* logits, const std::int32_t* labels, std::int64_t B, std::int64_t K, T scale) {
        cuda_detail::for_each_element(B, cuda_detail::cross_entropy_backward_op<T>{dlogits, logits, labels, K, double(scale) / double(B)});
    }
    template <class T>
    static void argmax(std::int32_t* out, const T* logits, std::int64_t B, std::int64_t K) {
        cuda_detail::for_each_element(B, cuda_detail::argmax_op<T>{out, logits, K});
    }
    /// Number of positions where a and b agree (waits for the stream).
    static std::int64_t count_equal(const std::int32_t* a, const std::int32_t* b, std::int64_t n) {
        if (n <= 0) return 0;
        return cuda_detail::thrust_call("thrust::inner_product", [&] {
            return thrust::inner_product(thrust::cuda::par.on(cuda_detail::stream()), a, a + n, b, std::int64_t{0},
                                         thrust::plus<std::int64_t>(), cuda_detail::equal_op{});
        });
    }
};

} // namespace vediff
