#pragma once
// How closely a tokenizer's posterior follows the Variance Expansion equilibrium (the paper's
// Eq. 14): per latent element, σ = (λ1/T)^¼, T the decoder's sensitivity to that element
// (metrics/decoder_sensitivity.hpp) and λ1 the VE weight; derived in loss/variance_expansion.hpp
// for an l2 reconstruction under per_image_sum (under element_mean pass λ1·P/n, P pixels and n
// latent elements per image). In logarithms the prediction is linear,
//     log σ = ¼·log(λ1/T),   with log σ = logvar/2 from the encoder,
// so the check is a straight-line fit of the measured log σ on the predicted one over every latent
// element: the Pearson correlation, and the least-squares slope (1) and intercept (0) at exact
// equilibrium. λ1 only moves the intercept. Elements with T ≤ 0 (a latent the decoder ignores has
// no finite prediction) or non-finite values are left out and counted.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/tensor.hpp"
#include "vediff/io/atomic_file.hpp"

namespace vediff::metrics {

struct equilibrium_fit {
    double correlation = 0;   // Pearson r of measured log σ and predicted ¼·log(λ1/T); NaN if either is constant
    double slope = 0;         // least-squares fit  log σ ≈ intercept + slope·¼·log(λ1/T); NaN if the prediction is constant
    double intercept = 0;
    std::int64_t count = 0;   // elements in the fit
    std::int64_t skipped = 0; // elements left out (T ≤ 0 or a non-finite value)
};

/// The fit over every element of logvar and sensitivity (same shape, e.g. (N, C, h, w)).
template <class T, device D>
equilibrium_fit sensitivity_equilibrium(const tensor_view<T, D>& logvar, const tensor_view<T, D>& sensitivity, double lambda1) {
    require_same_shape("sensitivity_equilibrium", logvar, sensitivity);
    if (!(lambda1 > 0 && std::isfinite(lambda1)))
        throw std::invalid_argument(fmt::format("sensitivity_equilibrium: λ1 = {} must be positive and finite", lambda1));
    const auto lv = logvar.to_vector(), t = sensitivity.to_vector();
    std::vector<double> predicted, measured;
    predicted.reserve(lv.size());
    measured.reserve(lv.size());
    equilibrium_fit fit;
    for (std::size_t i = 0; i < lv.size(); ++i) {
        const double x = 0.25 * std::log(lambda1 / double(t[i])), y = 0.5 * double(lv[i]);
        if (!(t[i] > 0) || !std::isfinite(x) || !std::isfinite(y)) {
            ++fit.skipped;
            continue;
        }
        predicted.push_back(x);
        measured.push_back(y);
    }
    fit.count = static_cast<std::int64_t>(predicted.size());
    if (fit.count < 2)
        throw std::invalid_argument(fmt::format("sensitivity_equilibrium: {} usable element(s) of {} (shape {}); a fit needs 2", fit.count,
                                                lv.size(), logvar.shape()));
    // Two passes: the means first, then centered sums (no cancellation in Σx² − n·x̄²).
    double mean_x = 0, mean_y = 0;
    for (std::size_t i = 0; i < predicted.size(); ++i) {
        mean_x += predicted[i];
        mean_y += measured[i];
    }
    mean_x /= double(fit.count);
    mean_y /= double(fit.count);
    double sxx = 0, syy = 0, sxy = 0;
    for (std::size_t i = 0; i < predicted.size(); ++i) {
        const double dx = predicted[i] - mean_x, dy = measured[i] - mean_y;
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    const double nan = std::numeric_limits<double>::quiet_NaN();
    fit.correlation = sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : nan;
    fit.slope = sxx > 0 ? sxy / sxx : nan;
    fit.intercept = sxx > 0 ? mean_y - fit.slope * mean_x : nan;
    return fit;
}

/// Writes the (σ², T) pair of every element as CSV, header "sigma2,sensitivity", σ² = exp(logvar):
/// the scatter plot of the equilibrium (a line of slope −½ on log-log axes at equilibrium).
template <class T, device D>
void write_equilibrium_pairs(const std::filesystem::path& path, const tensor_view<T, D>& logvar, const tensor_view<T, D>& sensitivity) {
    require_same_shape("write_equilibrium_pairs", logvar, sensitivity);
    const auto lv = logvar.to_vector(), t = sensitivity.to_vector();
    std::string text = "sigma2,sensitivity\n";
    for (std::size_t i = 0; i < lv.size(); ++i) text += fmt::format("{:.9g},{:.9g}\n", std::exp(double(lv[i])), double(t[i]));
    io::write_file_atomically(path, [&](io::atomic_file& f) { f.write(text); });
}

} // namespace vediff::metrics
