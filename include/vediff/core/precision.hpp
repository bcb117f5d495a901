#pragma once
// Precision policies: how the matrix products of a layer compute, chosen by template parameter
// like the device (nn::linear<T, D, P>, models::dit<T, D, P>, ...).
//   fp32        every product in the element type (float or double), as today.
//   bf16_mixed  matrix products (Linear, the attention's q·kᵀ and p·v, their backward products)
//               round their operands to bfloat16 (round to nearest even) and accumulate in fp32;
//               parameters, their gradients and the optimizer state stay fp32 (master weights);
//               norms, softmax, activations, losses, reductions, the VE/KL terms stay fp32.
// The op-by-op list is in docs/design.md ("Mixed precision"). A policy is a tag; the kernels
// read `product_operand` (what the operands are rounded to) and nothing else.
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "vediff/core/bfloat16.hpp"

namespace vediff {

struct fp32 {
    static constexpr std::string_view name = "fp32";
    static constexpr bool rounds_operands = false;
};

struct bf16_mixed {
    static constexpr std::string_view name = "bf16";
    static constexpr bool rounds_operands = true;
    using product_operand = bfloat16;
};

template <class P>
concept precision_policy = std::is_same_v<P, fp32> || std::is_same_v<P, bf16_mixed>;

/// Whether `name` names a precision policy ("fp32" or "bf16", the `--precision` flag's values).
inline bool is_precision_name(std::string_view name) { return name == fp32::name || name == bf16_mixed::name; }

/// Calls f.template operator()<P>() with the policy named by `name` ("fp32" or "bf16"): a run's
/// precision chosen at run time, each policy compiled once.
template <class F>
decltype(auto) with_precision(std::string_view name, F&& f) {
    if (name == fp32::name) return f.template operator()<fp32>();
    if (name == bf16_mixed::name) return f.template operator()<bf16_mixed>();
    throw std::invalid_argument("--precision " + std::string(name) + ": expected fp32 or bf16");
}

} // namespace vediff
