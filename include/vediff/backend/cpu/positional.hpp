#pragma once
// cpu kernels for position and time encodings: the sinusoidal timestep embedding of DiT and the
// rotary position embedding (RoPE) of LightningDiT, with its backward.
#include <cmath>
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct positional_kernels<cpu> {
    /// out (B, 2·half) = [cos(t·f_k) | sin(t·f_k)], f_k = exp(−ln(max_period)·k/half), in double.
    template <class T>
    static void timestep_embedding(T* out, const T* t, std::int64_t batch, std::int64_t half, double max_period) {
        cpu_detail::parallel_for(batch, [=](std::int64_t b) {
            for (std::int64_t k = 0; k < half; ++k) {
                const double angle = double(t[b]) * std::exp(-std::log(max_period) * double(k) / double(half));
                out[b * 2 * half + k] = static_cast<T>(std::cos(angle));
                out[b * 2 * half + half + k] = static_cast<T>(std::sin(angle));
            }
        }, 2 * half);
    }

    /// y = x·cos + rotate_half(x)·sin per (row, token, head), rotate_half(x₂ᵢ, x₂ᵢ₊₁) = (−x₂ᵢ₊₁, x₂ᵢ).
    /// x, y (rows, tokens, heads, dim); cos, sin (tokens, dim).
    template <class T>
    static void rope_forward(T* y, const T* x, const T* cos, const T* sin, std::int64_t rows, std::int64_t tokens,
                             std::int64_t heads, std::int64_t dim) {
        cpu_detail::parallel_for(rows * tokens, [=](std::int64_t rn) {
            const T* c = cos + (rn % tokens) * dim;
            const T* s = sin + (rn % tokens) * dim;
            for (std::int64_t h = 0; h < heads; ++h) {
                const T* xi = x + (rn * heads + h) * dim;
                T* yi = y + (rn * heads + h) * dim;
                for (std::int64_t i = 0; i < dim; i += 2) {
                    yi[i] = xi[i] * c[i] - xi[i + 1] * s[i];
                    yi[i + 1] = xi[i + 1] * c[i + 1] + xi[i] * s[i + 1];
                }
            }
        }, heads * dim);
    }

    /// The transpose of rope_forward: dx₂ᵢ = dy₂ᵢ·cos₂ᵢ + dy₂ᵢ₊₁·sin₂ᵢ₊₁, dx₂ᵢ₊₁ = dy₂ᵢ₊₁·cos₂ᵢ₊₁ − dy₂ᵢ·sin₂ᵢ.
    template <class T>
    static void rope_backward(T* dx, const T* dy, const T* cos, const T* sin, std::int64_t rows, std::int64_t tokens,
                              std::int64_t heads, std::int64_t dim) {
        cpu_detail::parallel_for(rows * tokens, [=](std::int64_t rn) {
            const T* c = cos + (rn % tokens) * dim;
            const T* s = sin + (rn % tokens) * dim;
            for (std::int64_t h = 0; h < heads; ++h) {
                const T* gi = dy + (rn * heads + h) * dim;
                T* di = dx + (rn * heads + h) * dim;
                for (std::int64_t i = 0; i < dim; i += 2) {
                    di[i] = gi[i] * c[i] + gi[i + 1] * s[i + 1];
                    di[i + 1] = gi[i + 1] * c[i + 1] - gi[i] * s[i];
                }
            }
        }, heads * dim);
    }
};

} // namespace vediff
