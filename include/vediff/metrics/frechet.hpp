#pragma once
// The Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017, "GANs
// trained by a two time-scale update rule converge to a local Nash equilibrium", the FID):
//     d² = |μa − μb|² + tr(Σa) + tr(Σb) − 2·tr((Σa Σb)^½).
// The usual implementation takes scipy.linalg.sqrtm(Σa Σb), the square root of a non-symmetric
// product, which can come back complex or NaN for large, nearly singular covariances. Here Σa is
// factored as Σa = B Bᵀ with B = Pᵀ L D^½ from a pivoted LDLᵀ (Eigen's LDLT,
// which accepts semi-definite matrices; pivots that rounding pushes below 0 count as 0), and
// Bᵀ Σb B is symmetric, positive semi-definite and has the eigenvalues of B Bᵀ Σb = Σa Σb, so the
// trace of the root is Σ √λ over one eigenvalues-only decomposition of a symmetric matrix (Eigen's
// SelfAdjointEigenSolver), always real; eigenvalues below 0 are clamped to 0. At F = 2048 this is
// several times faster than taking Σa^½ by a full eigendecomposition first, and it never takes
// the root of Σa's rounding noise. The result is not clamped: a distance of a set to itself comes
// out as a rounding-sized number of either sign.
//
// feature_statistics accumulates the mean and the sum of squared deviations of (N, F) feature
// batches in double and merges batches exactly (Chan et al.'s pairwise update), so the statistics
// of a test set do not depend on how it was batched; they can be saved and loaded as safetensors
// ("mean" F64 (F), "covariance" F64 (F, F), "count" I64 ()) so that a reference set is
// featurized once. The field's .npz files (pytorch-fid's `mu`, `sigma`; ADM's reference batches'
// `mu`, `sigma`, `mu_s`, `sigma_s`) are read too, as statistics without a sample count when the
// file records none (from_mean_and_covariance). feature_statistics_of runs any feature extractor (images → (n, F) features,
// e.g. the Fashion-MNIST classifier's features(), later an InceptionV3) over a set of images in
// batches.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // Eigen 3.4's packet code under GCC 12 (see backend/cpu/eigen.hpp)
#include <Eigen/Dense>
#pragma GCC diagnostic pop
#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/core/tensor.hpp"
#include "vediff/io/npz.hpp"
#include "vediff/io/safetensors.hpp"

namespace vediff::metrics {

class feature_statistics {
public:
    /// Rows of a batch turned into moments at once: bounds the centered copy to 1024 × F doubles.
    static constexpr std::int64_t rows_per_chunk = 1024;

    feature_statistics() = default;

    /// Statistics from a mean (F), an unbiased covariance (F, F) and the number of samples behind them.
    static feature_statistics from_moments(std::int64_t count, Eigen::VectorXd mean, const Eigen::MatrixXd& covariance) {
        const auto f = mean.size();
        if (count < 1 || covariance.rows() != f || covariance.cols() != f)
            throw shape_error(fmt::format("feature_statistics::from_moments: {} samples with a mean of {} features and a {}×{} covariance",
                                          count, f, covariance.rows(), covariance.cols()));
        feature_statistics s;
        s.count_ = count;
        s.mean_ = std::move(mean);
        s.m2_ = covariance * double(count - 1);
        return s;
    }

    /// Statistics from a mean (F) and a covariance (F, F) stored without the number of samples
    /// behind them (pytorch-fid's and ADM's .npz files): they serve frechet_distance but cannot be
    /// merged with more samples, and count() is 0.
    static feature_statistics from_mean_and_covariance(Eigen::VectorXd mean, const Eigen::MatrixXd& covariance) {
        const auto f = mean.size();
        if (f < 1 || covariance.rows() != f || covariance.cols() != f)
            throw shape_error(fmt::format("feature_statistics::from_mean_and_covariance: a mean of {} features and a {}×{} covariance", f,
                                          covariance.rows(), covariance.cols()));
        if (!mean.allFinite() || !covariance.allFinite())
            throw numeric_error("feature_statistics::from_mean_and_covariance: the mean or the covariance holds NaN or infinite values");
        feature_statistics s;
        s.uncounted_ = true;
        s.mean_ = std::move(mean);
        s.m2_ = covariance;
        return s;
    }

