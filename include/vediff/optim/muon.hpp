#pragma once
// Muon ("MomentUm Orthogonalized by Newton–Schulz", K. Jordan et al., github.com/KellerJordan/Muon)
// for the hidden weight matrices, AdamW for every other trainable parameter, as the reference's
// MuonWithAuxAdam combines them.
//
// Muon, per 2-D weight W (rows × cols) with gradient g and momentum buffer m (β = 0.95):
//     m ← β·m + (1 − β)·g;   u = (1 − β)·g + β·m  (Nesterov);   O = NS5(u)
//     W ← (1 − lr·wd)·W − lr·√max(1, rows/cols)·O
// NS5 is the quintic Newton–Schulz iteration with coefficients (3.4445, −4.7750, 2.0315), run 5
// times on u/(‖u‖_F + 1e-7) (on its transpose when rows > cols, so that X·Xᵀ is the smaller
// Gram matrix): X ← a·X + (b·A + c·A·A)·X with A = X·Xᵀ. It does not converge to U·Vᵀ of the SVD
// u = U·S·Vᵀ; the reference says it gives U·S'·Vᵀ with S' roughly uniform in (0.5, 1.5), which
// does not hurt training. The reference runs it in bfloat16; here it runs in T.
//
// The update scale √max(1, rows/cols) is the one of the current reference muon.py; the variant
// 0.2·√max(rows, cols) (Moonshot's, to match AdamW's update RMS so that one lr serves both) is
// not used: the reference gives Muon its own lr (0.02) instead. Here the Muon lr is fixed as a
// multiple of the AdamW lr (muon_lr / adam.lr), so a schedule's set_lr moves both together.
//
// Which parameters go to Muon: the reference's example takes the parameters of the model's
// `blocks` with ndim ≥ 2 and no "embed" in their name; everything else (input embeddings, the
// output layer, biases and gains) goes to AdamW. Here: trainable rank-2 parameters named
// "blocks.…" without "embed". For a DiT that leaves the patch embedding (a conv), the time MLP
// and label table (t_embedder, y_embedder), the final layer, biases and norm gains to AdamW.
//
// Device-generic through ops:: (the iteration is ops::matmul with transposes); the Frobenius
// norm is reduced on the device and read back as one scalar per matrix per step.
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
#include "vediff/ops/gemm.hpp"
#include "vediff/ops/reduce.hpp"
#include "vediff/optim/adamw.hpp"

namespace vediff::optim {

struct muon_config {
    double muon_lr = 0.02;       // the reference's default
    double momentum = 0.95;
    bool nesterov = true;
    int ns_steps = 5;
    double muon_weight_decay = 0.0;
    adamw_config adam;           // the AdamW of every non-Muon parameter
};

/// The quintic Newton–Schulz coefficients of the reference.
inline constexpr double newton_schulz_a = 3.4445, newton_schulz_b = -4.7750, newton_schulz_c = 2.0315;

/// NS5(g) for a rank-2 g: approximately U·Vᵀ of g's SVD (singular values mapped into ~(0.5, 1.5)).
template <class T, device D>
tensor<T, D> newton_schulz_orthogonalize(const tensor_view<T, D>& g, int steps = 5) {
    if (g.rank() != 2 || g.empty())
        throw shape_error(fmt::format("newton_schulz_orthogonalize: need a non-empty matrix, got shape {}", g.shape()));
    if (steps < 0) throw std::invalid_argument(fmt::format("newton_schulz_orthogonalize: {} steps", steps));
    const double frobenius = std::sqrt(static_cast<double>(ops::sum(ops::mul(g, g).view()).to_vector()[0]));
    if (!std::isfinite(frobenius)) throw numeric_error(fmt::format("newton_schulz_orthogonalize: the matrix {} is not finite", g.shape()));
    auto x = ops::scale(g, T(1.0 / (frobenius + 1e-7)));
    // Tall (rows > cols): iterate on Xᵀ without forming it. With Y = Xᵀ, A = Y·Yᵀ = Xᵀ·X and the
    // update Y ← a·Y + B·Y is, transposed, X ← a·X + X·B (B is symmetric).
    const bool tall = g.dim(0) > g.dim(1);
    for (int i = 0; i < steps; ++i) {
        const auto gram = tall ? ops::matmul(x.view(), x.view(), true, false) : ops::matmul(x.view(), x.view(), false, true);
        auto poly = ops::scale(gram.view(), T(newton_schulz_b));
        ops::axpy(poly.view(), ops::matmul(gram.view(), gram.view()).view(), T(newton_schulz_c));
        const auto product = tall ? ops::matmul(x.view(), poly.view()) : ops::matmul(poly.view(), x.view());
        ops::axpby(x.view(), product.view(), T(1), T(newton_schulz_a));
    }
    return x;
}

/// Muon over the hidden weight matrices of a model and AdamW over the rest. Like adamw, it keeps
/// pointers to the parameters (the model must outlive it and stay put), keeps state by parameter
/// name and offers for_each_state / step_count for checkpoints: "<name>.momentum_buffer" for a
/// Muon parameter (torch's state key), "<name>.exp_avg" and "<name>.exp_avg_sq" for the others.
template <class T = float, device D = cpu>
class muon {
public:
    using value_type = T;
    using device_type = D;
    using parameter_type = nn::parameter<T, D>;

