#pragma once
// The random numbers of a sampling run, drawn per sample: sample i's initial noise x0 and its
// noise at every noisy SDE step come from blocks reserved for sample i alone
// (metrics::per_sample_draws: draw 0 the initial noise, draw 1 + k the noise of step k). A batch's
// fill would take its numbers from where one generator stands, so sample i would change with the
// batch size (and with Philox's 4-word blocks split across samples); here it does not.
//   diffusion::sampling_noise noise(gen, n, {C, H, W}, cfg);
//   for each batch [first, last):  x1 = sample(v, noise.initial<T, D>(first, last).view(), cfg, noise.steps<T, D>(first));
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/core/shape.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/diffusion/samplers.hpp"
#include "vediff/metrics/per_sample_draws.hpp"
#include "vediff/ops/random.hpp"

namespace vediff::diffusion {

class sampling_noise {
public:
    /// Reserves (and advances gen past) the draws of `samples` samples of sample_shape for cfg's sampler.
    sampling_noise(philox_generator& gen, std::int64_t samples, const tensor_shape& sample_shape, const sampler_config& cfg)
        : shape_(sample_shape), draws_(gen, samples, sample_shape.numel(), 1 + std::max(noisy_steps(cfg), 0)) {}

    /// x0 of samples [first, last): (last − first, sample_shape...), N(0, I).
    template <class T, device D>
    tensor<T, D> initial(std::int64_t first, std::int64_t last) const {
        if (last <= first) throw std::invalid_argument(fmt::format("sampling_noise: samples [{}, {}) are empty", first, last));
        std::vector<std::int64_t> dims{last - first};
        for (int d = 0; d < shape_.rank(); ++d) dims.push_back(shape_[d]);
        auto x0 = tensor<T, D>(tensor_shape(dims.begin(), dims.end()));
        for (std::int64_t i = first; i < last; ++i) {
            auto g = draws_(i, 0);
            ops::fill_normal(x0[i - first], g);
        }
        return x0;
    }

    /// The step-noise source (samplers.hpp) of the batch whose first sample is `first`.
    template <class T, device D>
    auto steps(std::int64_t first) const {
        return [this, first](const tensor_view<T, D>& out, int step) {
            for (std::int64_t b = 0; b < out.dim(0); ++b) {
                auto g = draws_(first + b, 1 + step);
                ops::fill_normal(out[b], g);
            }
        };
    }

private:
    tensor_shape shape_;
    metrics::per_sample_draws draws_;
};

} // namespace vediff::diffusion
