#pragma once
// Parameter initialization. Every parameter carries the rule it was drawn by, and its values are
// a function of (model seed, full state_dict name) alone: the Philox key of a parameter is the
// model seed and its name mixed through SplitMix64, so no two parameters of a model share a key
// (a collision needs two 64-bit hashes to meet), adding a layer does not move the values of the
// others, and the values do not depend on the device or the thread count.
//
// A layer constructed with seed s holds exactly the values that nn::initialize(layer, s) gives:
// leaves draw by their local names ("weight", "bias"), and every composite that takes a seed
// calls initialize(*this, seed) at the end of its constructor, redrawing by full names.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vediff/core/random.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::nn {

/// SplitMix64's finalizer (Steele et al., OOPSLA 2014): a bijection on 64-bit words whose every
/// output bit depends on every input bit.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// 64-bit FNV-1a of a name.
constexpr std::uint64_t name_hash(std::string_view name) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
    return h;
}

/// The Philox key of the parameter `name` of a model initialized with `seed`.
constexpr std::uint64_t parameter_key(std::uint64_t seed, std::string_view name) {
    return mix64(mix64(seed) ^ name_hash(name));
}

/// Draws p.value by its rule from Philox (key, stream 0); a parameter whose rule is `none` keeps
/// its value (fixed tables such as sin-cos position embeddings).
template <class T, device D>
void draw(parameter<T, D>& p, std::uint64_t key) {
    const std::size_t n = static_cast<std::size_t>(p.value.numel());
    if (p.init.kind == init_rule::distribution::none || n == 0) return;
    std::vector<T> host(n);
    for (std::size_t i = 0; i < n; ++i) {
        switch (p.init.kind) {
        case init_rule::distribution::uniform:
            host[i] = static_cast<T>(p.init.scale * (2.0 * philox_uniform<double>(key, 0, 0, i) - 1.0));
            break;
        case init_rule::distribution::normal:
            host[i] = static_cast<T>(p.init.mean + p.init.scale * philox_normal<double>(key, 0, 0, i));
            break;
        default: host[i] = static_cast<T>(p.init.scale); break;
        }
    }
    p.value = tensor<T, D>::from_host(p.value.shape(), std::span<const T>(host));
}

/// A parameter of the given shape with its rule, drawn from `key`.
template <class T, device D>
parameter<T, D> make_parameter(tensor_shape shape, init_rule rule, std::uint64_t key) {
    parameter<T, D> p(shape);
    p.init = rule;
    draw(p, key);
    return p;
}

/// Redraws every parameter of `model` by its rule from parameter_key(seed, its full name).
template <class L>
void initialize(L& model, std::uint64_t seed, const std::string& prefix = {}) {
    model.for_each_parameter([&](const std::string& name, auto& p) { draw(p, parameter_key(seed, name)); }, prefix);
}

/// PyTorch's default init for Linear and Conv2d: kaiming_uniform_(a = √5) on the weight gives
/// U(−1/√fan_in, 1/√fan_in), and the bias uses the same bound.
inline double default_init_bound(std::int64_t fan_in) { return fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0; }

/// torch.nn.init.xavier_uniform_: U(−a, a), a = √(6 / (fan_in + fan_out)).
inline double xavier_uniform_bound(std::int64_t fan_in, std::int64_t fan_out) {
    return fan_in + fan_out > 0 ? std::sqrt(6.0 / double(fan_in + fan_out)) : 0.0;
}

} // namespace vediff::nn
