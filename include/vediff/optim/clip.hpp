#pragma once
// Global gradient norm and norm clipping, as torch.nn.utils.clip_grad_norm_ (L2 norm over the
// gradients of all trainable parameters taken together).
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/error.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::optim {

/// √(Σ over trainable parameters of Σ grad²), accumulated in double: one multi-tensor reduction
/// (on the cuda device one launch and one read-back, not one per parameter tensor).
template <class Model>
double global_grad_norm(Model& model) {
    using T = typename Model::value_type;
    using D = typename Model::device_type;
    std::vector<const T*> grads;
    std::vector<std::int64_t> lengths;
    model.for_each_parameter([&](const std::string&, nn::parameter<T, D>& p) {
        if (!p.trainable || p.grad.numel() == 0) return;
        grads.push_back(p.grad.data());
        lengths.push_back(p.grad.numel());
    }, std::string{});
    return std::sqrt(optim_kernels<D>::sum_of_squares_many(std::span<const T* const>(grads), std::span<const std::int64_t>(lengths)));
}

/// Scales the trainable gradients by max_norm / (norm + 1e-6) when that factor is below 1, and
/// returns the norm before clipping (torch's clip_grad_norm_ with norm_type 2). A non-finite
/// norm leaves the gradients alone; it throws numeric_error when error_if_nonfinite is set.
template <class Model>
double clip_grad_norm(Model& model, double max_norm, bool error_if_nonfinite = false) {
    using T = typename Model::value_type;
    using D = typename Model::device_type;
    const double norm = global_grad_norm(model);
    if (!std::isfinite(norm)) {
        if (error_if_nonfinite)
            throw numeric_error(fmt::format("clip_grad_norm: the total gradient norm is {}", norm));
        return norm;
    }
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        model.for_each_parameter([&](const std::string&, nn::parameter<T, D>& p) {
            if (p.trainable) elementwise_kernels<D>::scale(p.grad.data(), p.grad.data(), T(coef), p.grad.numel());
        }, std::string{});
    }
    return norm;
}

} // namespace vediff::optim
