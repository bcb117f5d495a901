#pragma once
// Random fills from a philox_generator. Each call reserves ⌈n/4⌉ Philox blocks of the generator
// (advancing its offset; ⌈n·count/4⌉ for a generator sharded over `count` processes, element i
// then being draw index·n + i), and element i of the view takes draw i of the reserved range
// (philox_normal / philox_uniform of core/random.hpp): the numbers depend on (seed, stream,
// offset) only, never on the device or the thread count, and saving `offset` replays them.
// Scalars are taken as T without deduction, so fill_normal(float_view, gen, 0.0, 0.02) compiles.
#include <cstdint>
#include <stdexcept>
#include <type_traits>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

template <class T>
using scalar_of = std::type_identity_t<T>;

/// t[i] = mean + stddev · N(0, 1).
template <class T, device D>
void fill_normal(const tensor_view<T, D>& t, philox_generator& gen, scalar_of<T> mean = T(0), scalar_of<T> stddev = T(1)) {
    const auto r = gen.reserve_slice(static_cast<std::uint64_t>(t.numel()));
    random_kernels<D>::normal(t.data(), t.numel(), gen.seed, gen.stream, r.offset, r.first, mean, stddev);
}

/// t[i] uniform in (lo, hi).
template <class T, device D>
void fill_uniform(const tensor_view<T, D>& t, philox_generator& gen, scalar_of<T> lo = T(0), scalar_of<T> hi = T(1)) {
    const auto r = gen.reserve_slice(static_cast<std::uint64_t>(t.numel()));
    random_kernels<D>::uniform(t.data(), t.numel(), gen.seed, gen.stream, r.offset, r.first, lo, hi);
}

/// t[i] = value with probability p, else 0 (element i is kept when draw i < p). A dropout mask
/// of drop probability q is fill_bernoulli(mask, gen, 1 − q, 1/(1 − q)).
template <class T, device D>
void fill_bernoulli(const tensor_view<T, D>& t, philox_generator& gen, double p, scalar_of<T> value = T(1)) {
    if (!(p >= 0.0 && p <= 1.0))
        throw std::invalid_argument(fmt::format("fill_bernoulli: probability {} is outside [0, 1]", p));
    const auto r = gen.reserve_slice(static_cast<std::uint64_t>(t.numel()));
    random_kernels<D>::bernoulli(t.data(), t.numel(), gen.seed, gen.stream, r.offset, r.first, p, value);
}

/// t[i] = value with probability p, else t[i] as it was (element i is replaced when draw i < p):
/// label dropout, which turns a label into the null class.
template <class T, device D>
void replace_with_probability(const tensor_view<T, D>& t, philox_generator& gen, double p, scalar_of<T> value) {
    if (!(p >= 0.0 && p <= 1.0))
        throw std::invalid_argument(fmt::format("replace_with_probability: probability {} is outside [0, 1]", p));
    const auto r = gen.reserve_slice(static_cast<std::uint64_t>(t.numel()));
    random_kernels<D>::replace(t.data(), t.numel(), gen.seed, gen.stream, r.offset, r.first, p, value);
}

/// A new tensor of N(mean, stddev²) draws.
template <class T, device D = cpu>
tensor<T, D> normal(tensor_shape shape, philox_generator& gen, scalar_of<T> mean = T(0), scalar_of<T> stddev = T(1)) {
    tensor<T, D> t(shape);
    fill_normal(t.view(), gen, mean, stddev);
    return t;
}

/// A new tensor of U(lo, hi) draws.
template <class T, device D = cpu>
tensor<T, D> uniform(tensor_shape shape, philox_generator& gen, scalar_of<T> lo = T(0), scalar_of<T> hi = T(1)) {
    tensor<T, D> t(shape);
    fill_uniform(t.view(), gen, lo, hi);
    return t;
}

} // namespace vediff::ops
