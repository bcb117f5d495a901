#pragma once
// Exponential moving average of a model's parameters (DiT / SiT / LightningDiT keep one with
// decay 0.9999 and sample with it). After each optimizer step:
//
//     shadow ← d_t·shadow + (1 − d_t)·param,   d_t = min(decay, (1 + step)/(10 + step)),
//
// with step the number of optimizer steps taken before this update (0 on the first). The warm-up
// factor (1 + step)/(10 + step) (TensorFlow's ExponentialMovingAverage with num_updates) lets the
// average forget the random initialization quickly instead of dragging it along for ~1/(1 − decay)
// steps; it starts at 0.1 and reaches 0.9999 after about 90,000 steps. With warm-up off, d_t =
// decay throughout, as DiT's update_ema (whose shadow starts as a copy of the initial model).
//
// The shadow holds every parameter of the model, trainable or not, under the model's names.
// Fixed (non-trainable) tensors are copied rather than averaged, so they stay bit-exact (an average
// of a constant is the constant only up to rounding). for_each_parameter visits the shadow as
// nn::parameter objects, so save_state_dict / load_state_dict (io/safetensors.hpp) store and
// restore it as they do a model. A shadow's `grad` has no elements: it is never differentiated.
//
// swap exchanges the values of model and shadow by copying through a scratch tensor rather than
// exchanging storage, so views of the parameters that layers or optimizers may hold stay valid.
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::optim {

struct ema_config {
    double decay = 0.9999;
    bool warmup = true;  // d_t = min(decay, (1 + step)/(10 + step)); off: d_t = decay
};

template <class T = float, device D = cpu>
class ema {
public:
    using value_type = T;
    using device_type = D;
    using parameter_type = nn::parameter<T, D>;

    /// A shadow copy of every parameter of the model.
    template <class Model>
        requires std::same_as<typename Model::value_type, T> && std::same_as<typename Model::device_type, D>
    explicit ema(Model& model, ema_config config = {}) : config_(config) {
        if (!(config_.decay >= 0 && config_.decay <= 1))
            throw std::invalid_argument(fmt::format("ema: decay {} is outside [0, 1]", config_.decay));
        for (auto& [name, p] : nn::named_parameters(model)) {
            if (find(name)) throw std::invalid_argument(fmt::format("ema: two parameters are named '{}'; the shadow is kept by name", name));
            slot s{name, parameter_type{}};
            s.shadow.value = p->value.clone();
            s.shadow.grad = tensor<T, D>(tensor_shape{0});
            s.shadow.trainable = p->trainable;
            slots_.push_back(std::move(s));
        }
    }

    /// The decay used by update(model, step).
    double decay_at(std::int64_t step) const {
        if (!config_.warmup) return config_.decay;
        const double s = double(std::max<std::int64_t>(step, 0));
        return std::min(config_.decay, (1.0 + s) / (10.0 + s));
    }

    /// shadow ← d·shadow + (1 − d)·param for trainable parameters, shadow ← param for fixed ones.
    /// Evaluated as shadow += (1 − d)·(param − shadow) (the form of torch's lerp_): a parameter that stops
    /// changing is then an exact fixed point, which d·shadow + (1 − d)·param is not once d and
    /// 1 − d are rounded to T.
    template <class Model>
    void update(Model& model, std::int64_t step) {
        const double d = decay_at(step);
        std::vector<ema_tensor<T>> averaged;
        for_each_pair(model, "update", [&](parameter_type& shadow, parameter_type& p) {
            if (p.trainable)
                averaged.push_back({shadow.value.data(), p.value.data(), p.value.numel()});
            else
                ops::copy(shadow.value.view(), p.value.view());
        });
        // The trainable ones in one multi-tensor update (one launch on the cuda device).
        optim_kernels<D>::ema_update_many(std::span<const ema_tensor<T>>(averaged), T(1.0 - d));
    }

    /// Writes the shadow into the model's parameters.
    template <class Model>
    void copy_to(Model& model) {
        for_each_pair(model, "copy_to", [](parameter_type& shadow, parameter_type& p) { ops::copy(p.value.view(), shadow.value.view()); });
    }

    /// Exchanges the model's parameters with the shadow: sample with the average, swap back to train.
    template <class Model>
    void swap(Model& model) {
        for_each_pair(model, "swap", [](parameter_type& shadow, parameter_type& p) {
            auto scratch = p.value.clone();
            ops::copy(p.value.view(), shadow.value.view());
            ops::copy(shadow.value.view(), scratch.view());
        });
    }

    /// Visits (name, shadow parameter) in the model's order, names prefixed like a layer's.
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) {
        for (auto& s : slots_) f(nn::join_name(prefix, s.name), s.shadow);
    }

    /// The shadow of parameter `name`, or nullptr.
    parameter_type* find(std::string_view name) {
        for (auto& s : slots_)
            if (s.name == name) return &s.shadow;
        return nullptr;
    }

    std::size_t size() const { return slots_.size(); }
    const ema_config& config() const { return config_; }

private:
    struct slot {
        std::string name;
        parameter_type shadow;
    };

    /// Calls f(shadow, model parameter) for each parameter, after checking that the model has the
    /// names and shapes the shadow was built from, in the same order.
    template <class Model, class F>
    void for_each_pair(Model& model, const char* op, F&& f) {
        const auto params = nn::named_parameters(model);
        if (params.size() != slots_.size())
            throw std::invalid_argument(fmt::format("ema::{}: the model has {} parameters, the average {}", op, params.size(), slots_.size()));
        for (std::size_t i = 0; i < params.size(); ++i) {
            auto& [name, p] = params[i];
            if (name != slots_[i].name || !(p->shape() == slots_[i].shadow.shape()))
                throw shape_error(fmt::format("ema::{}: model parameter {} '{}' {} does not match the average's '{}' {}", op, i, name,
                                              p->shape(), slots_[i].name, slots_[i].shadow.shape()));
        }
        for (std::size_t i = 0; i < params.size(); ++i) f(slots_[i].shadow, *params[i].second);
    }

    ema_config config_;
    std::vector<slot> slots_;
};

template <class Model>
ema(Model&, ema_config = {}) -> ema<typename Model::value_type, typename Model::device_type>;

} // namespace vediff::optim
