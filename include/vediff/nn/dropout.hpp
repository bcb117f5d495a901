#pragma once
// Dropout with inverted scaling, as nn.Dropout: in training each element is zeroed with
// probability p and the survivors are scaled by 1/(1 − p), so the expectation is unchanged;
// in evaluation it is the identity. The mask comes from the layer's own Philox stream, and
// backward multiplies by the same mask. Rewinding `generator.offset` replays a mask exactly.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::nn {

template <class T = float, device D = cpu>
struct dropout : parameterless {
    using value_type = T;
    using device_type = D;

    double p = 0.5;
    philox_generator generator;

    dropout() = default;
    explicit dropout(double probability, std::uint64_t seed = 0, std::uint64_t stream = 0)
        : p(probability), generator{seed, stream, 0} {
        if (!(p >= 0.0 && p <= 1.0))
            throw std::invalid_argument(fmt::format("dropout: probability {} is outside [0, 1]", p));
    }

    void train(bool training) { training_ = training; }
    bool training() const { return training_; }

    tensor<T, D> forward(tensor<T, D>&&) = delete;  // inputs must outlive backward: temporaries rejected

    tensor<T, D> forward(const tensor_view<T, D>& x) {
        (void)record_.keep();
        masked_ = training_ && p > 0.0;
        if (!masked_) return tensor<T, D>::copy_of(x);
        if (!(mask_.shape() == x.shape())) mask_ = tensor<T, D>(x.shape());
        // p = 1 keeps nothing; its survivors' scale would be infinite, so use 0.
        ops::fill_bernoulli(mask_.view(), generator, 1.0 - p, p < 1.0 ? T(1.0 / (1.0 - p)) : T(0));
        return ops::mul(x, mask_.view());
    }

    tensor<T, D> backward(const tensor_view<T, D>& dy) {
        (void)record_.spend("dropout");  // the mask stays: the next forward of this shape reuses its memory
        if (!masked_) return tensor<T, D>::copy_of(dy);
        return ops::mul(dy, mask_.view());
    }

private:
    backward_record record_;
    bool training_ = true;
    bool masked_ = false;  // whether the last forward applied mask_
    tensor<T, D> mask_;    // (shape of x): 0 or 1/(1 − p)
};

} // namespace vediff::nn