    struct muon_slot {
        std::string name;
        parameter_type* param = nullptr;
        tensor<T, D> momentum_buffer;
    };
    struct adam_slot {
        std::string name;
        parameter_type* param = nullptr;
        tensor<T, D> exp_avg, exp_avg_sq;
    };

    /// The reference's split: a trainable rank-2 parameter of the blocks, not an embedding.
    static bool is_hidden_matrix(std::string_view name, const tensor_shape& shape) {
        return shape.rank() == 2 && name.starts_with("blocks.") && name.find("embed") == std::string_view::npos;
    }

    template <class Model>
        requires std::same_as<typename Model::value_type, T> && std::same_as<typename Model::device_type, D>
    explicit muon(Model& model, muon_config config = {}) : config_(config) {
        validate(config_);
        muon_lr_ratio_ = config_.muon_lr / config_.adam.lr;
        std::vector<std::string> names;
        for (auto& [name, p] : nn::named_parameters(model)) {
            if (!p->trainable) continue;
            for (const auto& n : names)
                if (n == name) throw std::invalid_argument(fmt::format("muon: two parameters are named '{}'; state is kept by name", name));
            names.push_back(name);
            if (is_hidden_matrix(name, p->shape()))
                muon_slots_.push_back({name, p, tensor<T, D>::zeros(p->shape())});
            else
                adam_slots_.push_back({name, p, tensor<T, D>::zeros(p->shape()), tensor<T, D>::zeros(p->shape())});
        }
    }

    void step() {
        ++step_count_;
        const adamw_scalars s = adamw_step_scalars(config_.adam, step_count_);
        // The AdamW part in one multi-tensor update (one launch on cuda).
        std::vector<adamw_tensor<T>> adam_tensors;
        adam_tensors.reserve(adam_slots_.size());
        for (auto& sl : adam_slots_) {
            require_same_shape("muon (AdamW part): parameter and gradient", sl.param->value, sl.param->grad);
            adam_tensors.push_back({sl.param->value.data(), sl.exp_avg.data(), sl.exp_avg_sq.data(), sl.param->grad.data(),
                                    sl.param->value.numel()});
        }
        optim_kernels<D>::adamw_update_many(std::span<const adamw_tensor<T>>(adam_tensors), s);
        const double lr = muon_lr(), beta = config_.momentum;
        for (auto& sl : muon_slots_) {
            auto& p = *sl.param;
            require_same_shape("muon: parameter and gradient", p.value, p.grad);
            ops::axpby(sl.momentum_buffer.view(), p.grad.view(), T(1 - beta), T(beta));
            tensor<T, D> direction;
            if (config_.nesterov) {
                direction = ops::scale(p.grad.view(), T(1 - beta));
                ops::axpy(direction.view(), sl.momentum_buffer.view(), T(beta));
            } else {
                direction = tensor<T, D>::copy_of(sl.momentum_buffer.view());
            }
            const auto update = newton_schulz_orthogonalize(direction.view(), config_.ns_steps);
            const double shape_scale = std::sqrt(std::max(1.0, double(p.value.dim(0)) / double(p.value.dim(1))));
            ops::axpby(p.value.view(), update.view(), T(-lr * shape_scale), T(1.0 - lr * config_.muon_weight_decay));
        }
    }

