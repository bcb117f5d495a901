#pragma once
// Telling, during backward, that a layer's parameter gradients are final, so that work on them
// (data parallelism's gradient all-reduce, distributed/data_parallel.hpp) can start while the
// rest of backward runs: PyTorch DDP's autograd hooks, without an autograd engine.
//
// A model's backward calls announce_final_gradients(layer) after the last backward that writes
// into the layer's gradients (for a DiT: after the final layer, after each block, after each
// embedder). Without a listener installed on this thread the call is one thread-local load, so
// models announce unconditionally. A listener must treat announcements as hints about *when*,
// never as the only source of *what*: whatever was not announced is still handled at the end.
#include <string>

namespace vediff::nn {

class gradient_listener {
public:
    /// The gradient of this trainable parameter (an nn::parameter's address) is final.
    virtual void gradient_final(const void* parameter) = 0;
    /// Called after the parameters of one announced layer.
    virtual void layer_done() = 0;

protected:
    ~gradient_listener() = default;
};

namespace detail {
inline gradient_listener*& current_gradient_listener() {
    thread_local gradient_listener* listener = nullptr;
    return listener;
}
} // namespace detail

/// The listener installed on this thread, or nullptr.
inline gradient_listener* active_gradient_listener() { return detail::current_gradient_listener(); }

/// Installs `listener` on this thread for the object's lifetime (the previous one is restored).
class scoped_gradient_listener {
public:
    explicit scoped_gradient_listener(gradient_listener* listener) : previous_(detail::current_gradient_listener()) {
        detail::current_gradient_listener() = listener;
    }
    scoped_gradient_listener(const scoped_gradient_listener&) = delete;
    scoped_gradient_listener& operator=(const scoped_gradient_listener&) = delete;
    ~scoped_gradient_listener() { detail::current_gradient_listener() = previous_; }

private:
    gradient_listener* previous_;
};

/// Announces every trainable parameter of `layer` as final to this thread's listener, if any.
template <class Layer>
void announce_final_gradients(Layer& layer) {
    gradient_listener* listener = detail::current_gradient_listener();
    if (!listener) return;
    layer.for_each_parameter([&](const std::string&, auto& p) {
        if (p.trainable) listener->gradient_final(&p);
    }, std::string{});
    listener->layer_done();
}

} // namespace vediff::nn
