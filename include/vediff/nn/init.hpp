#pragma once
// Parameter initialization shared by the layers, drawn with Philox so that the values depend on
// the seed only (not on the device or the thread count).
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "vediff/core/random.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::nn {

/// A parameter of the given shape drawn from U(−bound, bound) with Philox (seed, stream): the
/// values depend on the seed only, not on the device or thread count.
template <class T, device D>
parameter<T, D> uniform_parameter(tensor_shape shape, double bound, std::uint64_t seed, std::uint64_t stream) {
    std::vector<T> host(static_cast<std::size_t>(shape.numel()));
    for (std::size_t i = 0; i < host.size(); ++i)
        host[i] = static_cast<T>(bound * (2.0 * philox_uniform<double>(seed, stream, 0, i) - 1.0));
    parameter<T, D> p(shape);
    p.value = tensor<T, D>::from_host(shape, std::span<const T>(host));
    return p;
}

/// PyTorch's default init for Linear and Conv2d: kaiming_uniform_(a = √5) on the weight gives
/// U(−1/√fan_in, 1/√fan_in), and the bias uses the same bound.
inline double default_init_bound(std::int64_t fan_in) { return fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0; }

} // namespace vediff::nn
