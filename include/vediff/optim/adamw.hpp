#pragma once
// AdamW (Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR 2019), with the
// update order and bias corrections of torch.optim.AdamW (PyTorch 1.13, single-tensor path).
#include <cmath>
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

struct adamw_config {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;
};

/// The scalars of AdamW's update at step t (1-based), as torch.optim.AdamW computes them; shared
/// by every optimizer that runs the AdamW kernel (adamw, muon's AdamW part, sharded_adamw).
inline adamw_scalars adamw_step_scalars(const adamw_config& c, std::int64_t step) {
    const double t = static_cast<double>(step);
    adamw_scalars s;
    s.decay_factor = 1.0 - c.lr * c.weight_decay;
    s.beta1 = c.beta1;
    s.beta2 = c.beta2;
    s.eps = c.eps;
    s.step_size = c.lr / (1.0 - std::pow(c.beta1, t));
    s.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(c.beta2, t));
    return s;
}

/// Throws std::invalid_argument naming the first value of c outside its range.
inline void validate_adamw_config(const adamw_config& c) {
    auto bad = [](const char* what, double v) { return std::invalid_argument(fmt::format("adamw: invalid {} {}", what, v)); };
    if (!(c.lr >= 0) || !std::isfinite(c.lr)) throw bad("learning rate", c.lr);
    if (!(c.beta1 >= 0 && c.beta1 < 1)) throw bad("beta1", c.beta1);
    if (!(c.beta2 >= 0 && c.beta2 < 1)) throw bad("beta2", c.beta2);
    if (!(c.eps >= 0)) throw bad("eps", c.eps);
    if (!(c.weight_decay >= 0)) throw bad("weight_decay", c.weight_decay);
}

/// AdamW over the trainable parameters of a model. It keeps pointers to the parameters, so the
/// model must outlive the optimizer and stay where it is (not be moved) while it is attached.
/// Moments are kept per parameter *name*, so a checkpoint can store and restore them
/// (for_each_state) together with step_count() for a bit-exact resume.
template <class T = float, device D = cpu>
class adamw {
public:
    using value_type = T;
    using device_type = D;
    using parameter_type = nn::parameter<T, D>;

    /// The optimizer state of one trainable parameter.
    struct slot {
        std::string name;
        parameter_type* param = nullptr;
        tensor<T, D> exp_avg;     // m, same shape as the parameter
        tensor<T, D> exp_avg_sq;  // v, same shape as the parameter
    };

    template <class Model>
        requires std::same_as<typename Model::value_type, T> && std::same_as<typename Model::device_type, D>
    explicit adamw(Model& model, adamw_config config = {}) : config_(config) {
        validate_adamw_config(config_);
        for (auto& [name, p] : nn::named_parameters(model)) {
            if (!p->trainable) continue;
            if (find(name))
                throw std::invalid_argument(fmt::format("adamw: two parameters are named '{}'; moments are kept by name", name));
            slots_.push_back({name, p, tensor<T, D>::zeros(p->shape()), tensor<T, D>::zeros(p->shape())});
        }
    }

    /// One update of every trainable parameter from its current gradient.
    void step() {
        ++step_count_;
        const adamw_scalars s = adamw_step_scalars(config_, step_count_);
        std::vector<adamw_tensor<T>> tensors;
        tensors.reserve(slots_.size());
        for (auto& sl : slots_) {
            require_same_shape("adamw: parameter and gradient", sl.param->value, sl.param->grad);
            tensors.push_back({sl.param->value.data(), sl.exp_avg.data(), sl.exp_avg_sq.data(), sl.param->grad.data(),
                               sl.param->value.numel()});
        }
        // One multi-tensor update (one launch on the cuda device), element for element the same.
        optim_kernels<D>::adamw_update_many(std::span<const adamw_tensor<T>>(tensors), s);
    }

    /// Sets the gradients of the parameters this optimizer updates to zero.
    void zero_grad() {
        for (auto& sl : slots_) ops::fill(sl.param->grad.view(), T(0));
    }

    void set_lr(double lr) {
        if (!(lr >= 0) || !std::isfinite(lr)) throw std::invalid_argument(fmt::format("adamw: learning rate {} is not a finite value >= 0", lr));
        config_.lr = lr;
    }
    double lr() const { return config_.lr; }
    const adamw_config& config() const { return config_; }

    /// Number of step() calls so far (torch's state["step"]); the bias corrections depend on it.
    std::int64_t step_count() const { return step_count_; }
    void set_step_count(std::int64_t steps) {
        if (steps < 0) throw std::invalid_argument(fmt::format("adamw: step count {} is negative", steps));
        step_count_ = steps;
    }

    std::span<slot> slots() { return slots_; }
    std::span<const slot> slots() const { return slots_; }

    /// The state of the parameter `name`, or nullptr when it is not optimized here.
    slot* find(std::string_view name) {
        for (auto& sl : slots_)
            if (sl.name == name) return &sl;
        return nullptr;
    }

    /// Visits (name, tensor&) for every moment: "<parameter>.exp_avg" and "<parameter>.exp_avg_sq",
    /// the names a checkpoint stores them under.
    template <class F>
    void for_each_state(F&& f) {
        for (auto& sl : slots_) {
            f(sl.name + ".exp_avg", sl.exp_avg);
            f(sl.name + ".exp_avg_sq", sl.exp_avg_sq);
        }
    }

private:
    adamw_config config_;
    std::vector<slot> slots_;
    std::int64_t step_count_ = 0;
};

template <class Model>
adamw(Model&, adamw_config = {}) -> adamw<typename Model::value_type, typename Model::device_type>;

} // namespace vediff::optim