    /// Adds a batch of features (N, F), float or double, on any device (copied to the host).
    template <class T, device D>
    void add(const tensor_view<T, D>& features) {
        refuse_uncounted("add");
        if (features.rank() != 2 || features.dim(1) < 1)
            throw shape_error(fmt::format("feature_statistics::add: features must be (N, F) with F ≥ 1, got shape {}", features.shape()));
        if (count_ > 0 && features.dim(1) != dimension())
            throw shape_error(fmt::format("feature_statistics::add: a batch of shape {} after batches of {} features",
                                          features.shape(), dimension()));
        const auto host = features.to_vector();
        const std::int64_t n = features.dim(0), f = features.dim(1);
        using rows_map = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
        for (std::int64_t begin = 0; begin < n; begin += rows_per_chunk) {
            const std::int64_t rows = std::min(rows_per_chunk, n - begin);
            const Eigen::MatrixXd x = rows_map(host.data() + begin * f, rows, f).template cast<double>();
            const Eigen::VectorXd chunk_mean = x.colwise().mean().transpose();
            const Eigen::MatrixXd centered = x.rowwise() - chunk_mean.transpose();
            merge_moments(rows, chunk_mean, centered.transpose() * centered);
        }
    }

    /// Adds the samples behind another statistics object (same feature count).
    void merge(const feature_statistics& other) {
        refuse_uncounted("merge");
        other.refuse_uncounted("merge");
        if (other.count_ == 0) return;
        if (count_ > 0 && other.dimension() != dimension())
            throw shape_error(fmt::format("feature_statistics::merge: statistics of {} features into statistics of {}",
                                          other.dimension(), dimension()));
        merge_moments(other.count_, other.mean_, other.m2_);
    }

    /// The number of samples added; 0 for statistics read without a count (from_mean_and_covariance).
    std::int64_t count() const { return count_; }
    /// Whether covariance() has a value: 2 samples or more, or a covariance read as such.
    bool has_covariance() const { return count_ >= 2 || uncounted_; }
    /// F, the number of features (0 before the first batch).
    std::int64_t dimension() const { return static_cast<std::int64_t>(mean_.size()); }
    const Eigen::VectorXd& mean() const { return mean_; }

    /// The unbiased covariance, sum of squared deviations / (count − 1); needs 2 samples or more.
    Eigen::MatrixXd covariance() const {
        if (uncounted_) return m2_;
        if (count_ < 2)
            throw std::invalid_argument(fmt::format("feature_statistics::covariance: {} sample(s), an unbiased covariance needs at least 2", count_));
        return m2_ / double(count_ - 1);
    }

private:
    void refuse_uncounted(const char* op) const {
        if (uncounted_)
            throw std::invalid_argument(fmt::format("feature_statistics::{}: statistics read without a sample count cannot be merged with samples", op));
    }

    /// Chan et al.'s pairwise update with the moments (count, mean, sum of squared deviations) of more samples.
    void merge_moments(std::int64_t nb, const Eigen::VectorXd& mean_b, const Eigen::MatrixXd& m2_b) {
        if (count_ == 0) {
            count_ = nb;
            mean_ = mean_b;
            m2_ = m2_b;
            return;
        }
        const double na = double(count_), n = na + double(nb);
        const Eigen::VectorXd delta = mean_b - mean_;
        mean_ += delta * (double(nb) / n);
        m2_ += m2_b;
        m2_.noalias() += (delta * delta.transpose()) * (na * double(nb) / n);
        count_ += nb;
    }

