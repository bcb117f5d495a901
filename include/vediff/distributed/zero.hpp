#pragma once
// ZeRO stage 1 (Rajbhandari et al., 2020) for AdamW: the optimizer state is sharded over the
// ranks. The trainable parameters, in registration order, form one flat space of n values;
// rank r owns values [n·r/N, n·(r+1)/N). It keeps AdamW's two moments for those values only
// (1/N of the optimizer's memory), updates only them after the gradient all-reduce, and then
// every rank gathers the updated values of the others (an all-gather of the parameters).
// AdamW's update is elementwise, so the sharded step is the unsharded one bit for bit.
//
// With `enabled` false every rank owns everything: plain AdamW, no all-gather. Data-parallel
// trainers use this one type under MPI either way, so ZeRO-1 is a run-time choice.
//
// Checkpoints stay one file whatever the world size: before a save, gather_state() (collective)
// assembles the full moments, which for_each_state() then shows to the checkpoint writer as
// torch-shaped tensors; after a load into them, adopt_loaded_state() keeps this rank's share.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/distributed/communicator.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/optim/adamw.hpp"

namespace vediff::distributed {

template <class Comm, class T = float, device D = cpu>
class sharded_adamw {
public:
    using value_type = T;
    using device_type = D;

    /// One trainable parameter and the part of it this rank owns.
    struct slot {
        std::string name;
        nn::parameter<T, D>* param = nullptr;
        std::int64_t flat_begin = 0;  // where the parameter starts in the flat space
        std::int64_t own_begin = 0;   // owned values [own_begin, own_end) of the parameter (flattened)
        std::int64_t own_end = 0;
        tensor<T, D> exp_avg, exp_avg_sq;  // (own_end − own_begin), empty when nothing is owned
    };

    template <class Model>
    sharded_adamw(Model& model, optim::adamw_config config, Comm& comm, bool enabled)
        : config_(config), comm_(comm), enabled_(enabled && comm.size() > 1) {
        optim::validate_adamw_config(config);
        for (auto& [name, p] : nn::named_parameters(model)) {
            if (!p->trainable) continue;
            for (const auto& other : slots_)
                if (other.name == name)
                    throw std::invalid_argument(fmt::format("sharded_adamw: two parameters are named '{}'; moments are kept by name", name));
            slots_.push_back({name, p, total_, 0, 0, {}, {}});
            total_ += p->value.numel();
        }
        // MPI counts and displacements are ints.
        if (enabled_ && total_ > std::numeric_limits<int>::max())
            throw std::invalid_argument(fmt::format("sharded_adamw: {} trainable values exceed what one MPI all-gather addresses", total_));
        const int ranks = enabled_ ? comm.size() : 1, me = enabled_ ? comm.rank() : 0;
        for (int r = 0; r <= ranks; ++r) bounds_.push_back(total_ * r / ranks);
        own_begin_ = bounds_[static_cast<std::size_t>(me)];
        own_end_ = bounds_[static_cast<std::size_t>(me) + 1];
        for (auto& s : slots_) {
            const std::int64_t n = s.param->value.numel();
            s.own_begin = std::clamp(own_begin_ - s.flat_begin, std::int64_t{0}, n);
            s.own_end = std::clamp(own_end_ - s.flat_begin, std::int64_t{0}, n);
            const std::int64_t owned = s.own_end - s.own_begin;
            if (owned > 0) {
                s.exp_avg = tensor<T, D>::zeros({owned});
                s.exp_avg_sq = tensor<T, D>::zeros({owned});
            }
        }
    }

    bool enabled() const { return enabled_; }
    /// Values whose moments this rank keeps (all of them when not enabled).
    std::int64_t owned_values() const { return own_end_ - own_begin_; }
    std::int64_t total_values() const { return total_; }

    void step() {
        ++step_count_;
        const adamw_scalars s = optim::adamw_step_scalars(config_, step_count_);
        // This rank's slice of every parameter, in one multi-tensor update (one launch on cuda).
        std::vector<adamw_tensor<T>> owned;
        owned.reserve(slots_.size());
        for (auto& sl : slots_) {
            if (sl.own_end <= sl.own_begin) continue;
            owned.push_back({sl.param->value.data() + sl.own_begin, sl.exp_avg.data(), sl.exp_avg_sq.data(),
                             sl.param->grad.data() + sl.own_begin, sl.own_end - sl.own_begin});
        }
        optim_kernels<D>::adamw_update_many(std::span<const adamw_tensor<T>>(owned), s);
        if (enabled_) gather_flat([](slot& sl) { return sl.param->value.data(); }, fmt::format("the parameters after step {}", step_count_));
    }

    void zero_grad() {
        for (auto& sl : slots_) ops::fill(sl.param->grad.view(), T(0));
    }
    void set_lr(double lr) {
        if (!(lr >= 0) || !std::isfinite(lr)) throw std::invalid_argument(fmt::format("adamw: learning rate {} is not a finite value >= 0", lr));
        config_.lr = lr;
    }
    double lr() const { return config_.lr; }
    const optim::adamw_config& config() const { return config_; }
    std::int64_t step_count() const { return step_count_; }
    void set_step_count(std::int64_t steps) {
        if (steps < 0) throw std::invalid_argument(fmt::format("adamw: step count {} is negative", steps));
        step_count_ = steps;
    }

