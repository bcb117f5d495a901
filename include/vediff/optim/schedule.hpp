#pragma once
// Learning-rate schedules: linear warmup, then a constant rate or a cosine decay to a floor.
// A schedule is a pure function of the step, so a resumed run needs only the step count.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <stdexcept>

#include <fmt/format.h>

namespace vediff::optim {

enum class decay_shape { constant, cosine };

/// lr(step) for step = 0, 1, ... (the rate used by the (step+1)-th optimizer step):
///   warmup, step < W:  peak·(f + (1 − f)·step/W)   (f = warmup_start_factor; as torch's LinearLR)
///   constant, step ≥ W: peak
///   cosine, W ≤ step ≤ T: floor + (peak − floor)·½(1 + cos(π·(step − W)/(T − W))); floor after T.
struct lr_schedule {
    double peak_lr = 1e-4;
    std::int64_t warmup_steps = 0;
    double warmup_start_factor = 0.0;  // the rate at step 0, as a fraction of peak_lr
    decay_shape decay = decay_shape::constant;
    std::int64_t total_steps = 0;  // cosine only: the step at which the rate reaches min_lr
    double min_lr = 0.0;           // cosine only: the floor

    double operator()(std::int64_t step) const {
        validate();
        if (step < 0) throw std::invalid_argument(fmt::format("lr_schedule: negative step {}", step));
        if (step < warmup_steps) {
            const double progress = static_cast<double>(step) / static_cast<double>(warmup_steps);
            return peak_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * progress);
        }
        if (decay == decay_shape::constant) return peak_lr;
        if (step >= total_steps) return min_lr;
        const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
        return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    }

    void validate() const {
        if (!(peak_lr >= 0) || !std::isfinite(peak_lr))
            throw std::invalid_argument(fmt::format("lr_schedule: peak_lr {} is not a finite value >= 0", peak_lr));
        if (warmup_steps < 0) throw std::invalid_argument(fmt::format("lr_schedule: negative warmup_steps {}", warmup_steps));
        if (!(warmup_start_factor >= 0 && warmup_start_factor <= 1))
            throw std::invalid_argument(fmt::format("lr_schedule: warmup_start_factor {} is outside [0, 1]", warmup_start_factor));
        if (decay == decay_shape::cosine) {
            if (total_steps <= warmup_steps)
                throw std::invalid_argument(fmt::format("lr_schedule: cosine decay needs total_steps ({}) > warmup_steps ({})",
                                                        total_steps, warmup_steps));
            if (!(min_lr >= 0 && min_lr <= peak_lr))
                throw std::invalid_argument(fmt::format("lr_schedule: min_lr {} is outside [0, peak_lr = {}]", min_lr, peak_lr));
        }
    }
};

/// Warmup for `warmup` steps from start_factor·lr, then lr.
inline lr_schedule constant_with_warmup(double lr, std::int64_t warmup, double start_factor = 0.0) {
    return {lr, warmup, start_factor, decay_shape::constant, 0, 0.0};
}

/// Warmup for `warmup` steps, then a cosine decay that reaches min_lr at step `total`.
inline lr_schedule cosine_with_warmup(double lr, std::int64_t warmup, std::int64_t total, double min_lr = 0.0,
                                      double start_factor = 0.0) {
    return {lr, warmup, start_factor, decay_shape::cosine, total, min_lr};
}

} // namespace vediff::optim