    void zero_grad() {
        for (auto& sl : muon_slots_) ops::fill(sl.param->grad.view(), T(0));
        for (auto& sl : adam_slots_) ops::fill(sl.param->grad.view(), T(0));
    }

    /// Sets the AdamW lr; the Muon lr follows at its configured ratio (muon_lr / adam.lr).
    void set_lr(double lr) {
        if (!(lr >= 0) || !std::isfinite(lr)) throw std::invalid_argument(fmt::format("muon: learning rate {} is not a finite value >= 0", lr));
        config_.adam.lr = lr;
    }
    double lr() const { return config_.adam.lr; }
    double muon_lr() const { return config_.adam.lr * muon_lr_ratio_; }
    const muon_config& config() const { return config_; }

    std::int64_t step_count() const { return step_count_; }
    void set_step_count(std::int64_t steps) {
        if (steps < 0) throw std::invalid_argument(fmt::format("muon: step count {} is negative", steps));
        step_count_ = steps;
    }

    std::span<muon_slot> muon_slots() { return muon_slots_; }
    std::span<adam_slot> adam_slots() { return adam_slots_; }

    /// Visits (name, tensor&) for every state tensor, Muon's first.
    template <class F>
    void for_each_state(F&& f) {
        for (auto& sl : muon_slots_) f(sl.name + ".momentum_buffer", sl.momentum_buffer);
        for (auto& sl : adam_slots_) {
            f(sl.name + ".exp_avg", sl.exp_avg);
            f(sl.name + ".exp_avg_sq", sl.exp_avg_sq);
        }
    }

private:
    static void validate(const muon_config& c) {
        auto bad = [](const char* what, double v) { return std::invalid_argument(fmt::format("muon: invalid {} {}", what, v)); };
        if (!(c.muon_lr >= 0) || !std::isfinite(c.muon_lr)) throw bad("muon_lr", c.muon_lr);
        if (!(c.momentum >= 0 && c.momentum < 1)) throw bad("momentum", c.momentum);
        if (c.ns_steps < 1) throw bad("ns_steps", c.ns_steps);
        if (!(c.muon_weight_decay >= 0)) throw bad("muon_weight_decay", c.muon_weight_decay);
        // The Muon lr is kept as a ratio to the AdamW lr, which therefore must be > 0.
        if (!(c.adam.lr > 0) || !std::isfinite(c.adam.lr)) throw bad("AdamW learning rate (must be > 0)", c.adam.lr);
        if (!(c.adam.beta1 >= 0 && c.adam.beta1 < 1)) throw bad("beta1", c.adam.beta1);
        if (!(c.adam.beta2 >= 0 && c.adam.beta2 < 1)) throw bad("beta2", c.adam.beta2);
        if (!(c.adam.eps >= 0)) throw bad("eps", c.adam.eps);
        if (!(c.adam.weight_decay >= 0)) throw bad("weight_decay", c.adam.weight_decay);
    }

    muon_config config_;
    double muon_lr_ratio_ = 1;
    std::vector<muon_slot> muon_slots_;
    std::vector<adam_slot> adam_slots_;
    std::int64_t step_count_ = 0;
};

template <class Model>
muon(Model&, muon_config = {}) -> muon<typename Model::value_type, typename Model::device_type>;

} // namespace vediff::optim
