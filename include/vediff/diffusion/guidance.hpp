#pragma once
// Classifier-free guidance (Ho & Salimans, 2022) of a class-conditional velocity model
//
//     v = v_u + s·(v_c − v_u),   v_c = v(x, t, y),  v_u = v(x, t, null),
//
// evaluated as one model call on the doubled batch [x; x] with labels [y; null], as DiT, SiT and
// LightningDiT do. Options:
//   - an interval [interval_start, interval_end] of t outside which guidance is off and the
//     velocity is the plain conditional one (LightningDiT: start 0.125, i.e. conditional only
//     for t < 0.125, near the noise end, since t = 0 is noise here);
//   - first_channels: 0 guides every channel (correct, the default); k guides only channels
//     [0, k) and passes the conditional prediction through for the rest. k = 3 reproduces the
//     forward_with_cfg quirk of the reference code (kept there for reproducibility of published
//     numbers). The reference integrates the doubled batch itself, so its unconditional half
//     drifts apart from the conditional one in the unguided channels; here both halves are
//     always evaluated at the same x, which reproduces the per-step formula but not that drift.
//
// The guided value is computed as v_c + (s − 1)·(v_c − v_u), algebraically the formula above, so
// that a factor s = 1 returns v_c bit for bit. When guidance is off for the whole batch (s = 1,
// or every t outside the interval) only the conditional batch is evaluated: half the cost, and
// exactly the unguided call.
#include <cstdint>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/elementwise.hpp"

namespace vediff::diffusion {

struct guidance_config {
    double scale = 1.0;           // s; 1 is the conditional model
    double interval_start = 0.0;  // guidance acts for interval_start <= t <= interval_end
    double interval_end = 1.0;
    std::int64_t first_channels = 0;  // 0: all channels; k: only channels [0, k) (reference quirk: 3)

    bool active_at(double t) const { return scale != 1.0 && t >= interval_start && t <= interval_end; }
};

/// The guided velocity of a class-conditional model. `model(x, t, y)` takes x (N, C, ...),
/// t (N) and int32 labels y (N) as views and returns a tensor shaped like x; it is called once,
/// with N = 2B (or N = B when guidance is off for the whole batch). Labels live on the device;
/// the B times and labels are assembled on the host.
template <class T, device D, class Model>
tensor<T, D> guided_velocity(Model&& model, const tensor_view<T, D>& x, const tensor_view<T, D>& t,
                             const tensor_view<std::int32_t, D>& y, std::int32_t null_label, const guidance_config& g) {
    if (x.rank() < 2) throw shape_error(fmt::format("guided_velocity: x must be (B, C, ...), got shape {}", x.shape()));
    const std::int64_t B = x.dim(0), C = x.dim(1);
    if (t.rank() != 1 || t.dim(0) != B || y.rank() != 1 || y.dim(0) != B)
        throw shape_error(fmt::format("guided_velocity: times {} and labels {} must be (B) for x {}", t.shape(), y.shape(), x.shape()));
    if (g.first_channels < 0 || g.first_channels > C)
        throw std::invalid_argument(fmt::format("guided_velocity: first_channels {} is outside [0, {}] for x {}",
                                                g.first_channels, C, x.shape()));
    const auto times = t.to_vector();
    std::vector<T> factor(static_cast<std::size_t>(B * C), T(0));  // (B, C): s − 1 where guided, else 0
    const std::int64_t guided_channels = g.first_channels == 0 ? C : g.first_channels;
    bool any = false;
    for (std::int64_t b = 0; b < B; ++b) {
        if (!g.active_at(double(times[static_cast<std::size_t>(b)]))) continue;
        any = true;
        for (std::int64_t c = 0; c < guided_channels; ++c) factor[static_cast<std::size_t>(b * C + c)] = T(g.scale - 1.0);
    }
    auto check = [&](const tensor<T, D>& out, const tensor_shape& expected) {
        if (!(out.shape() == expected))
            throw shape_error(fmt::format("guided_velocity: the model returned shape {} for input {}", out.shape(), expected));
    };
    if (!any) {
        tensor<T, D> v = model(x, t, y);
        check(v, x.shape());
        return v;
    }

    auto labels = y.to_vector();
    labels.resize(static_cast<std::size_t>(2 * B), null_label);
    std::vector<T> times2(times);
    times2.insert(times2.end(), times.begin(), times.end());
    const auto x2 = ops::concat<T, D>({x, x}, 0);
    const auto t2 = tensor<T, D>::from_host(tensor_shape{2 * B}, std::span<const T>(times2));
    const auto y2 = tensor<std::int32_t, D>::from_host(tensor_shape{2 * B}, std::span<const std::int32_t>(labels));
    tensor<T, D> both = model(x2.view(), t2.view(), y2.view());
    check(both, x2.shape());
    const auto v_c = both.slice(0, B), v_u = both.slice(B, 2 * B);

    tensor_shape factor_shape{B, C};
    for (int a = 2; a < x.rank(); ++a) factor_shape.push_back(1);
    const auto f = tensor<T, D>::from_host(factor_shape, std::span<const T>(factor));
    auto v = ops::mul_broadcast(ops::sub(v_c, v_u).view(), f.view());  // (s − 1)·(v_c − v_u)
    ops::axpy(v.view(), v_c, T(1));
    return v;
}

/// A guided model as a sampler's velocity function v(x, t) for fixed labels (samplers.hpp):
/// holds the model callable (pass std::ref(model) to keep a stateful model by reference), the
/// B labels on the host, the null label and the guidance options.
template <class T, device D, class Model>
struct guided_sampler_velocity {
    Model model;
    std::vector<std::int32_t> labels;
    std::int32_t null_label = 0;
    guidance_config guidance;

    tensor<T, D> operator()(const tensor_view<T, D>& x, const tensor_view<T, D>& t) {
        const auto y = tensor<std::int32_t, D>::from_host(tensor_shape{static_cast<std::int64_t>(labels.size())},
                                                           std::span<const std::int32_t>(labels));
        return guided_velocity(model, x, t, y.view(), null_label, guidance);
    }
};

/// guided_sampler_velocity<T, D>{model, labels, null_label, g} with the model type deduced.
template <class T, device D = cpu, class Model>
guided_sampler_velocity<T, D, std::decay_t<Model>> make_guided_velocity(Model&& model, std::vector<std::int32_t> labels,
                                                                        std::int32_t null_label, const guidance_config& g) {
    return {std::forward<Model>(model), std::move(labels), null_label, g};
}

} // namespace vediff::diffusion
