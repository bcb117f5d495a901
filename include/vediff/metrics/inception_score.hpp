#pragma once
// The Inception Score (Salimans et al. 2016, "Improved techniques for training GANs"):
//     IS = exp(E_x KL(p(y|x) ‖ p(y))),  p(y) the mean of p(y|x) over the split,
// computed on splits of the samples, reported as the mean (and the population std) over splits.
//
// ADM's evaluator (guided-diffusion evaluations/evaluator.py, compute_inception_score) takes
// p(y|x) = softmax(pool3 · W) over all 1008 outputs of the TF Inception graph's
// softmax/logits/MatMul (W is 2048 × 1008, the logits' bias is not added, class 0 and the unused
// classes stay in), splits the samples into consecutive runs of 5000 (the last one shorter when N
// is not a multiple) and reports the mean over splits. improved-gan's original code uses 10
// splits, rows [i·N/10, (i+1)·N/10), and reports mean and std. Both rules are here
// (inception_score_splits); the caller passes the logits or probabilities of whichever classifier
// it evaluates with, every class it has.
//
// Computed in double: from logits through log-softmax (no exp underflow to log 0); from
// probabilities, a probability of exactly 0 contributes 0·log 0 = 0, its limit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::metrics {

/// How the N samples are cut into splits.
struct inception_score_splits {
    enum class rule { size, count };
    rule by = rule::size;
    std::int64_t value = 5000;

    /// ADM's evaluator: consecutive splits of `rows` samples, the last one what remains (5000 in ADM).
    static inception_score_splits of_size(std::int64_t rows) { return {rule::size, rows}; }
    /// improved-gan's: `splits` splits, split i holding rows [i·N/splits, (i+1)·N/splits) (10 there).
    static inception_score_splits count(std::int64_t splits) { return {rule::count, splits}; }
};

struct inception_score_result {
    double mean = 0;                    // over splits
    double std = 0;                     // population standard deviation over splits (np.std)
    std::vector<double> split_scores;   // exp(mean KL) of each split
};

namespace detail {

/// Row ranges [begin, end) of the splits of n rows.
inline std::vector<std::pair<std::int64_t, std::int64_t>> score_splits(std::int64_t n, inception_score_splits splits) {
    if (splits.value < 1)
        throw std::invalid_argument(fmt::format("inception_score: a split {} of {} is not positive",
                                                splits.by == inception_score_splits::rule::size ? "size" : "count", splits.value));
    std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
    if (splits.by == inception_score_splits::rule::size) {
        for (std::int64_t b = 0; b < n; b += splits.value) ranges.emplace_back(b, std::min(n, b + splits.value));
    } else {
        if (splits.value > n)
            throw std::invalid_argument(fmt::format("inception_score: {} splits of {} samples would leave splits empty", splits.value, n));
        for (std::int64_t i = 0; i < splits.value; ++i) ranges.emplace_back(i * n / splits.value, (i + 1) * n / splits.value);
    }
    return ranges;
}

/// IS from per-row log-probabilities (N, K) (−inf where a probability is 0).
inline inception_score_result score_from_log_probabilities(const std::vector<double>& log_p, std::int64_t n, std::int64_t k,
                                                           inception_score_splits splits) {
    inception_score_result result;
    std::vector<double> marginal(static_cast<std::size_t>(k));
    for (const auto& [begin, end] : score_splits(n, splits)) {
        std::fill(marginal.begin(), marginal.end(), 0.0);
        for (std::int64_t i = begin; i < end; ++i)
            for (std::int64_t j = 0; j < k; ++j) marginal[static_cast<std::size_t>(j)] += std::exp(log_p[static_cast<std::size_t>(i * k + j)]);
        const double rows = double(end - begin);
        for (auto& m : marginal) m = std::log(m / rows);
        double kl_sum = 0;
        for (std::int64_t i = begin; i < end; ++i)
            for (std::int64_t j = 0; j < k; ++j) {
                const double lp = log_p[static_cast<std::size_t>(i * k + j)];
                if (lp == -std::numeric_limits<double>::infinity()) continue;  // p = 0: 0·log 0 = 0
                kl_sum += std::exp(lp) * (lp - marginal[static_cast<std::size_t>(j)]);
            }
        result.split_scores.push_back(std::exp(kl_sum / rows));
    }
    const double s = double(result.split_scores.size());
    for (double v : result.split_scores) result.mean += v / s;
    for (double v : result.split_scores) result.std += (v - result.mean) * (v - result.mean) / s;
    result.std = std::sqrt(result.std);
    return result;
}

template <class T, device D>
std::vector<double> checked_rows(const char* op, const tensor_view<T, D>& x) {
    static_assert(std::is_floating_point_v<T>, "inception_score: float or double inputs");
    if (x.rank() != 2 || x.dim(0) < 1 || x.dim(1) < 1)
        throw shape_error(fmt::format("{}: expected (N, classes) with N, classes ≥ 1, got shape {}", op, x.shape()));
    const auto host = x.to_vector();
    std::vector<double> v(host.begin(), host.end());
    for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]))
            throw numeric_error(fmt::format("{}: row {}, class {} is {}", op, std::int64_t(i) / x.dim(1), std::int64_t(i) % x.dim(1), v[i]));
    return v;
}

} // namespace detail

/// The Inception Score of classifier logits (N, classes): p(y|x) = softmax over every class given.
template <class T, device D>
inception_score_result inception_score_from_logits(const tensor_view<T, D>& logits,
                                                   inception_score_splits splits = inception_score_splits::of_size(5000)) {
    auto v = detail::checked_rows("inception_score_from_logits", logits);
    const std::int64_t n = logits.dim(0), k = logits.dim(1);
    for (std::int64_t i = 0; i < n; ++i) {
        double* row = v.data() + i * k;
        const double top = *std::max_element(row, row + k);
        double sum = 0;
        for (std::int64_t j = 0; j < k; ++j) sum += std::exp(row[j] - top);
        const double log_norm = top + std::log(sum);
        for (std::int64_t j = 0; j < k; ++j) row[j] -= log_norm;
    }
    return detail::score_from_log_probabilities(v, n, k, splits);
}

/// The Inception Score of class probabilities (N, classes): rows of non-negative values summing to
/// 1 (within 1e-3, as a float32 softmax gives them; they are used as given, not renormalized).
template <class T, device D>
inception_score_result inception_score_from_probabilities(const tensor_view<T, D>& probabilities,
                                                          inception_score_splits splits = inception_score_splits::of_size(5000)) {
    auto v = detail::checked_rows("inception_score_from_probabilities", probabilities);
    const std::int64_t n = probabilities.dim(0), k = probabilities.dim(1);
    for (std::int64_t i = 0; i < n; ++i) {
        double* row = v.data() + i * k;
        double sum = 0;
        for (std::int64_t j = 0; j < k; ++j) {
            if (row[j] < 0)
                throw std::invalid_argument(fmt::format("inception_score_from_probabilities: row {}, class {} is the negative probability {}", i, j, row[j]));
            sum += row[j];
        }
        if (std::abs(sum - 1.0) > 1e-3)
            throw std::invalid_argument(fmt::format("inception_score_from_probabilities: row {} sums to {}, not 1 (logits? use inception_score_from_logits)", i, sum));
        for (std::int64_t j = 0; j < k; ++j) row[j] = std::log(row[j]);  // log 0 = −inf, skipped as 0·log 0
    }
    return detail::score_from_log_probabilities(v, n, k, splits);
}

} // namespace vediff::metrics
