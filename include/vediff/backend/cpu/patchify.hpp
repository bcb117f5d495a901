#pragma once
// cpu kernels moving elements between images (B, C, H, W) and patch tokens (B, h·w, p·p·C) in
// DiT's layout: token t = row·w + col, and inside a token element (i·p + j)·C + c holds pixel
// (row·p + i, col·p + j) of channel c (channel fastest, as unpatchify's einsum nhwpqc → nchpwq).
#include <cstdint>

#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct patchify_kernels<cpu> {
    template <class T>
    static void patchify(T* tokens, const T* image, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                         std::int64_t p) {
        walk(B, C, H, W, p, [=](std::int64_t token_index, std::int64_t pixel_index) { tokens[token_index] = image[pixel_index]; });
    }
    template <class T>
    static void unpatchify(T* image, const T* tokens, std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W,
                           std::int64_t p) {
        walk(B, C, H, W, p, [=](std::int64_t token_index, std::int64_t pixel_index) { image[pixel_index] = tokens[token_index]; });
    }

private:
    // Calls f(token element, pixel element) for every element; each (batch, patch row) is one
    // task, and the two layouts are bijective, so tasks never write the same element.
    template <class F>
    static void walk(std::int64_t B, std::int64_t C, std::int64_t H, std::int64_t W, std::int64_t p, F f) {
        const std::int64_t h = H / p, w = W / p, dim = p * p * C;
        cpu_detail::parallel_for(B * h, [=](std::int64_t task) {
            const std::int64_t b = task / h, row = task % h;
            for (std::int64_t col = 0; col < w; ++col) {
                const std::int64_t tok = ((b * h + row) * w + col) * dim;
                for (std::int64_t i = 0; i < p; ++i)
                    for (std::int64_t j = 0; j < p; ++j)
                        for (std::int64_t c = 0; c < C; ++c)
                            f(tok + (i * p + j) * C + c, ((b * C + c) * H + row * p + i) * W + col * p + j);
            }
        }, w * dim);
    }
};

} // namespace vediff
