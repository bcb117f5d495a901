#pragma once
// The spread of a Fréchet distance that comes from the finite sample it was measured on. A gFD of
// 3,000 samples is one draw: another 3,000 samples of the same generator give another number.
// Before a difference between two generators (or between two seeds of one) is read as an effect,
// it must be larger than this spread. The bootstrap estimates it from the one sample at hand:
// resample the N feature rows with replacement, measure the distance to the same reference
// statistics, repeat; the standard deviation of those distances estimates the standard deviation
// of the FD over samples of size N. (Resampling with replacement repeats rows, which lowers the
// covariance's rank and biases each resampled FD up a little; the spread, not the level, is what
// is reported.) The reference side is held fixed: the experiment compares every generator with
// the same test set.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "vediff/core/random.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/metrics/frechet.hpp"
#include "vediff/metrics/random_subset.hpp"

namespace vediff::metrics {

struct frechet_bootstrap_result {
    std::vector<double> distances;  // one per resample
    double mean = NAN;
    double sd = NAN;                // sample standard deviation of `distances`
};

/// `resamples` Fréchet distances of N rows drawn with replacement from `features` (N, F) to
/// `reference`, from Philox uniforms of (seed, stream); their mean and standard deviation.
inline frechet_bootstrap_result frechet_bootstrap(const tensor_view<float>& features, const feature_statistics& reference,
                                                  std::int64_t resamples, std::uint64_t seed, std::uint64_t stream) {
    if (features.rank() != 2 || features.dim(0) < 2)
        throw shape_error(fmt::format("frechet_bootstrap: features of shape {}; expected (N, F) with N >= 2", features.shape()));
    if (resamples < 2) throw std::invalid_argument(fmt::format("frechet_bootstrap: {} resamples; need at least 2 for a spread", resamples));
    const std::int64_t n = features.dim(0);
    frechet_bootstrap_result r;
    std::uint64_t draw = 0;
    for (std::int64_t b = 0; b < resamples; ++b) {
        std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
        for (auto& row : rows)
            row = std::min(n - 1, static_cast<std::int64_t>(philox_uniform<double>(seed, stream, 0, draw++) * double(n)));
        feature_statistics s;
        s.add(select_rows(features, rows).view());
        r.distances.push_back(frechet_distance(s, reference));
    }
    double sum = 0;
    for (double d : r.distances) sum += d;
    r.mean = sum / double(resamples);
    double squares = 0;
    for (double d : r.distances) squares += (d - r.mean) * (d - r.mean);
    r.sd = std::sqrt(squares / double(resamples - 1));
    return r;
}

} // namespace vediff::metrics
