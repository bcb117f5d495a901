#pragma once
// Flow matching on the linear path of SiT / LightningDiT (their "Linear" transport):
//
//     x_t = t·x1 + (1 − t)·x0,   x0 ~ N(0, I) the noise, x1 the data,
//
// so **t = 0 is pure noise and t = 1 is data** (DDPM's and EDM's clocks run the other way). The
// model regresses the path's velocity u = dx_t/dt = x1 − x0, the same for every t; a sampler
// (samplers.hpp) integrates the learned velocity from t = 0 to t = 1.
//
// Training times are U(0, 1) or logit-normal, sigmoid(N(m, s²)) (LightningDiT's `use_lognorm`,
// m = 0, s = 1), optionally warped by the time shift t' = s·t/(1 + (s − 1)·t).
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <limits>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/deferred.hpp"
#include "vediff/core/kernels.hpp"
#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/ops/broadcast.hpp"
#include "vediff/ops/elementwise.hpp"
#include "vediff/ops/loss.hpp"
#include "vediff/ops/norm.hpp"
#include "vediff/ops/patchify.hpp"
#include "vediff/ops/random.hpp"
#include "vediff/ops/reduce.hpp"

namespace vediff::diffusion {

/// How training times are drawn.
struct time_sampling {
    enum class distribution { uniform, logit_normal };
    distribution kind = distribution::uniform;
    double logit_mean = 0.0;  // m of sigmoid(N(m, s²)); its median time is sigmoid(m)
    double logit_std = 1.0;   // s

