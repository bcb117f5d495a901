#pragma once
// Whether forward passes keep what their backward needs. On by default; an nn::no_grad object
// turns it off on the current thread for its lifetime (torch.no_grad's role). Under it a layer's
// forward keeps no inputs, activations or attention probabilities, so every intermediate tensor
// is released as soon as the next layer has read it and the block cache hands the same few
// blocks around: sampling a DiT needs a few activations' worth of memory instead of all of them.
//
// Each layer that keeps state for its backward holds an nn::backward_record: forward asks it
// whether to keep (`record_.keep()`), backward first calls `record_.spend("layer")`, which
// throws std::logic_error when the last forward kept nothing (or there was none), and marks what
// it kept as spent: a backward then fails loudly instead of reading released memory through a
// stale view.
//
// Backward releases what its forward kept as it passes, as PyTorch's autograd frees each saved
// tensor: a layer drops its saved state once its backward has run, and a container (sequential,
// the models) releases each activation it owns once both the layer that produced it and the one
// that read it have run backward. So the gradients of a training step's backward reuse the
// memory of the activations it has passed, and nothing of a step outlives it. A second backward
// of the same forward then throws, naming the layer. Where one forward serves several backward
// passes (vector–Jacobian products with several probes, metrics/decoder_sensitivity.hpp), an
// nn::retain_graph object keeps everything while it lives (PyTorch's `retain_graph=True`).
//
//   { nn::no_grad scope; auto v = model.forward(x, t, y); }   // any layer or model
//   dit.train(false);                                         // a DiT in evaluation mode does it itself
//   { nn::retain_graph keep; auto u1 = m.backward(v1); auto u2 = m.backward(v2); }
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

namespace vediff::nn {

namespace detail {
inline bool& grad_flag() {
    thread_local bool enabled = true;  // layers run on the calling thread; kernels' workers never read it
    return enabled;
}
inline bool& retain_flag() {
    thread_local bool retain = false;
    return retain;
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

/// While it lives, backward passes on this thread keep what their forwards saved, so that one
/// forward serves several backward passes. Scopes nest.
class retain_graph {
public:
    retain_graph() : previous_(detail::retain_flag()) { detail::retain_flag() = true; }
    ~retain_graph() { detail::retain_flag() = previous_; }
    retain_graph(const retain_graph&) = delete;
    retain_graph& operator=(const retain_graph&) = delete;

private:
    bool previous_;
};

/// Whether a backward on this thread releases what its forward saved (no nn::retain_graph alive).
inline bool backward_releases() { return !detail::retain_flag(); }

/// Whether a layer's last forward kept its state for backward, and whether a backward has spent it.
class backward_record {
public:
    /// At the start of forward: true when this forward should keep what backward needs.
    bool keep() {
        state_ = grad_enabled() ? state::kept : state::none;
        return state_ == state::kept;
    }
    bool kept() const { return state_ == state::kept; }
    /// Throws std::logic_error naming the layer unless the last forward's state is there (for
    /// what reads it without spending it, e.g. conv2d::weight_gradient).
    void require(std::string_view layer) const {
        if (state_ == state::spent)
            throw std::logic_error(fmt::format("{}: backward already ran for the last forward and released what that forward "
                                               "kept; a second backward needs a new forward, or nn::retain_graph around the "
                                               "backward passes that share one",
                                               layer));
        if (state_ != state::kept)
            throw std::logic_error(fmt::format("{}: backward needs a forward run with gradients enabled; the last forward kept "
                                               "nothing for it (it ran under nn::no_grad or in a model's inference mode, "
                                               "or there was none)",
                                               layer));
    }
    /// At the start of backward: require(layer), then, unless an nn::retain_graph is alive, marks
    /// the state spent. True when the layer is to release its saved state once its backward is done.
    [[nodiscard]] bool spend(std::string_view layer) {
        require(layer);
        if (!backward_releases()) return false;
        state_ = state::spent;
        return true;
    }

private:
    enum class state { none, kept, spent };
    state state_ = state::none;
};

} // namespace vediff::nn
