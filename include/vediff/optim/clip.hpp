#pragma once
// Global gradient norm and norm clipping, as torch.nn.utils.clip_grad_norm_ (L2 norm over the
// gradients of all trainable parameters taken together).
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/deferred.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/error.hpp"
#include "vediff/nn/layer.hpp"

namespace vediff::optim {

namespace detail {
/// The trainable parameters' non-empty gradients, in the model's order, and their lengths.
template <class T>
struct gradient_list {
    std::vector<T*> data;
    std::vector<std::int64_t> lengths;
};
template <class Model>
gradient_list<typename Model::value_type> trainable_gradients(Model& model) {
    using T = typename Model::value_type;
    using D = typename Model::device_type;
    gradient_list<T> list;
    model.for_each_parameter([&](const std::string&, nn::parameter<T, D>& p) {
        if (!p.trainable || p.grad.numel() == 0) return;
        list.data.push_back(p.grad.data());
        list.lengths.push_back(p.grad.numel());
    }, std::string{});
    return list;
}
} // namespace detail

/// √(Σ over trainable parameters of Σ grad²), accumulated in double: one multi-tensor reduction
/// (on the cuda device one launch and one read-back, not one per parameter tensor).
template <class Model>
double global_grad_norm(Model& model) {
    using T = typename Model::value_type;
    using D = typename Model::device_type;
    const auto grads = detail::trainable_gradients(model);
    const std::vector<const T*> read(grads.data.begin(), grads.data.end());
    return std::sqrt(optim_kernels<D>::sum_of_squares_many(std::span<const T* const>(read), std::span<const std::int64_t>(grads.lengths)));
}

namespace detail {
inline deferred_value norm_of(const std::array<double, 2>& norm_and_factor) { return deferred_value(norm_and_factor[0]); }
template <device D>
deferred_value norm_of(tensor<double, D> norm_and_factor) {
    return deferred_element(std::make_shared<const tensor<double, D>>(std::move(norm_and_factor)), 0);
}
} // namespace detail

/// Scales the trainable gradients by max_norm / (norm + 1e-6) when that factor is below 1
/// (clip_factor; a non-finite norm leaves them alone), as torch's clip_grad_norm_ with norm_type 2,
/// and returns the norm before clipping, read when asked: on the cuda device the norm, the factor
/// and the scaling stay on the device, so a training step need not wait for them.
template <class Model>
deferred_value clip_grad_norm_deferred(Model& model, double max_norm) {
    using T = typename Model::value_type;
    using D = typename Model::device_type;
    const auto grads = detail::trainable_gradients(model);
    return detail::norm_of(optim_kernels<D>::clip_by_global_norm_many(std::span<T* const>(grads.data),
                                                                      std::span<const std::int64_t>(grads.lengths), max_norm));
}

/// clip_grad_norm_deferred, its norm read now; with error_if_nonfinite a non-finite norm throws
/// numeric_error (the gradients were left alone).
template <class Model>
double clip_grad_norm(Model& model, double max_norm, bool error_if_nonfinite = false) {
    const double norm = clip_grad_norm_deferred(model, max_norm).get();
    if (!std::isfinite(norm) && error_if_nonfinite) throw numeric_error(fmt::format("clip_grad_norm: the total gradient norm is {}", norm));
    return norm;
}

} // namespace vediff::optim
