#pragma once
// Reconstruction term: weight · Σ ρ(x̂ − x) over the pixels of an image (per_image_sum: averaged
// over the batch), with ρ the norm tag's elementwise penalty: l1 |·| (VA-VAE's pixel loss) or
// l2 (·)² (the norm under which the VE equilibrium σ = (λ/T)^¼ is derived).
#include <string_view>

#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

/// |x̂ − x|; its gradient sign(x̂ − x), with the subgradient 0 where they are equal.
struct l1 {
    static constexpr std::string_view name = "rec_l1";
    template <class T, device D>
    static double sum(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat, double g) {
        return ops::abs_error_sum(x, x_hat, dx_hat, g);
    }
};

/// (x̂ − x)²; its gradient 2(x̂ − x).
struct l2 {
    static constexpr std::string_view name = "rec_l2";
    template <class T, device D>
    static double sum(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat, double g) {
        return ops::squared_error_sum(x, x_hat, dx_hat, g);
    }
};

template <class Norm>
struct reconstruction {
    struct config {
        double weight = 1.0;
    };
    static constexpr std::string_view name = Norm::name;

    config cfg{};

    reconstruction() = default;
    explicit reconstruction(const config& c) : cfg(c) {}

    /// Adds its gradient into grads.dx_hat; returns its value.
    template <class T, device D>
    double accumulate(const tokenizer_outputs<T, D>& out, tokenizer_gradients<T, D>& grads, reduction mode) const {
        if (!(out.x.shape() == out.x_hat.shape()))
            throw shape_error(fmt::format("{}: x {} and x_hat {} differ", name, out.x.shape(), out.x_hat.shape()));
        const double scale = cfg.weight / reduction_divisor(name, mode, out.x_hat.shape());
        return scale * Norm::sum(out.x, out.x_hat, grads.dx_hat, scale);
    }
};

} // namespace vediff::loss
