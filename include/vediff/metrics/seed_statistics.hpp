#pragma once
// What a metric says across seeds. A row of the experiment trained with one seed is one draw from
// the distribution of outcomes of its configuration; comparing two configurations by one draw each
// mistakes seed noise for an effect. Here: the mean of a metric over seeds with its two-sided
// Student-t interval, the difference of two configurations paired by seed (the same seed drives the
// same data order and initial noise in both, so pairing removes what they share), and the verdict
// read from that interval, never from the point estimate.
#include <cmath>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <boost/math/distributions/students_t.hpp>
#include <fmt/format.h>

namespace vediff::metrics {

/// mean ± half_width: a two-sided confidence interval for the mean of n draws (half_width is NaN
/// for n < 2, where there is no spread to measure).
struct seed_interval {
    double mean = NAN;
    double half_width = NAN;
    std::int64_t n = 0;
    double confidence = 0.95;

    double lower() const { return mean - half_width; }
    double upper() const { return mean + half_width; }
    bool has_spread() const { return n >= 2 && std::isfinite(half_width); }
};

/// The quantile of Student's t distribution with `dof` degrees of freedom at probability p.
inline double student_t_quantile(double p, std::int64_t dof) {
    if (dof < 1) throw std::invalid_argument(fmt::format("student_t_quantile: {} degrees of freedom, need at least 1", dof));
    if (!(p > 0 && p < 1)) throw std::invalid_argument(fmt::format("student_t_quantile: probability {} is outside (0, 1)", p));
    return boost::math::quantile(boost::math::students_t_distribution<double>(double(dof)), p);
}

/// The mean of the values and its t interval at the given confidence (sample standard deviation,
/// n − 1 degrees of freedom). Non-finite values are an error: a failed run must not vanish into a mean.
inline seed_interval mean_interval(std::span<const double> values, double confidence = 0.95) {
    if (!(confidence > 0 && confidence < 1))
        throw std::invalid_argument(fmt::format("mean_interval: confidence {} is outside (0, 1)", confidence));
    seed_interval r{.n = static_cast<std::int64_t>(values.size()), .confidence = confidence};
    if (values.empty()) return r;
    double sum = 0;
    for (double v : values) {
        if (!std::isfinite(v)) throw std::invalid_argument(fmt::format("mean_interval: value {} is not finite", v));
        sum += v;
    }
    r.mean = sum / double(values.size());
    if (values.size() < 2) return r;
    double squares = 0;
    for (double v : values) squares += (v - r.mean) * (v - r.mean);
    const double standard_error = std::sqrt(squares / double(values.size() - 1) / double(values.size()));
    r.half_width = student_t_quantile(0.5 + confidence / 2, r.n - 1) * standard_error;
    return r;
}

/// The interval of mean(a_i − b_i): a and b measured with the same seeds, in the same order.
inline seed_interval paired_difference(std::span<const double> a, std::span<const double> b, double confidence = 0.95) {
    if (a.size() != b.size())
        throw std::invalid_argument(fmt::format("paired_difference: {} values against {}; pairs need the same seeds", a.size(), b.size()));
    std::vector<double> d(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
    return mean_interval(d, confidence);
}

enum class verdict { better, worse, not_separable, one_seed };

/// What the interval of (candidate − baseline) says: better or worse when it excludes 0 on that
/// side, not separable when it contains 0, one_seed when there is no interval.
inline verdict compare(const seed_interval& difference, bool lower_is_better) {
    if (!difference.has_spread()) return verdict::one_seed;
    if (difference.lower() > 0) return lower_is_better ? verdict::worse : verdict::better;
    if (difference.upper() < 0) return lower_is_better ? verdict::better : verdict::worse;
    return verdict::not_separable;
}

constexpr std::string_view to_string(verdict v) {
    switch (v) {
    case verdict::better: return "better";
    case verdict::worse: return "worse";
    case verdict::not_separable: return "not separable";
    case verdict::one_seed: return "one seed: no interval";
    }
    return "?";
}

} // namespace vediff::metrics