    static constexpr time_sampling uniform() { return {}; }
    static constexpr time_sampling logit_normal(double mean = 0.0, double stddev = 1.0) {
        return {distribution::logit_normal, mean, stddev};
    }
};

struct flow_matching_config {
    time_sampling times = {};
    /// s of the time shift t' = s·t/(1 + (s − 1)·t); 1 leaves times alone. s < 1 moves times
    /// towards the noise end (LightningDiT samples with s = 0.3).
    double time_shift = 1.0;
    /// Adds LightningDiT's direction term 1 − cos(v̂, u) to the MSE (flow_matching_loss).
    bool cosine_term = false;
};

/// The time shift t' = s·t/(1 + (s − 1)·t): fixes 0 and 1, increasing in t for every s > 0.
inline void check_time_shift(double s) {
    if (!(s > 0) || !std::isfinite(s)) throw std::invalid_argument(fmt::format("shift_time: shift {} must be finite and > 0", s));
}
inline double shift_time(double t, double s) {
    check_time_shift(s);
    return shifted_time(t, s);  // core/random.hpp, shared with the device kernels
}

namespace detail {
/// (B, 1, ..., 1) of x's rank: the shape that broadcasts a per-sample scalar over x.
inline tensor_shape per_sample_shape(const tensor_shape& x) {
    tensor_shape s;
    s.push_back(x[0]);
    for (int a = 1; a < x.rank(); ++a) s.push_back(1);
    return s;
}

} // namespace detail

/// B training times in (0, 1), drawn from gen by cfg.times and shifted by cfg.time_shift, on the
/// device (training_time of core/random.hpp maps each draw).
/// Uses ⌈B/4⌉ Philox blocks of gen (one fill_uniform or fill_normal of B elements).
template <class T, device D = cpu>
tensor<T, D> sample_times(std::int64_t batch, philox_generator& gen, const flow_matching_config& cfg = {}) {
    if (batch <= 0) throw std::invalid_argument(fmt::format("sample_times: batch {} must be > 0", batch));
    tensor<T, D> t(tensor_shape{batch});
    const bool logit = cfg.times.kind == time_sampling::distribution::logit_normal;
    if (logit) {
        if (!(cfg.times.logit_std > 0))
            throw std::invalid_argument(fmt::format("sample_times: logit-normal std {} must be > 0", cfg.times.logit_std));
        ops::fill_normal(t.view(), gen, T(cfg.times.logit_mean), T(cfg.times.logit_std));
    } else {
        ops::fill_uniform(t.view(), gen, T(0), T(1));
    }
    if (!logit && cfg.time_shift == 1.0) return t;
    check_time_shift(cfg.time_shift);
    random_kernels<D>::training_times(t.data(), t.numel(), logit, cfg.time_shift);
    return t;
}

/// x_t = t·x1 + (1 − t)·x0 for per-sample times t (B), evaluated as x0 + t·(x1 − x0).
template <class T, device D>
tensor<T, D> interpolate(const tensor_view<T, D>& x1, const tensor_view<T, D>& x0, const tensor_view<T, D>& t) {
    require_same_shape("interpolate (data vs noise)", x1, x0);
    if (x1.rank() < 1 || t.rank() != 1 || t.dim(0) != x1.dim(0))
        throw shape_error(fmt::format("interpolate: times {} must be (B) for data {}", t.shape(), x1.shape()));
    auto u = ops::sub(x1, x0);
    auto x_t = ops::mul_broadcast(u.view(), t.reshape(detail::per_sample_shape(x1.shape())));
    ops::axpy(x_t.view(), x0, T(1));
    return x_t;
}

/// One training example of the linear path.
template <class T, device D>
struct flow_matching_pair {
    tensor<T, D> x_t;     // model input, shape of x1
    tensor<T, D> t;       // (B) times in (0, 1)
    tensor<T, D> target;  // u = x1 − x0, the velocity to regress
    tensor<T, D> noise;   // x0 ~ N(0, I)
};

/// Draws times (first, sample_times) then the noise x0 (second, one fill_normal of x1's size)
/// from gen, and builds x_t and the target velocity.
template <class T, device D>
flow_matching_pair<T, D> make_training_pair(const tensor_view<T, D>& x1, philox_generator& gen,
                                            const flow_matching_config& cfg = {}) {
    if (x1.rank() < 1 || x1.empty()) throw shape_error(fmt::format("make_training_pair: data of shape {} is empty", x1.shape()));
    flow_matching_pair<T, D> p;
    p.t = sample_times<T, D>(x1.dim(0), gen, cfg);
    p.noise = tensor<T, D>(x1.shape());
    ops::fill_normal(p.noise.view(), gen);
    p.x_t = interpolate(x1, p.noise.view(), p.t.view());
    p.target = ops::sub(x1, p.noise.view());
    return p;
}

template <class T, device D>
struct flow_matching_loss_result {
    double value = 0;   // mse + cosine (when on)
    double mse = 0;     // mean of (v̂ − u)² over every element
    double cosine = 0;  // mean over positions of 1 − cos(v̂, u); 0 when the term is off
    tensor<T, D> dv;    // d value / d v̂, shape of v̂
};

/// The same loss with its values still on the device (core/deferred.hpp), read when asked: a
/// training step computes dv and goes on without waiting for them.
template <class T, device D>
struct flow_matching_loss_terms {
    deferred_value value, mse, cosine;
    tensor<T, D> dv;
};

/// The loss of a velocity prediction v̂ against the target u = x1 − x0.
///
/// MSE: the mean of (v̂ − u)² over all elements. SiT and LightningDiT take mean_flat (mean over
/// C, H, W) and then the batch mean; with every sample the same size that is the same number.
///
/// Cosine term (LightningDiT): 1 − cos(v̂, u) with the cosine taken over the channel axis (axis 1)
/// at every (b, h, w) position, averaged over all B·H·W positions. Here the norms are
/// ‖v‖ → √(‖v‖² + C·ε) with ε = 1e-16 (a norm floor near torch's cosine_similarity eps 1e-8), and
/// the gradient is exact for that function. Computed with the device ops: patchify with p = 1
/// makes the channel the last axis, where rms_norm (no weight) gives v/rms(v), and
/// cos = Σ_c (v/rms v)(u/rms u) / C. Needs x of shape (B, C, ...).
template <class T, device D>
flow_matching_loss_terms<T, D> flow_matching_loss_deferred(const tensor_view<T, D>& v_pred, const tensor_view<T, D>& target,
                                                          const flow_matching_config& cfg = {}) {
    require_same_shape("flow_matching_loss (prediction vs target)", v_pred, target);
    if (v_pred.empty()) throw shape_error(fmt::format("flow_matching_loss: prediction of shape {} is empty", v_pred.shape()));
    flow_matching_loss_terms<T, D> r;
    r.dv = tensor<T, D>::zeros(v_pred.shape());
    const double n = double(v_pred.numel());
    r.mse = ops::squared_error_sum_deferred(target, v_pred, r.dv.view(), 1.0 / n).then([n](double sum) { return sum / n; });
    r.value = r.mse;
    if (!cfg.cosine_term) return r;

    if (v_pred.rank() < 2)
        throw shape_error(fmt::format("flow_matching_loss: the cosine term needs (B, C, ...), got shape {}", v_pred.shape()));
    constexpr double eps = 1e-16;
    const std::int64_t B = v_pred.dim(0), C = v_pred.dim(1), S = v_pred.numel() / (B * C);
    const tensor_shape image{B, C, S, 1};
    auto vt = ops::patchify(v_pred.reshape(image), 1);  // (B, S, C)
    auto ut = ops::patchify(target.reshape(image), 1);
    auto ones = tensor<T, D>::full(tensor_shape{C}, T(1));
    auto nv = ops::rms_norm(vt.view(), ones.view(), eps);
    auto nu = ops::rms_norm(ut.view(), ones.view(), eps);
    const double positions = double(B * S);
    auto cos_total = std::make_shared<tensor<T, D>>(ops::sum(ops::mul(nv.y.view(), nu.y.view()).view()));
    const auto read_cosine = [cos_total, C, positions] {
        const double cos_sum = double(cos_total->to_vector()[0]) / double(C);
        return 1.0 - cos_sum / positions;
    };
    if constexpr (D::host_accessible) r.cosine = deferred_value(read_cosine());
    else r.cosine = deferred_value(std::function<double()>(read_cosine));
    r.value = r.value + r.cosine;

    // d(1 − Σ nv·nu/(C·P))/d nv = −nu/(C·P), then back through the rms norm and the transpose.
    auto dnv = ops::scale(nu.y.view(), T(-1.0 / (double(C) * positions)));
    auto dweight_scratch = tensor<T, D>::zeros(tensor_shape{C});
    auto dvt = ops::rms_norm_backward(dnv.view(), vt.view(), nv.rstd.view(), ones.view(), dweight_scratch.view());
    auto dv_cos = ops::unpatchify(dvt.view(), 1, S, 1);
    ops::axpy(r.dv.view(), dv_cos.reshape(v_pred.shape()), T(1));
    return r;
}

/// flow_matching_loss_deferred with its values read now.
template <class T, device D>
flow_matching_loss_result<T, D> flow_matching_loss(const tensor_view<T, D>& v_pred, const tensor_view<T, D>& target,
                                                   const flow_matching_config& cfg = {}) {
    auto terms = flow_matching_loss_deferred(v_pred, target, cfg);
    return {terms.value.get(), terms.mse.get(), terms.cosine.get(), std::move(terms.dv)};
}

} // namespace vediff::diffusion
