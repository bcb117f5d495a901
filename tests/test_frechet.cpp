#define BOOST_TEST_MODULE frechet
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/metrics/frechet.hpp"

using namespace vediff;
using namespace vediff::testing;
namespace tt = boost::test_tools;

namespace {

/// (n, f) features mean + N(0, I)·mixingᵀ with a mixing matrix drawn from the seed too, so the
/// covariance is full (every feature correlated with every other).
tensor<double> correlated_features(std::int64_t n, std::int64_t f, std::uint64_t seed, double mean = 0.0) {
    const auto noise = random_tensor<double>({n, f}, seed, 0);
    const auto mixing = random_tensor<double>({f, f}, seed, 1, 1.0 / std::sqrt(double(f)));
    auto x = tensor<double>::empty({n, f});
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < f; ++j) {
            double s = mean;
            for (std::int64_t k = 0; k < f; ++k) s += noise.at(i, k) * mixing.at(j, k);
            x.at(i, j) = s;
        }
    return x;
}

metrics::feature_statistics statistics_of(const tensor_view<double>& x) {
    metrics::feature_statistics s;
    s.add(x);
    return s;
}

/// Two-pass mean and unbiased covariance, written out plainly.
std::pair<std::vector<double>, std::vector<double>> two_pass_moments(const tensor_view<double>& x) {
    const std::int64_t n = x.dim(0), f = x.dim(1);
    std::vector<double> mean(static_cast<std::size_t>(f)), cov(static_cast<std::size_t>(f * f));
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < f; ++j) mean[static_cast<std::size_t>(j)] += x.at(i, j) / double(n);
    for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < f; ++j)
            for (std::int64_t k = 0; k < f; ++k)
                cov[static_cast<std::size_t>(j * f + k)] += (x.at(i, j) - mean[static_cast<std::size_t>(j)]) *
                                                            (x.at(i, k) - mean[static_cast<std::size_t>(k)]) / double(n - 1);
    return {mean, cov};
}

/// max |a − b| / max |b| over two statistics' means and covariances.
double moments_difference(const metrics::feature_statistics& a, const metrics::feature_statistics& b) {
    const double mean_scale = std::max(b.mean().cwiseAbs().maxCoeff(), 1e-300);
    const double cov_scale = std::max(b.covariance().cwiseAbs().maxCoeff(), 1e-300);
    return std::max((a.mean() - b.mean()).cwiseAbs().maxCoeff() / mean_scale,
                    (a.covariance() - b.covariance()).cwiseAbs().maxCoeff() / cov_scale);
}

io::safetensors_file fixture_file() { return io::safetensors_file(std::string(VEDIFF_FIXTURE_DIR) + "/frechet/features.safetensors"); }

} // namespace

BOOST_AUTO_TEST_SUITE(statistics)