    std::int64_t count_ = 0;
    Eigen::VectorXd mean_;  // (F)
    Eigen::MatrixXd m2_;    // (F, F), Σ (x − mean)(x − mean)ᵀ over the samples so far; the covariance itself when uncounted_
    bool uncounted_ = false;
};

namespace detail {
/// √max(λ, 0) of each eigenvalue. A plain loop: F values, and GCC 12 reports Eigen's AVX-512
/// max/sqrt packets as reading uninitialized registers.
inline Eigen::VectorXd clamped_roots(const Eigen::VectorXd& eigenvalues) {
    Eigen::VectorXd roots(eigenvalues.size());
    for (Eigen::Index i = 0; i < eigenvalues.size(); ++i) roots(i) = std::sqrt(std::max(eigenvalues(i), 0.0));
    return roots;
}

/// The symmetric square root V·diag(√max(λ, 0))·Vᵀ of a symmetric matrix.
inline Eigen::MatrixXd symmetric_sqrt(const Eigen::MatrixXd& a) {
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(a);
    if (eig.info() != Eigen::Success) throw numeric_error("frechet_distance: the eigendecomposition of a covariance did not converge");
    return eig.eigenvectors() * clamped_roots(eig.eigenvalues()).asDiagonal() * eig.eigenvectors().transpose();
}

/// tr((Σa Σb)^½) for symmetric positive semi-definite Σa, Σb: with Σa = B Bᵀ, the sum of the roots
/// of the eigenvalues of the symmetric Bᵀ Σb B. B = Pᵀ L D^½ from a pivoted LDLᵀ; where that
/// fails (an exactly zero pivot followed by a non-zero one, e.g. a constant feature in a
/// rank-deficient covariance), B = Σa^½ from a full eigendecomposition.
inline double trace_of_product_root(const Eigen::MatrixXd& sigma_a, const Eigen::MatrixXd& sigma_b) {
    const Eigen::LDLT<Eigen::MatrixXd> ldlt(sigma_a);
    Eigen::MatrixXd b;
    if (ldlt.info() == Eigen::Success) {
        b = ldlt.transpositionsP().transpose() * Eigen::MatrixXd(ldlt.matrixL());
        b = b * clamped_roots(ldlt.vectorD()).asDiagonal();
    } else {
        b = symmetric_sqrt(sigma_a);
    }
    Eigen::MatrixXd middle = b.transpose() * sigma_b * b;
    middle = 0.5 * (middle + middle.transpose());  // symmetric in exact arithmetic; make it so in floating point
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(middle, Eigen::EigenvaluesOnly);
    if (eig.info() != Eigen::Success) throw numeric_error("frechet_distance: the eigendecomposition of Bᵀ Σb B did not converge");
    return clamped_roots(eig.eigenvalues()).sum();
}
} // namespace detail

/// The Fréchet distance between the Gaussians N(μa, Σa) and N(μb, Σb) fitted to two feature sets.
inline double frechet_distance(const feature_statistics& a, const feature_statistics& b) {
    if (!a.has_covariance() || !b.has_covariance())
        throw std::invalid_argument(fmt::format("frechet_distance: statistics of {} and {} samples; each set needs at least 2", a.count(), b.count()));
    if (a.dimension() != b.dimension())
        throw shape_error(fmt::format("frechet_distance: statistics of {} and {} features", a.dimension(), b.dimension()));
    const Eigen::MatrixXd sigma_a = a.covariance(), sigma_b = b.covariance();
    const double trace_of_root = detail::trace_of_product_root(sigma_a, sigma_b);
    return (a.mean() - b.mean()).squaredNorm() + sigma_a.trace() + sigma_b.trace() - 2.0 * trace_of_root;
}

/// Runs extract (a callable: images view (n, C, H, W) → features tensor (n, F)) over images
/// (N, C, H, W) in batches of batch_size and accumulates the statistics of the features.
template <class Extractor, class T, device D>
feature_statistics feature_statistics_of(Extractor&& extract, const tensor_view<T, D>& images, std::int64_t batch_size = 256) {
    if (images.rank() < 1 || images.dim(0) < 1)
        throw shape_error(fmt::format("feature_statistics_of: images must be a non-empty batch (N, ...), got shape {}", images.shape()));
    if (batch_size < 1) throw std::invalid_argument(fmt::format("feature_statistics_of: batch size {} is not positive", batch_size));
    feature_statistics stats;
    for (std::int64_t begin = 0; begin < images.dim(0); begin += batch_size) {
        const std::int64_t end = std::min(images.dim(0), begin + batch_size);
        const auto batch = images.slice(begin, end);
        const auto features = extract(batch);
        if (features.rank() != 2 || features.dim(0) != end - begin)
            throw shape_error(fmt::format("feature_statistics_of: the extractor turned images {} into features {}, expected ({}, F)",
                                          batch.shape(), features.shape(), end - begin));
        stats.add(features);
    }
    return stats;
}

/// Writes statistics as safetensors: "mean" F64 (F), "covariance" F64 (F, F), "count" I64 ().
inline void save_feature_statistics(const std::filesystem::path& path, const feature_statistics& stats, const io::metadata_map& metadata = {}) {
    const auto f = stats.dimension();
    const Eigen::MatrixXd cov = stats.covariance();  // throws for fewer than 2 samples: nothing worth caching
    auto mean = tensor<double>::from_host({f}, std::span<const double>(stats.mean().data(), static_cast<std::size_t>(f)));
    auto covariance = tensor<double>::empty({f, f});
    Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(covariance.data(), f, f) = cov;
    auto count = tensor<std::int64_t>::from_host(tensor_shape{}, {stats.count()});
    io::safetensors_writer w;
    w.add("mean", mean.view());
    w.add("covariance", covariance.view());
    w.add("count", count.view());
    for (auto& [k, v] : metadata) w.add_metadata(k, v);
    w.write(path);
}

/// Reads statistics written by save_feature_statistics; an io_error names the file and the problem.
inline feature_statistics load_feature_statistics(const std::filesystem::path& path) {
    io::safetensors_file file(path);
    io::note_if_unverified(file);
    const auto& mean_entry = file.entry("mean");
    const auto& cov_entry = file.entry("covariance");
    const auto& count_entry = file.entry("count");
    if (mean_entry.shape.rank() != 1 || !(cov_entry.shape == tensor_shape{mean_entry.shape[0], mean_entry.shape[0]}) ||
        count_entry.shape.numel() != 1)
        file.fail(fmt::format("feature statistics need mean (F), covariance (F, F) and one count; got mean {}, covariance {}, count {}",
                              mean_entry.shape, cov_entry.shape, count_entry.shape));
    const auto mean = file.get<double>("mean");
    const auto covariance = file.get<double>("covariance");
    const auto count = file.get<std::int64_t>("count").data()[0];
    if (count < 2) file.fail(fmt::format("count {} is below the 2 samples an unbiased covariance needs", count));
    const auto f = mean.dim(0);
    return feature_statistics::from_moments(
        count, Eigen::Map<const Eigen::VectorXd>(mean.data(), f),
        Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(covariance.data(), f, f));
}

namespace detail {
/// A mean (F) and covariance (F, F) from an .npz file, any float dtype, checked for shape and finiteness.
inline std::pair<Eigen::VectorXd, Eigen::MatrixXd> npz_moments(const io::npz_file& file, const std::string& mean_name,
                                                               const std::string& covariance_name) {
    const auto mh = file.header(mean_name), ch = file.header(covariance_name);
    if (mh.shape.rank() != 1 || mh.shape[0] < 1)
        file.fail_member(mean_name, fmt::format("a mean has shape (F) with F ≥ 1, this one has shape {}", mh.shape));
    const auto f = mh.shape[0];
    if (!(ch.shape == tensor_shape{f, f}))
        file.fail_member(covariance_name, fmt::format("the covariance of a mean '{}' of shape {} has shape ({}, {}), this one {}", mean_name,
                                                      mh.shape, f, f, ch.shape));
    const auto mean = file.get<double>(mean_name);
    const auto covariance = file.get<double>(covariance_name);
    Eigen::VectorXd m = Eigen::Map<const Eigen::VectorXd>(mean.data(), f);
    Eigen::MatrixXd c = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(covariance.data(), f, f);
    if (!m.allFinite()) file.fail_member(mean_name, "holds NaN or infinite values");
    if (!c.allFinite()) file.fail_member(covariance_name, "holds NaN or infinite values");
    return {std::move(m), std::move(c)};
}
} // namespace detail

/// Reads pytorch-fid's statistics file (fid_score.py --save-stats: np.savez(path, mu=..., sigma=...);
/// float32 or float64): a mean and an unbiased covariance without a sample count.
inline feature_statistics load_feature_statistics_npz(const std::filesystem::path& path, const std::string& mean_name = "mu",
                                                      const std::string& covariance_name = "sigma") {
    const io::npz_file file(path);
    auto [mean, covariance] = detail::npz_moments(file, mean_name, covariance_name);
    return feature_statistics::from_mean_and_covariance(std::move(mean), covariance);
}

/// Writes statistics as pytorch-fid reads them: `mu` f8 (F), `sigma` f8 (F, F) (np.savez, uncompressed).
inline void save_feature_statistics_npz(const std::filesystem::path& path, const feature_statistics& stats) {
    const auto f = stats.dimension();
    const Eigen::MatrixXd cov = stats.covariance();  // throws for statistics without one
    const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rows = cov;
    io::npz_writer w;
    w.add("mu", tensor_shape{f}, std::span<const double>(stats.mean().data(), static_cast<std::size_t>(f)));
    w.add("sigma", tensor_shape{f, f}, std::span<const double>(rows.data(), static_cast<std::size_t>(f * f)));
    w.write(path);
}

/// The two statistics ADM's evaluator compares: FID on Inception's pool3 features (2048) and sFID on
/// the first 7 channels of mixed_6/conv (17·17·7 = 2023 features, flattened height, width, channel).
struct reference_statistics {
    feature_statistics pool;
    feature_statistics spatial;
};

/// Reads the statistics stored in an ADM reference batch (guided-diffusion evaluations/evaluator.py:
/// `mu`, `sigma` for FID, `mu_s`, `sigma_s` for sFID), as statistics without a sample count (the
/// batch's images `arr_0`, where present, are not read).
inline reference_statistics load_adm_reference_statistics(const std::filesystem::path& path) {
    const io::npz_file file(path);
    for (const char* name : {"mu", "sigma", "mu_s", "sigma_s"})
        if (!file.contains(name))
            file.fail(fmt::format("no array named '{}': this reference batch stores no precomputed statistics (mu, sigma, mu_s, sigma_s){}", name,
                                  file.contains("arr_0") ? "; compute them from its images (io::load_image_batch_npz)" : ""));
    const auto statistics = [&](const char* mean_name, const char* covariance_name) {
        auto [mean, covariance] = detail::npz_moments(file, mean_name, covariance_name);
        return feature_statistics::from_mean_and_covariance(std::move(mean), covariance);
    };
    return {statistics("mu", "sigma"), statistics("mu_s", "sigma_s")};
}

} // namespace vediff::metrics