    /// Collective: assembles every parameter's full moments on every rank (for a checkpoint).
    void gather_state() {
        allocate_full_state();
        if (!enabled_) {
            for (auto& sl : slots_) copy_own(sl, full_.at(sl.name), /*to_full=*/true);
            return;
        }
        for (int which = 0; which < 2; ++which) {
            for (auto& sl : slots_) copy_own(sl, full_.at(sl.name), true, which);
            gather_flat([&](slot& sl) { return (which == 0 ? full_.at(sl.name).first : full_.at(sl.name).second).data(); },
                        which == 0 ? "the first moments" : "the second moments");
        }
    }

    /// Visits (name, tensor&) for the full moments, under the names AdamW's checkpoints use. They
    /// exist between gather_state() (or a load) and release_full_state() / adopt_loaded_state().
    template <class F>
    void for_each_state(F&& f) {
        allocate_full_state();
        for (auto& sl : slots_) {
            auto& [m, v] = full_.at(sl.name);
            f(sl.name + ".exp_avg", m);
            f(sl.name + ".exp_avg_sq", v);
        }
    }

    /// After a checkpoint was read into for_each_state's tensors: keeps this rank's share.
    void adopt_loaded_state() {
        for (auto& sl : slots_) {
            auto& full = full_.at(sl.name);
            copy_own(sl, full, /*to_full=*/false, 0);
            copy_own(sl, full, false, 1);
        }
        release_full_state();
    }
    void release_full_state() { full_.clear(); }

private:
    using full_moments = std::pair<tensor<T, D>, tensor<T, D>>;

    void allocate_full_state() {
        if (!full_.empty()) return;
        for (auto& sl : slots_) full_.emplace(sl.name, full_moments{tensor<T, D>::zeros(sl.param->shape()), tensor<T, D>::zeros(sl.param->shape())});
    }

    // Copies this rank's moments (which: 0 first, 1 second; both when which < 0) to or from the
    // full tensors.
    void copy_own(slot& sl, full_moments& full, bool to_full, int which = -1) {
        const std::int64_t owned = sl.own_end - sl.own_begin;
        if (owned <= 0) return;
        for (int w = 0; w < 2; ++w) {
            if (which >= 0 && w != which) continue;
            T* full_data = (w == 0 ? full.first : full.second).data() + sl.own_begin;
            T* own_data = (w == 0 ? sl.exp_avg : sl.exp_avg_sq).data();
            const auto bytes = static_cast<std::size_t>(owned) * sizeof(T);
            if (to_full) memory<D>::copy(full_data, own_data, bytes);
            else memory<D>::copy(own_data, full_data, bytes);
        }
    }

    // Every rank's owned values of the per-parameter arrays base(slot) (parameter-shaped), on
    // every rank: packed into one flat host buffer, all-gathered, unpacked.
    template <class Base>
    void gather_flat(Base&& base, const std::string& what) {
        flat_.resize(static_cast<std::size_t>(total_));
        for (auto& sl : slots_)
            if (sl.own_end > sl.own_begin)
                memory<D>::copy_to_host(flat_.data() + sl.flat_begin + sl.own_begin, base(sl) + sl.own_begin,
                                        static_cast<std::size_t>(sl.own_end - sl.own_begin) * sizeof(T));
        std::vector<int> counts, displacements;
        for (std::size_t r = 0; r + 1 < bounds_.size(); ++r) {
            counts.push_back(static_cast<int>(bounds_[r + 1] - bounds_[r]));
            displacements.push_back(static_cast<int>(bounds_[r]));
        }
        comm_.all_gather(flat_.data(), counts, displacements, what);
        for (auto& sl : slots_)
            memory<D>::copy_from_host(base(sl), flat_.data() + sl.flat_begin, static_cast<std::size_t>(sl.param->value.numel()) * sizeof(T));
    }

    optim::adamw_config config_;
    Comm& comm_;
    bool enabled_;
    std::vector<slot> slots_;
    std::int64_t total_ = 0, own_begin_ = 0, own_end_ = 0;
    std::vector<std::int64_t> bounds_;  // rank r owns [bounds_[r], bounds_[r + 1])
    std::int64_t step_count_ = 0;
    std::map<std::string, full_moments> full_;
    std::vector<T> flat_;  // host staging of the all-gathers
};

/// A sharded optimizer's collective steps around checkpoints; no-ops for the others (AdamW, Muon).
template <class Optimizer>
void gather_optimizer_state(Optimizer& opt) {
    if constexpr (requires { opt.gather_state(); }) opt.gather_state();
}
template <class Optimizer>
void release_optimizer_state(Optimizer& opt) {
    if constexpr (requires { opt.release_full_state(); }) opt.release_full_state();
}
template <class Optimizer>
void adopt_optimizer_state(Optimizer& opt) {
    if constexpr (requires { opt.adopt_loaded_state(); }) opt.adopt_loaded_state();
}

} // namespace vediff::distributed