BOOST_AUTO_TEST_CASE(mean_and_unbiased_covariance) {
    const auto x = correlated_features(50, 5, 3, 2.0);
    const auto s = statistics_of(x);
    const auto [mean, cov] = two_pass_moments(x);
    BOOST_TEST(s.count() == 50);
    BOOST_TEST(s.dimension() == 5);
    for (int j = 0; j < 5; ++j) {
        BOOST_TEST(s.mean()(j) == mean[static_cast<std::size_t>(j)], tt::tolerance(1e-13));
        for (int k = 0; k < 5; ++k) BOOST_TEST(s.covariance()(j, k) == cov[static_cast<std::size_t>(j * 5 + k)], tt::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(batches_equal_one_shot) {
    // Far from the origin (mean 1000), where a naive Σx² − n·mean² would lose most digits.
    const auto x = correlated_features(3000, 8, 4, 1000.0);
    const auto once = statistics_of(x);
    for (std::int64_t batch : {1, 7, 64, 1500, 2999}) {
        BOOST_TEST_CONTEXT("batch " << batch) {
            metrics::feature_statistics s;
            for (std::int64_t b = 0; b < x.dim(0); b += batch) s.add(x.slice(b, std::min(x.dim(0), b + batch)));
            BOOST_TEST(s.count() == 3000);
            BOOST_TEST(moments_difference(s, once) < 1e-11);
        }
    }
    // Merging statistics of two halves, and float input (converted to double before accumulating).
    auto left = statistics_of(x.slice(0, 1234));
    left.merge(statistics_of(x.slice(1234, 3000)));
    BOOST_TEST(moments_difference(left, once) < 1e-11);
    const auto [mean, cov] = two_pass_moments(x);
    for (int j = 0; j < 8; ++j) BOOST_TEST(once.mean()(j) == mean[static_cast<std::size_t>(j)], tt::tolerance(1e-13));
    for (int j = 0; j < 8; ++j) BOOST_TEST(once.covariance()(j, j) == cov[static_cast<std::size_t>(j * 9)], tt::tolerance(1e-10));
}

BOOST_AUTO_TEST_CASE(float_and_double_features_agree) {
    auto xf = tensor<float>::empty({40, 3});
    auto xd = tensor<double>::empty({40, 3});
    const auto r = random_tensor<float>({40, 3}, 8);
    for (std::int64_t i = 0; i < 120; ++i) xd.data()[i] = double(xf.data()[i] = r.data()[i]);
    metrics::feature_statistics sf;
    sf.add(xf.view());
    BOOST_TEST(moments_difference(sf, statistics_of(xd)) < 1e-14);
}

BOOST_AUTO_TEST_CASE(extractor_in_batches) {
    // A feature extractor: per image, the sums of each channel and of its squares (features (n, 2C)).
    auto images = random_tensor<float>({23, 3, 4, 5}, 11);
    int calls = 0;
    auto extract = [&](const tensor_view<float>& x) {
        ++calls;
        auto f = tensor<float>::zeros({x.dim(0), 2 * x.dim(1)});
        for (std::int64_t n = 0; n < x.dim(0); ++n)
            for (std::int64_t c = 0; c < x.dim(1); ++c)
                for (std::int64_t i = 0; i < x.dim(2) * x.dim(3); ++i) {
                    const float v = x[n][c].data()[i];
                    f.at(n, c) += v;
                    f.at(n, x.dim(1) + c) += v * v;
                }
        return f;
    };
    const auto all = extract(images.view());
    metrics::feature_statistics direct;
    direct.add(all.view());
    for (std::int64_t batch : {1, 5, 23, 100}) {
        calls = 0;
        const auto s = metrics::feature_statistics_of(extract, images.view(), batch);
        BOOST_TEST(calls == (23 + batch - 1) / batch);
        BOOST_TEST(s.count() == 23);
        BOOST_TEST(moments_difference(s, direct) < 1e-12);
    }
    auto drops_a_row = [](const tensor_view<float>& x) { return tensor<float>::zeros({x.dim(0) - 1, 4}); };
    const auto msg = shape_error_message([&] { metrics::feature_statistics_of(drops_a_row, images.view(), 5); });
    BOOST_TEST(contains(msg, "(5, 3, 4, 5)"), msg);
    BOOST_TEST(contains(msg, "(4, 4)"), msg);
    BOOST_CHECK_THROW(metrics::feature_statistics_of(extract, images.view(), 0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(save_and_load) {
    temp_dir dir("frechet_stats");
    const auto x = correlated_features(64, 6, 12, -3.0);
    const auto s = statistics_of(x);
    metrics::save_feature_statistics(dir / "stats.safetensors", s, {{"what", "test set"}});
    const auto loaded = metrics::load_feature_statistics(dir / "stats.safetensors");
    BOOST_TEST(loaded.count() == 64);
    BOOST_TEST((loaded.mean() == s.mean()));
    BOOST_TEST(moments_difference(loaded, s) < 1e-15);
    // The loaded statistics serve a comparison with another set as the original ones do (a distance
    // far from 0, so a wrong covariance would show).
    const auto other = statistics_of(correlated_features(80, 6, 13, 1.0));
    const double original_distance = metrics::frechet_distance(s, other);
    BOOST_TEST(original_distance > 10.0);
    BOOST_TEST(metrics::frechet_distance(loaded, other) == original_distance, tt::tolerance(1e-12));
    io::safetensors_file file(dir / "stats.safetensors");
    // The file holds what its format says, checked against a direct computation from the features,
    // not against the writer's own numbers: the mean and the unbiased (n − 1) covariance.
    const auto stored_mean = file.get<double>("mean"), stored_covariance = file.get<double>("covariance");
    for (std::int64_t j = 0; j < 6; ++j) {
        double m = 0;
        for (std::int64_t i = 0; i < 64; ++i) m += x.at(i, j) / 64.0;
        BOOST_TEST(stored_mean.at(j) == m, tt::tolerance(1e-12));
        for (std::int64_t k = 0; k < 6; ++k) {
            double c = 0, mk = 0;
            for (std::int64_t i = 0; i < 64; ++i) mk += x.at(i, k) / 64.0;
            for (std::int64_t i = 0; i < 64; ++i) c += (x.at(i, j) - m) * (x.at(i, k) - mk) / 63.0;
            BOOST_TEST(stored_covariance.at(j, k) == c, tt::tolerance(1e-11));
        }
    }
    BOOST_TEST(file.entry("mean").dtype == "F64");
    BOOST_TEST(file.entry("covariance").dtype == "F64");
    BOOST_TEST(file.entry("count").dtype == "I64");
    BOOST_TEST(file.metadata().at("what") == "test set");

    // A file without a covariance, and statistics too small to save.
    std::map<std::string, tensor<double>> partial;
    partial.emplace("mean", tensor<double>::zeros({6}));
    io::save_tensors(dir / "partial.safetensors", partial);
    const auto msg = io_error_message([&] { metrics::load_feature_statistics(dir / "partial.safetensors"); });
    BOOST_TEST(contains(msg, "partial.safetensors"), msg);
    BOOST_TEST(contains(msg, "covariance"), msg);
    BOOST_CHECK_THROW(metrics::save_feature_statistics(dir / "one.safetensors", statistics_of(x.slice(0, 1))), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(errors_name_the_shapes) {
    metrics::feature_statistics s;
    auto rank3 = tensor<double>::zeros({2, 3, 4});
    BOOST_TEST(contains(shape_error_message([&] { s.add(rank3.view()); }), "(2, 3, 4)"));
    s.add(tensor<double>::zeros({4, 3}).view());
    auto other = tensor<double>::zeros({4, 5});
    const auto msg = shape_error_message([&] { s.add(other.view()); });
    BOOST_TEST(contains(msg, "(4, 5)"), msg);
    BOOST_TEST(contains(msg, "3 features"), msg);
    metrics::feature_statistics one;
    one.add(tensor<double>::zeros({1, 3}).view());
    BOOST_CHECK_THROW(one.covariance(), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(distance)

BOOST_AUTO_TEST_CASE(a_set_against_itself_is_zero) {
    const auto s = statistics_of(correlated_features(500, 12, 21, 0.7));
    const double scale = 2 * s.covariance().trace();
    BOOST_TEST(std::abs(metrics::frechet_distance(s, s)) <= 1e-9 * scale, metrics::frechet_distance(s, s) << " against a scale of " << scale);
    // And a different set is not.
    const auto t = statistics_of(correlated_features(500, 12, 22, 0.7));
    BOOST_TEST(metrics::frechet_distance(s, t) > 1e-3 * scale);
}

BOOST_AUTO_TEST_CASE(one_dimensional_closed_form) {
    // In 1-D, d² = (μa − μb)² + (σa − σb)².
    const auto a = random_tensor<double>({300, 1}, 31, 0, 1.5);
    auto b = random_tensor<double>({200, 1}, 32, 0, 0.4);
    for (std::int64_t i = 0; i < 200; ++i) b.data()[i] += 2.0;
    const auto [ma, va] = two_pass_moments(a);
    const auto [mb, vb] = two_pass_moments(b);
    const double expected = (ma[0] - mb[0]) * (ma[0] - mb[0]) + std::pow(std::sqrt(va[0]) - std::sqrt(vb[0]), 2);
    BOOST_TEST(metrics::frechet_distance(statistics_of(a), statistics_of(b)) == expected, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(diagonal_closed_form) {
    // Diagonal covariances: d² = |μa − μb|² + Σ_i (√a_i − √b_i)².
    const int f = 6;
    Eigen::VectorXd mu_a(f), mu_b(f), var_a(f), var_b(f);
    mu_a << 0, 1, 2, -1, 0.5, 3;
    mu_b << 1, 1, 0, -1, 0.0, 2;
    var_a << 1, 4, 0.25, 9, 2, 1e-6;
    var_b << 4, 1, 1, 9, 0.5, 3;
    double expected = (mu_a - mu_b).squaredNorm();
    for (int i = 0; i < f; ++i) expected += std::pow(std::sqrt(var_a(i)) - std::sqrt(var_b(i)), 2);
    const auto a = metrics::feature_statistics::from_moments(10, mu_a, var_a.asDiagonal().toDenseMatrix());
    const auto b = metrics::feature_statistics::from_moments(20, mu_b, var_b.asDiagonal().toDenseMatrix());
    BOOST_TEST(metrics::frechet_distance(a, b) == expected, tt::tolerance(1e-12));
    // Rotating both Gaussians by the same orthogonal Q leaves the distance unchanged.
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(Eigen::MatrixXd::NullaryExpr(f, f, [](Eigen::Index i, Eigen::Index j) {
        return philox_normal<double>(41, 0, 0, static_cast<std::uint64_t>(i * 6 + j));
    }));
    const Eigen::MatrixXd q = qr.householderQ();
    const auto ra = metrics::feature_statistics::from_moments(10, q * mu_a, q * var_a.asDiagonal() * q.transpose());
    const auto rb = metrics::feature_statistics::from_moments(20, q * mu_b, q * var_b.asDiagonal() * q.transpose());
    BOOST_TEST(metrics::frechet_distance(ra, rb) == expected, tt::tolerance(1e-10));
}

BOOST_AUTO_TEST_CASE(symmetric) {
    const auto a = statistics_of(correlated_features(100, 7, 51, 0.0));
    const auto b = statistics_of(correlated_features(150, 7, 52, 0.3));
    BOOST_TEST(metrics::frechet_distance(a, b) == metrics::frechet_distance(b, a), tt::tolerance(1e-10));
    BOOST_TEST(metrics::frechet_distance(a, b) > 0.0);
}

BOOST_AUTO_TEST_CASE(matches_scipy_on_stored_features) {
    // tests/fixtures/make_frechet.py: numpy moments and scipy.linalg.sqrtm(Σa Σb), from float32 features.
    const auto file = fixture_file();
    const auto fa = file.get<float>("features.a"), fb = file.get<float>("features.b");
    metrics::feature_statistics a, b;
    // In uneven batches, as a test-set loop would add them.
    for (std::int64_t i = 0; i < fa.dim(0); i += 37) a.add(fa.slice(i, std::min(fa.dim(0), i + 37)));
    b.add(fb.view());
    const auto expect_mean = [&](const metrics::feature_statistics& s, const std::string& name) {
        const auto m = file.get<double>(name);
        for (std::int64_t j = 0; j < m.numel(); ++j) BOOST_TEST(s.mean()(j) == m.data()[j], tt::tolerance(1e-12));
    };
    const auto expect_cov = [&](const metrics::feature_statistics& s, const std::string& name) {
        const auto c = file.get<double>(name);
        const Eigen::MatrixXd got = s.covariance();
        double worst = 0;
        for (std::int64_t j = 0; j < c.dim(0); ++j)
            for (std::int64_t k = 0; k < c.dim(1); ++k) worst = std::max(worst, std::abs(got(j, k) - c.at(j, k)));
        BOOST_TEST(worst < 1e-12 * got.cwiseAbs().maxCoeff(), name << ": worst difference " << worst);
    };
    expect_mean(a, "expected.mean_a");
    expect_mean(b, "expected.mean_b");
    expect_cov(a, "expected.covariance_a");
    expect_cov(b, "expected.covariance_b");
    const double expected = file.get<double>("expected.frechet_distance").data()[0];
    const double got = metrics::frechet_distance(a, b);
    BOOST_TEST_MESSAGE("Fréchet distance " << got << ", scipy " << expected << ", relative difference " << std::abs(got - expected) / expected);
    BOOST_TEST(got == expected, tt::tolerance(1e-6));
    BOOST_TEST(metrics::frechet_distance(b, a) == expected, tt::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(singular_covariances) {
    // Rank-deficient, rotated diagonal covariances (zero variances in both, in different
    // directions): d² = |μa − μb|² + Σ_i (√a_i − √b_i)² still holds.
    const int f = 8;
    Eigen::VectorXd mu_a = Eigen::VectorXd::LinSpaced(f, -1.0, 2.0), mu_b = Eigen::VectorXd::Zero(f), var_a(f), var_b(f);
    var_a << 0, 4, 0, 9, 2, 0, 1, 0.5;
    var_b << 1, 0, 0, 9, 0.5, 3, 0, 0.5;
    double expected = (mu_a - mu_b).squaredNorm();
    for (int i = 0; i < f; ++i) expected += std::pow(std::sqrt(var_a(i)) - std::sqrt(var_b(i)), 2);
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(Eigen::MatrixXd::NullaryExpr(f, f, [](Eigen::Index i, Eigen::Index j) {
        return philox_normal<double>(43, 0, 0, static_cast<std::uint64_t>(i * 8 + j));
    }));
    const Eigen::MatrixXd q = qr.householderQ();
    const auto a = metrics::feature_statistics::from_mean_and_covariance(q * mu_a, q * var_a.asDiagonal() * q.transpose());
    const auto b = metrics::feature_statistics::from_mean_and_covariance(q * mu_b, q * var_b.asDiagonal() * q.transpose());
    // Zero eigenvalues of Σa Σb come out as rounding noise ~1e-16, whose roots (~1e-8) enter the trace.
    BOOST_TEST(metrics::frechet_distance(a, b) == expected, tt::tolerance(1e-7));
    BOOST_TEST(metrics::frechet_distance(b, a) == expected, tt::tolerance(1e-7));
    // Fewer samples than features, and a constant feature: a set against itself is still 0.
    auto x = correlated_features(12, 30, 71, 0.5);
    for (std::int64_t i = 0; i < 12; ++i) x.at(i, 4) = 3.0;
    const auto s = statistics_of(x);
    // 19 of its 30 eigenvalues are 0: their rounding noise's roots bound the accuracy.
    BOOST_TEST(std::abs(metrics::frechet_distance(s, s)) <= 1e-6 * s.covariance().trace(),
               metrics::frechet_distance(s, s) << " against a trace of " << s.covariance().trace());
}

BOOST_AUTO_TEST_CASE(fid_matches_pytorch_fid_calculate_frechet_distance) {
    // tests/fixtures/make_fid_scipy.py: 500 and 400 float32 features of 64 dimensions, numpy's
    // moments and pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm(Σa Σb)), read from
    // numpy's own .npz.
    const io::npz_file file(std::string(VEDIFF_FIXTURE_DIR) + "/frechet/fid_scipy.npz");
    const double expected = file.get<double>("fid").data()[0];
    metrics::feature_statistics a, b;
    a.add(file.get<float>("features_a").view());
    b.add(file.get<float>("features_b").view());
    BOOST_TEST(a.dimension() == 64);
    const double from_features = metrics::frechet_distance(a, b);
    BOOST_TEST_MESSAGE("FID from features " << from_features << ", scipy " << expected << ", relative difference "
                                            << std::abs(from_features - expected) / expected);
    BOOST_TEST(from_features == expected, tt::tolerance(1e-6));
    // The same from the stored mean and covariance (statistics files carry only these).
    const auto stored = [&](const std::string& mu, const std::string& sigma) {
        const auto m = file.get<double>(mu), s = file.get<double>(sigma);
        return metrics::feature_statistics::from_mean_and_covariance(
            Eigen::Map<const Eigen::VectorXd>(m.data(), 64), Eigen::Map<const Eigen::Matrix<double, 64, 64, Eigen::RowMajor>>(s.data()));
    };
    BOOST_TEST(metrics::frechet_distance(stored("mu_a", "sigma_a"), stored("mu_b", "sigma_b")) == expected, tt::tolerance(1e-6));
    BOOST_TEST(metrics::frechet_distance(stored("mu_b", "sigma_b"), a) == metrics::frechet_distance(b, a), tt::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(errors) {
    const auto a = statistics_of(correlated_features(10, 4, 61));
    const auto b = statistics_of(correlated_features(10, 3, 62));
    const auto msg = shape_error_message([&] { metrics::frechet_distance(a, b); });
    BOOST_TEST(contains(msg, "frechet_distance"), msg);
    BOOST_TEST(contains(msg, "4 and 3 features"), msg);
    metrics::feature_statistics single;
    single.add(tensor<double>::zeros({1, 4}).view());
    const auto few = error_message<std::invalid_argument>([&] { metrics::frechet_distance(a, single); });
    BOOST_TEST(contains(few, "10 and 1 samples"), few);
    BOOST_CHECK_THROW(metrics::frechet_distance(metrics::feature_statistics{}, a), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
