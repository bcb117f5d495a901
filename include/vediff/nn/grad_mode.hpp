#pragma once
// Whether forward passes keep what their backward needs. On by default; an nn::no_grad object
// turns it off on the current thread for its lifetime (torch.no_grad's role). Under it a layer's
// forward keeps no inputs, activations or attention probabilities, so every intermediate tensor
// is released as soon as the next layer has read it and the block cache hands the same few
// blocks around: sampling a DiT needs a few activations' worth of memory instead of all of them.
//
// Each layer that keeps state for its backward holds an nn::backward_record: forward asks it
// whether to keep (`record_.keep()`), backward first calls `record_.require("layer")`, which
// throws std::logic_error when the last forward kept nothing (or there was none): a backward
// then fails loudly instead of reading released memory through a stale view.
//
//   { nn::no_grad scope; auto v = model.forward(x, t, y); }   // any layer or model
//   dit.train(false);                                         // a DiT in evaluation mode does it itself
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

namespace vediff::nn {

namespace detail {
inline bool& grad_flag() {
    thread_local bool enabled = true;  // layers run on the calling thread; kernels' workers never read it
    return enabled;
}
} // namespace detail

/// Whether forward passes on this thread keep what backward needs.
inline bool grad_enabled() { return detail::grad_flag(); }

/// While it lives, forward passes on this thread keep nothing for backward. Scopes nest.
class no_grad {
public:
    no_grad() : previous_(detail::grad_flag()) { detail::grad_flag() = false; }
    ~no_grad() { detail::grad_flag() = previous_; }
    no_grad(const no_grad&) = delete;
    no_grad& operator=(const no_grad&) = delete;

private:
    bool previous_;
};

/// Whether a layer's last forward kept its state for backward.
class backward_record {
public:
    /// At the start of forward: true when this forward should keep what backward needs.
    bool keep() {
        kept_ = grad_enabled();
        return kept_;
    }
    bool kept() const { return kept_; }
    /// At the start of backward: throws std::logic_error naming the layer unless the last forward kept its state.
    void require(std::string_view layer) const {
        if (!kept_)
            throw std::logic_error(fmt::format("{}: backward needs a forward run with gradients enabled; the last forward kept "
                                               "nothing for it (it ran under nn::no_grad or in a model's inference mode, "
                                               "or there was none)",
                                               layer));
    }

private:
    bool kept_ = false;
};

} // namespace vediff::nn
