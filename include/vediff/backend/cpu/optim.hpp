#pragma once
// cpu kernels for the optimizers: the fused AdamW update, a sum of squares for gradient norms and
// clipping by the global norm.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "vediff/backend/cpu/elementwise.hpp"
#include "vediff/backend/cpu/parallel.hpp"
#include "vediff/core/kernels.hpp"

namespace vediff {

template <>
struct optim_kernels<cpu> {
    /// p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g; v ← β2·v + (1 − β2)·g²;
    /// p ← p − step_size·m / (√v / √(1 − β2^t) + eps). The operation order follows torch's
    /// _single_tensor_adamw (mul_, add_, addcmul_, sqrt/div/add_, addcdiv_), so float results
    /// stay within an ulp or two of PyTorch's.
    template <class T>
    static void adamw_update(T* p, T* m, T* v, const T* g, std::int64_t n, const adamw_scalars& s) {
        const T decay = T(s.decay_factor), b1 = T(s.beta1), b2 = T(s.beta2);
        const T c1 = T(1 - s.beta1), c2 = T(1 - s.beta2), eps = T(s.eps);
        const T neg_step = T(-s.step_size), bc2 = T(s.bias_correction2_sqrt);
        cpu_detail::parallel_for(n, [=](std::int64_t i) {
            const T gi = g[i];
            const T mi = m[i] * b1 + gi * c1;
            const T vi = v[i] * b2 + c2 * gi * gi;
            const T denom = std::sqrt(vi) / bc2 + eps;
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * decay + neg_step * mi / denom;
        });
    }

    /// Σ x² accumulated in double over fixed chunks, so the result does not depend on the
    /// number of threads (a resumed run reproduces the clipped gradients bit for bit).
    template <class T>
    static double sum_of_squares(const T* x, std::int64_t n) {
        constexpr std::int64_t chunk = 8192;
        const std::int64_t chunks = (n + chunk - 1) / chunk;
        std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
        cpu_detail::parallel_for(chunks, [&](std::int64_t c) {
            const std::int64_t end = std::min(n, (c + 1) * chunk);
            double s = 0;
            for (std::int64_t i = c * chunk; i < end; ++i) s += double(x[i]) * double(x[i]);
            partial[static_cast<std::size_t>(c)] = s;
        }, chunk);
        double total = 0;
        for (double s : partial) total += s;
        return total;
    }

    /// adamw_update over a list of tensors (the cuda backend does it in one launch).
    template <class T>
    static void adamw_update_many(std::span<const adamw_tensor<T>> tensors, const adamw_scalars& s) {
        for (const auto& t : tensors) adamw_update(t.param, t.exp_avg, t.exp_avg_sq, t.grad, t.n, s);
    }

    /// shadow += weight·(param − shadow) over a list of tensors, each difference rounded to T
    /// first (the form of torch's lerp_, which keeps a constant parameter a fixed point).
    template <class T>
    static void ema_update_many(std::span<const ema_tensor<T>> tensors, T weight) {
        for (const auto& t : tensors) {
            T* shadow = t.shadow;
            const T* param = t.param;
            cpu_detail::parallel_for(t.n, [=](std::int64_t i) {
                const T difference = param[i] - shadow[i];
                shadow[i] += weight * difference;
            });
        }
    }

    /// Σ over the tensors of Σ x², each tensor's sum as sum_of_squares and added in list order
    /// (the gradient norm of a whole model; the cuda backend does the same in one launch).
    template <class T>
    static double sum_of_squares_many(std::span<const T* const> tensors, std::span<const std::int64_t> lengths) {
        double total = 0;
        for (std::size_t i = 0; i < tensors.size(); ++i) total += sum_of_squares(tensors[i], lengths[i]);
        return total;
    }

    /// Scales the tensors by clip_factor(their global L2 norm, max_norm), as torch's
    /// clip_grad_norm_; returns {norm, factor}.
    template <class T>
    static std::array<double, 2> clip_by_global_norm_many(std::span<T* const> tensors, std::span<const std::int64_t> lengths,
                                                          double max_norm) {
        const std::vector<const T*> read(tensors.begin(), tensors.end());
        const double norm = std::sqrt(sum_of_squares_many(std::span<const T* const>(read), lengths));
        const double factor = clip_factor(norm, max_norm);
        if (factor < 1.0)
            for (std::size_t i = 0; i < tensors.size(); ++i) elementwise_kernels<cpu>::scale(tensors[i], tensors[i], T(factor), lengths[i]);
        return {norm, factor};
    }
};

} // namespace vediff
