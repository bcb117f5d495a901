#pragma once
// cuda kernels filling arrays from Philox streams: one thread per Philox block (four elements),
// with exactly the arithmetic of the cpu backend (backend/cpu/random.hpp: the same explicit
// fused multiply-adds), so a cuda tensor drawn from (seed, stream, offset) holds the cpu backend's
// values: bit for bit for uniform and Bernoulli draws, and for normals up to the last bit of the
// device's double log/sin/cos (which may round differently from the host's libm).
#include <cmath>
#include <cstdint>

#include <thrust/execution_policy.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include "vediff/backend/cuda/runtime.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"

namespace vediff {

namespace cuda_detail {

/// The elements of Philox block first_block + j of a stream that fall in the fill: out[i] is
/// element first + i of the draw (the cpu backend's layout).
template <class T, class Write>
struct philox_block_op {
    T* out;
    std::int64_t n;
    std::uint64_t seed, stream, offset, first;
    Write write;
    __host__ __device__ void operator()(std::int64_t j) const {
        const std::int64_t begin = static_cast<std::int64_t>(first), end = begin + n;
        const std::int64_t block = begin / 4 + j;
        const auto w = philox4x32::block(seed, stream, offset + static_cast<std::uint64_t>(block));
        const int k0 = begin - 4 * block > 0 ? static_cast<int>(begin - 4 * block) : 0;
        const int k1 = end - 4 * block < 4 ? static_cast<int>(end - 4 * block) : 4;
        write(out, 4 * block - begin, w, k0, k1);  // out[base + k], base < 0 only for words k < k0
    }
};
template <class T>
struct normal_write {
    T mean, stddev;
    __host__ __device__ void operator()(T* out, std::int64_t base, const philox4x32::counter& w, int k0, int k1) const {
        for (int pair = k0 / 2; 2 * pair < k1; ++pair) {
            const double u1 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair)]);
            const double u2 = uniform_from_bits<double>(w[static_cast<std::size_t>(2 * pair + 1)]);
            const double radius = sqrt(-2.0 * log(u1));
            const double angle = 6.283185307179586476925 * u2;
            if (2 * pair >= k0) out[base + 2 * pair] = fma(stddev, static_cast<T>(radius * cos(angle)), mean);
            if (2 * pair + 1 < k1) out[base + 2 * pair + 1] = fma(stddev, static_cast<T>(radius * sin(angle)), mean);
        }
    }
};

template <class T>
struct uniform_write {
    T lo, hi;
    __host__ __device__ void operator()(T* out, std::int64_t base, const philox4x32::counter& w, int k0, int k1) const {
        for (int k = k0; k < k1; ++k) out[base + k] = fma(hi - lo, uniform_from_bits<T>(w[static_cast<std::size_t>(k)]), lo);
    }
};

template <class T>
struct bernoulli_write {
    double p;
    T value;
    __host__ __device__ void operator()(T* out, std::int64_t base, const philox4x32::counter& w, int k0, int k1) const {
        for (int k = k0; k < k1; ++k) out[base + k] = uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p ? value : T(0);
    }
};

template <class T>
struct training_time_op {
    T* t;
    bool logistic;
    double shift;
    __host__ __device__ void operator()(std::int64_t i) const { t[i] = training_time<T>(double(t[i]), logistic, shift); }
};

/// out[base + k] = value where draw k < p; the other elements are left as they are.
template <class T>
struct replace_write {
    double p;
    T value;
    __host__ __device__ void operator()(T* out, std::int64_t base, const philox4x32::counter& w, int k0, int k1) const {
        for (int k = k0; k < k1; ++k)
            if (uniform_from_bits<double>(w[static_cast<std::size_t>(k)]) < p) out[base + k] = value;
    }
};

template <class T, class Write>
void for_each_philox_block(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first,
                           Write write) {
    if (n <= 0) return;
    const auto blocks = static_cast<std::int64_t>((first + static_cast<std::uint64_t>(n) + 3) / 4 - first / 4);
    cuda_detail::thrust_call("thrust::for_each", [&] {
        return thrust::for_each(thrust::cuda::par_nosync.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                                thrust::counting_iterator<std::int64_t>(blocks),
                                philox_block_op<T, Write>{out, n, seed, stream, offset, first, write});
    });
}

} // namespace cuda_detail

template <>
struct random_kernels<cuda> {
    /// out[i] = mean + stddev · N_i
    template <class T>
    static void normal(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first, T mean, T stddev) {
        cuda_detail::for_each_philox_block(out, n, seed, stream, offset, first, cuda_detail::normal_write<T>{mean, stddev});
    }
    /// out[i] = lo + (hi − lo) · U_i, U_i in (0, 1)
    template <class T>
    static void uniform(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first, T lo, T hi) {
        cuda_detail::for_each_philox_block(out, n, seed, stream, offset, first, cuda_detail::uniform_write<T>{lo, hi});
    }
    /// out[i] = value if U_i < p, else 0
    template <class T>
    static void bernoulli(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first, double p, T value) {
        cuda_detail::for_each_philox_block(out, n, seed, stream, offset, first, cuda_detail::bernoulli_write<T>{p, value});
    }
    template <class T>
    static void training_times(T* t, std::int64_t n, bool logistic, double shift) {
        if (n <= 0) return;
        cuda_detail::thrust_call("thrust::for_each", [&] {
            return thrust::for_each(thrust::cuda::par.on(cuda_detail::stream()), thrust::counting_iterator<std::int64_t>(0),
                                    thrust::counting_iterator<std::int64_t>(n),
                                    cuda_detail::training_time_op<T>{t, logistic, shift});
        });
    }
    template <class T>
    static void replace(T* out, std::int64_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset, std::uint64_t first, double p, T value) {
        cuda_detail::for_each_philox_block(out, n, seed, stream, offset, first, cuda_detail::replace_write<T>{p, value});
    }
};

} // namespace vediff
