#define BOOST_TEST_MODULE loss
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/loss/kl.hpp"
#include "vediff/loss/latent_stats.hpp"
#include "vediff/loss/magnitude.hpp"
#include "vediff/loss/reconstruction.hpp"
#include "vediff/loss/tokenizer_loss.hpp"
#include "vediff/loss/variance_expansion.hpp"
#include "vediff/nn/layer.hpp"
#include "vediff/ops/gemm.hpp"
#include "vediff/optim/adamw.hpp"

using namespace vediff;
using namespace vediff::testing;
using loss::reduction;

namespace {
using real_types = boost::mpl::list<float, double>;
namespace tt = boost::test_tools;

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

using rec_l1 = loss::reconstruction<loss::l1>;
using rec_l2 = loss::reconstruction<loss::l2>;
using ve_loss = loss::tokenizer_loss<rec_l1, loss::variance_expansion, loss::magnitude_regularizer>;
using full_loss = loss::tokenizer_loss<rec_l1, loss::variance_expansion, loss::magnitude_regularizer, loss::kl_divergence>;

/// Tokenizer outputs of a small batch: images (B, 1, 4, 4), latents (B, 3, 2, 2).
template <class T>
struct batch {
    tensor<T> x, x_hat, mean, logvar, z;
    loss::tokenizer_outputs<T> outputs() const { return {x, x_hat, mean, logvar, z}; }
};

/// Inputs away from the kinks of |·| (x̂ − x and z at least 0.2 from 0), so finite differences
/// with a step of 1e-2 see a smooth function.
template <class T>
batch<T> smooth_batch(std::int64_t B = 2, std::uint64_t seed = 5) {
    batch<T> b{tensor<T>::empty({B, 1, 4, 4}), random_tensor<T>({B, 1, 4, 4}, seed, 1), random_tensor<T>({B, 3, 2, 2}, seed, 2),
               random_tensor<T>({B, 3, 2, 2}, seed, 3), random_tensor<T>({B, 3, 2, 2}, seed, 4, 1.5)};
    const auto off = random_tensor<T>(b.x.shape(), seed, 5, 0.5);
    for (std::int64_t i = 0; i < b.x.numel(); ++i) {
        const T o = off.data()[i];
        b.x.data()[i] = b.x_hat.data()[i] + (o >= 0 ? T(0.2) + o : o - T(0.2));
    }
    for (auto& v : b.z.span()) v = v >= 0 ? T(0.2) + v : v - T(0.2);
    return b;
}

template <class T>
batch<T> fixture_batch(const fixture& f) {
    return {f.get<T>("x"), f.get<T>("x_hat"), f.get<T>("mean"), f.get<T>("logvar"), f.get<T>("z")};
}

/// Runs the finite-difference check of a loss over the inputs x̂, μ, logvar and z (x is data).
template <class Loss, class T>
void check_loss_gradients(const std::string& name, const Loss& L, const batch<T>& b) {
    const auto outputs = [&](const views<T>& v) { return loss::tokenizer_outputs<T>{b.x, v[0], v[1], v[2], v[3]}; };
    check_op_gradients<T>(
        name, [&](const views<T>& v) { return tensor<T>::full({}, T(L.evaluate(outputs(v)).total)); },
        [&](const tensor_view<T, cpu>& dy, const views<T>& v) {
            auto r = L.evaluate(outputs(v));
            const T s = dy.data()[0];
            std::vector<tensor<T>> g;
            g.push_back(ops::scale(r.gradients.dx_hat.view(), s));
            g.push_back(ops::scale(r.gradients.dmean.view(), s));
            g.push_back(ops::scale(r.gradients.dlogvar.view(), s));
            g.push_back(ops::scale(r.gradients.dz.view(), s));
            return g;
        },
        views<T>{b.x_hat, b.mean, b.logvar, b.z});
}

/// Compares a one-term (or composed) loss with the torch fixture `<reduction>_<key>`.
template <class Loss, class T>
void check_fixture(const fixture& f, Loss L, reduction mode, const std::string& key, double rtol, double atol) {
    L.mode = mode;
    const auto b = fixture_batch<T>(f);
    const auto r = L.evaluate(b.outputs());
    const std::string p = std::string(loss::to_string(mode)) + "_" + key;
    BOOST_TEST_CONTEXT(p) {
        BOOST_TEST(r.total == f.scalar(p), tt::tolerance(rtol));
        BOOST_TEST(r.breakdown.reduction_name() == loss::to_string(mode));
        check_close(r.gradients.dx_hat, f.get(p + "_dx_hat"), rtol, atol, p + " dx_hat");
        check_close(r.gradients.dmean, f.get(p + "_dmean"), rtol, atol, p + " dmean");
        check_close(r.gradients.dlogvar, f.get(p + "_dlogvar"), rtol, atol, p + " dlogvar");
        check_close(r.gradients.dz, f.get(p + "_dz"), rtol, atol, p + " dz");
    }
}
} // namespace

BOOST_AUTO_TEST_CASE(hand_computed_terms) {
    // Two images of two pixels; two latent "images" of two elements. x̂ − x = (0.5, 0 | −1, 0.5).
    auto x = tensor<double>::from_host({2, 2}, {1, 2, 3, 4});
    auto x_hat = tensor<double>::from_host({2, 2}, {1.5, 2, 2, 4.5});
    auto mean = tensor<double>::from_host({2, 2}, {0, 1, -1, 2});
    auto logvar = tensor<double>::from_host({2, 2}, {0, std::log(0.5), std::log(2.0), std::log(0.25)});
    auto z = tensor<double>::from_host({2, 2}, {1, -1, 2, 0});
    const loss::tokenizer_outputs<double> out{x, x_hat, mean, logvar, z};
    const auto e = std::exp(1.0);
    const auto tol = tt::tolerance(1e-14);

    loss::tokenizer_loss<rec_l1> l1;
    auto r = l1.evaluate(out);
    BOOST_TEST(r.total == 2.0 / 2);  // Σ|d| = 2 over the batch of 2
    BOOST_TEST(r.gradients.dx_hat.to_vector() == (std::vector<double>{0.5, 0, -0.5, 0.5}));  // sign/B, 0 at equality
    l1.mode = reduction::element_mean;
    r = l1.evaluate(out);
    BOOST_TEST(r.total == 2.0 / 4);
    BOOST_TEST(r.gradients.dx_hat.to_vector() == (std::vector<double>{0.25, 0, -0.25, 0.25}));

    loss::tokenizer_loss<rec_l2> l2;
    l2.term<rec_l2>().cfg.weight = 3;
    r = l2.evaluate(out);
    BOOST_TEST(r.total == 3 * 1.5 / 2);  // Σd² = 1.5
    BOOST_TEST(r.gradients.dx_hat.to_vector() == (std::vector<double>{1.5, 0, -3, 1.5}));  // 3·2d/B

    // VE with δ = 0: λ1·Σ 1/σ² = 0.1·(1 + 2 + 0.5 + 4); d/dlogvar = −λ1/σ² per element.
    loss::tokenizer_loss<loss::variance_expansion> ve{{loss::variance_expansion{{.weight = 0.1, .delta = 0.0}}}};
    r = ve.evaluate(out);
    BOOST_TEST(r.total == 0.75 / 2, tol);
    const std::vector<double> dve{-0.05, -0.1, -0.025, -0.2};
    for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(r.gradients.dlogvar.to_vector()[i] == dve[i], tol);
    // With δ: λ1/(σ² + δ), gradient −λ1·σ²/(σ² + δ)².
    ve.term<loss::variance_expansion>().cfg.delta = 0.5;
    r = ve.evaluate(out);
    BOOST_TEST(r.total == 0.1 * (1 / 1.5 + 1 / 1.0 + 1 / 2.5 + 1 / 0.75) / 2, tol);
    BOOST_TEST(r.gradients.dlogvar.to_vector()[2] == -0.1 * 2 / (2.5 * 2.5) / 2, tol);
    // The default δ leaves 1/σ² intact to a relative 1e-6 at σ² ≥ 1.
    BOOST_TEST(loss::variance_expansion{}.cfg.delta == 1e-6);
    BOOST_TEST(loss::variance_expansion{}.cfg.weight == 0.1);

    // Magnitude with weight 1, τ = 1: e^0 + e^0 + e^1 + e^−1; gradient sign(z)·e^{|z|−1}, 0 at z = 0.
    loss::tokenizer_loss<loss::magnitude_regularizer> mag{{loss::magnitude_regularizer{{.weight = 1.0, .tau = 1.0}}}};
    r = mag.evaluate(out);
    BOOST_TEST(r.total == (2 + e + 1 / e) / 2, tol);
    const std::vector<double> dmag{0.5, -0.5, e / 2, 0};
    for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(r.gradients.dz.to_vector()[i] == dmag[i], tol);
    BOOST_TEST(loss::magnitude_regularizer{}.cfg.weight == 1e-6);
    BOOST_TEST(loss::magnitude_regularizer{}.cfg.tau == 1.0);

    // KL with weight 1, σ² = (1, ½, 2, ¼) as above: ½(μ² + σ² − 1 − log σ²) = 0, ¼ + ln2/2, 1 − ln2/2,
    // 13/8 + ln2, in all 23/8 + ln2 over 2 images.
    loss::tokenizer_loss<loss::kl_divergence> kl{{loss::kl_divergence{{.weight = 1.0}}}};
    r = kl.evaluate(out);
    BOOST_TEST(r.total == (23.0 / 8 + std::log(2.0)) / 2, tol);
    const std::vector<double> dmu{0, 0.5, -0.5, 1}, dlv{0, -0.125, 0.25, -0.1875};  // μ/B, ½(σ² − 1)/B
    for (std::size_t i = 0; i < 4; ++i) {
        BOOST_TEST(r.gradients.dmean.to_vector()[i] == dmu[i], tol);
        BOOST_TEST(r.gradients.dlogvar.to_vector()[i] == dlv[i], tol);
    }
    BOOST_TEST(loss::kl_divergence{}.cfg.weight == 1e-6);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(torch_reference, T, real_types) {
    const auto f = load_fixture("loss.txt");
    const double rtol = std::is_same_v<T, double> ? 1e-12 : 2e-5;
    const double atol = std::is_same_v<T, double> ? 1e-18 : 1e-12;
    for (const auto mode : {reduction::per_image_sum, reduction::element_mean}) {
        check_fixture<loss::tokenizer_loss<rec_l1>, T>(f, {}, mode, "rec_l1", rtol, atol);
        check_fixture<loss::tokenizer_loss<rec_l2>, T>(f, {}, mode, "rec_l2", rtol, atol);
        check_fixture<loss::tokenizer_loss<loss::variance_expansion>, T>(f, {}, mode, "ve", rtol, atol);
        check_fixture<loss::tokenizer_loss<loss::magnitude_regularizer>, T>(f, {}, mode, "magnitude", rtol, atol);
        check_fixture<loss::tokenizer_loss<loss::kl_divergence>, T>(f, {}, mode, "kl", rtol, atol);
        check_fixture<full_loss, T>(f, {}, mode, "total", rtol, atol);

        loss::tokenizer_loss<loss::variance_expansion> wide{{loss::variance_expansion{{.weight = 0.1, .delta = 0.05}}}, mode};
        const auto b = fixture_batch<T>(f);
        const auto r = wide.evaluate(b.outputs());
        const std::string p = std::string(loss::to_string(mode)) + "_ve_delta005";
        BOOST_TEST(r.total == f.scalar(p), tt::tolerance(rtol));
        check_close(r.gradients.dlogvar, f.get(p + "_dlogvar"), rtol, atol, p);
    }
}

BOOST_AUTO_TEST_CASE(element_mean_rescales_every_term_together) {
    // Per term, element_mean = per_image_sum · B / (elements of the term's tensor).
    const auto b = smooth_batch<double>(3);
    full_loss a, m;
    m.mode = reduction::element_mean;
    const auto ra = a.evaluate(b.outputs()), rm = m.evaluate(b.outputs());
    const double pixels = 16, latents = 12;
    const double per[] = {pixels, latents, latents, latents};
    BOOST_REQUIRE_EQUAL(ra.breakdown.size(), 4u);
    for (std::size_t i = 0; i < 4; ++i) BOOST_TEST(rm.breakdown[i].second * per[i] == ra.breakdown[i].second, tt::tolerance(1e-13));
    BOOST_TEST(ra.breakdown.reduction_name() == "per_image_sum");
    BOOST_TEST(rm.breakdown.reduction_name() == "element_mean");
    BOOST_TEST((loss::parse_reduction("element_mean") == reduction::element_mean));
    BOOST_TEST((loss::parse_reduction("per_image_sum") == reduction::per_image_sum));
    BOOST_CHECK_THROW(loss::parse_reduction("mean"), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_of_each_term, T, real_types) {
    const auto b = smooth_batch<T>();
    for (const auto mode : {reduction::per_image_sum, reduction::element_mean}) {
        const std::string m(loss::to_string(mode));
        check_loss_gradients("rec_l1 " + m, loss::tokenizer_loss<rec_l1>{{}, mode}, b);
        check_loss_gradients("rec_l2 " + m, loss::tokenizer_loss<rec_l2>{{}, mode}, b);
        check_loss_gradients("ve " + m, loss::tokenizer_loss<loss::variance_expansion>{{}, mode}, b);
        check_loss_gradients("magnitude " + m, loss::tokenizer_loss<loss::magnitude_regularizer>{{}, mode}, b);
        check_loss_gradients("kl " + m, loss::tokenizer_loss<loss::kl_divergence>{{}, mode}, b);
        // A δ comparable to σ² makes the δ path matter.
        check_loss_gradients("ve delta 0.3 " + m,
                             loss::tokenizer_loss<loss::variance_expansion>{{loss::variance_expansion{{.weight = 0.1, .delta = 0.3}}}, mode}, b);
    }
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_of_the_composed_loss, T, real_types) {
    // The default λ2 = β = 1e-6 leave the magnitude and KL gradients of a sum near 1 below the
    // resolution of a finite difference of the total; weights of comparable size let the check
    // see every term's share (each term alone is checked at its defaults above).
    const auto b = smooth_batch<T>(3, 9);
    full_loss L{{rec_l1{}, loss::variance_expansion{}, loss::magnitude_regularizer{{.weight = 0.05, .tau = 1.0}},
                 loss::kl_divergence{{.weight = 0.1}}}};
    check_loss_gradients("composed per_image_sum", L, b);
    L.mode = reduction::element_mean;
    check_loss_gradients("composed element_mean", L, b);
    loss::tokenizer_loss<rec_l2, loss::variance_expansion, loss::kl_divergence> kl_loss{{rec_l2{}, loss::variance_expansion{}, loss::kl_divergence{{.weight = 0.3}}}};
    check_loss_gradients("rec_l2 + ve + kl", kl_loss, b);
}

BOOST_AUTO_TEST_CASE(gradients_are_zero_filled_then_accumulated) {
    // evaluate() starts from zero; the policies add; a policy called directly adds into what is there.
    const auto b = smooth_batch<double>();
    loss::tokenizer_loss<rec_l2, loss::kl_divergence> L;
    const auto r1 = L.evaluate(b.outputs());
    const auto r2 = L.evaluate(b.outputs());
    BOOST_TEST(r1.gradients.dx_hat.to_vector() == r2.gradients.dx_hat.to_vector());
    for (double v : r1.gradients.dz.to_vector()) BOOST_TEST(v == 0.0);  // no term depends on z directly

    auto g = loss::tokenizer_gradients<double>::zeros_like(b.outputs());
    ops::fill(g.dx_hat.view(), 1.0);
    const double v = rec_l2{}.accumulate(b.outputs(), g, reduction::per_image_sum);
    BOOST_TEST(v == r1.breakdown.at("rec_l2"), tt::tolerance(1e-15));
    for (std::int64_t i = 0; i < g.dx_hat.numel(); ++i)
        BOOST_TEST(g.dx_hat.data()[i] == 1.0 + r1.gradients.dx_hat.data()[i], tt::tolerance(1e-15));
    // Empty gradients: the value alone.
    loss::tokenizer_gradients<double> none;
    BOOST_TEST(rec_l2{}.accumulate(b.outputs(), none, reduction::per_image_sum) == v);
}

BOOST_AUTO_TEST_CASE(breakdown_names_order_and_total) {
    const auto b = smooth_batch<float>();
    full_loss L;
    static_assert(full_loss::names() == std::array<std::string_view, 4>{"rec_l1", "ve", "magnitude", "kl"});
    static_assert(loss::loss_term<rec_l2>);
    const auto r = L.evaluate({b.x, b.x_hat, b.mean, b.logvar, b.z});  // braced outputs: float on the cpu
    const std::vector<std::string_view> expected{"rec_l1", "ve", "magnitude", "kl"};
    BOOST_REQUIRE_EQUAL(r.breakdown.size(), expected.size());
    double sum = 0;
    std::size_t i = 0;
    for (const auto& [name, value] : r.breakdown) {
        BOOST_TEST(name == expected[i++]);
        BOOST_TEST(std::isfinite(value));
        sum += value;
    }
    BOOST_TEST(r.total == sum);
    BOOST_TEST(r.breakdown.reduction_name() == "per_image_sum");
    BOOST_TEST(r.finite());
    BOOST_TEST(!r.first_nonfinite_term().has_value());
    BOOST_CHECK_THROW(r.breakdown.at("lpips"), std::out_of_range);
    BOOST_TEST(loss::tokenizer_loss<rec_l2>::names()[0] == "rec_l2");
    // The five-view form gives the same result.
    const auto r5 = L.evaluate(b.x.view(), b.x_hat.view(), b.mean.view(), b.logvar.view(), b.z.view());
    BOOST_TEST(r5.total == r.total);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(latent_statistics_match_direct_computation, T, real_types) {
    const auto f = load_fixture("loss.txt");
    const auto b = fixture_batch<T>(f);
    const double tol = std::is_same_v<T, double> ? 1e-13 : 1e-6;
    const auto s = full_loss{}.evaluate(b.outputs()).latent;
    BOOST_TEST(s.sigma2_mean == f.scalar("sigma2_mean"), tt::tolerance(tol));
    const auto cm = f.get("channel_mean"), cs = f.get("channel_std");
    BOOST_REQUIRE_EQUAL(s.channel_mean.size(), 3u);
    for (std::size_t c = 0; c < 3; ++c) {
        BOOST_TEST(s.channel_mean[c] == cm.data()[c], tt::tolerance(tol));
        BOOST_TEST(s.channel_std[c] == cs.data()[c], tt::tolerance(tol));
    }
    BOOST_TEST(s.elements == 24);
    BOOST_TEST(s.per_channel == 8);

    // Direct computation on a larger batch, and batches merged = the whole set.
    const auto lv = random_tensor<T>({6, 4, 3, 5}, 21, 1), z = random_tensor<T>({6, 4, 3, 5}, 21, 2, 2.0);
    double s2 = 0;
    for (auto v : lv.span()) s2 += std::exp(double(v));
    s2 /= double(lv.numel());
    const auto whole = loss::summarize_latents(lv.view(), z.view());
    BOOST_TEST(whole.sigma2_mean == s2, tt::tolerance(tol));
    for (std::int64_t c = 0; c < 4; ++c) {
        double m = 0, q = 0;
        for (std::int64_t n = 0; n < 6; ++n)
            for (std::int64_t i = 0; i < 3; ++i)
                for (std::int64_t j = 0; j < 5; ++j) m += double(z.at(n, c, i, j));
        m /= 90;
        for (std::int64_t n = 0; n < 6; ++n)
            for (std::int64_t i = 0; i < 3; ++i)
                for (std::int64_t j = 0; j < 5; ++j) q += (double(z.at(n, c, i, j)) - m) * (double(z.at(n, c, i, j)) - m);
        BOOST_TEST(whole.channel_mean[static_cast<std::size_t>(c)] == m, tt::tolerance(tol));
        BOOST_TEST(whole.channel_std[static_cast<std::size_t>(c)] == std::sqrt(q / 89), tt::tolerance(tol));
    }
    loss::latent_statistics_accumulator acc;
    acc.add(lv.slice(0, 1), z.slice(0, 1));
    acc.add(lv.slice(1, 4), z.slice(1, 4));
    acc.add(lv.slice(4, 6), z.slice(4, 6));
    const auto merged = acc.result();
    BOOST_TEST(merged.sigma2_mean == whole.sigma2_mean, tt::tolerance(1e-13));
    for (std::size_t c = 0; c < 4; ++c) {
        BOOST_TEST(merged.channel_mean[c] == whole.channel_mean[c], tt::tolerance(1e-12));
        BOOST_TEST(merged.channel_std[c] == whole.channel_std[c], tt::tolerance(1e-12));
    }
    BOOST_TEST(merged.per_channel == 90);
    BOOST_CHECK_THROW(acc.add(lv.view().reshape({6, 2, 6, 5}), z.view().reshape({6, 2, 6, 5})), shape_error);
}

BOOST_AUTO_TEST_CASE(nonfinite_terms_are_named) {
    const auto nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    full_loss L;
    const auto expect = [&](const char* what, auto&& spoil, const char* term) {
        auto b = smooth_batch<float>();
        spoil(b);
        const auto r = L.evaluate(b.outputs());
        BOOST_TEST_CONTEXT(what) {
            BOOST_TEST(!r.finite());
            BOOST_REQUIRE(r.first_nonfinite_term().has_value());
            BOOST_TEST(*r.first_nonfinite_term() == term);
        }
    };
    expect("NaN pixel", [&](batch<float>& b) { b.x_hat.data()[5] = nan; }, "rec_l1");
    expect("NaN target", [&](batch<float>& b) { b.x.data()[0] = nan; }, "rec_l1");
    expect("NaN logvar", [&](batch<float>& b) { b.logvar.data()[3] = nan; }, "ve");
    expect("NaN z", [&](batch<float>& b) { b.z.data()[7] = nan; }, "magnitude");
    expect("Inf z", [&](batch<float>& b) { b.z.data()[7] = -inf; }, "magnitude");
    expect("NaN mean", [&](batch<float>& b) { b.mean.data()[1] = nan; }, "kl");
    // logvar = +Inf: 1/(σ² + δ) is 0 and VE stays finite; KL's σ² is infinite.
    expect("Inf logvar", [&](batch<float>& b) { b.logvar.data()[2] = inf; }, "kl");
    // A finite value whose float gradient overflows: exp(119)·λ2/B is beyond float's range.
    {
        auto b = smooth_batch<float>();
        b.z.data()[0] = 120.0f;
        const auto r = L.evaluate(b.outputs());
        BOOST_TEST(std::isfinite(r.breakdown.at("magnitude")));
        BOOST_REQUIRE(r.first_nonfinite_term().has_value());
        BOOST_TEST(*r.first_nonfinite_term() == "magnitude");
    }
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    const auto b = smooth_batch<float>();
    full_loss L;
    auto wrong_img = tensor<float>::zeros({2, 1, 4, 5});
    auto msg = shape_error_message([&] { (void)L.evaluate({b.x, wrong_img, b.mean, b.logvar, b.z}); });
    BOOST_TEST(msg.find("tokenizer_loss") == 0u, msg);
    BOOST_TEST(contains(msg, "(2, 1, 4, 4)"), msg);
    BOOST_TEST(contains(msg, "(2, 1, 4, 5)"), msg);
    auto wrong_lat = tensor<float>::zeros({2, 3, 2, 1});
    msg = shape_error_message([&] { (void)L.evaluate({b.x, b.x_hat, b.mean, wrong_lat, b.z}); });
    BOOST_TEST(msg.find("tokenizer_loss") == 0u, msg);
    BOOST_TEST(contains(msg, "(2, 3, 2, 1)"), msg);
    auto other_batch = tensor<float>::zeros({3, 3, 2, 2});
    msg = shape_error_message([&] { (void)L.evaluate({b.x, b.x_hat, other_batch, other_batch, other_batch}); });
    BOOST_TEST(msg.find("tokenizer_loss") == 0u, msg);
    BOOST_TEST(contains(msg, "(3, 3, 2, 2)"), msg);
    msg = shape_error_message([&] { (void)L.evaluate({b.x, b.x_hat, b.mean, tensor_view<float>{}, b.z}); });
    BOOST_TEST(contains(msg, "logvar is missing"), msg);

    // A policy called directly names itself; the ops name themselves.
    auto g = loss::tokenizer_gradients<float>::zeros_like(b.outputs());
    msg = shape_error_message([&] { (void)rec_l1{}.accumulate({b.x, wrong_img, b.mean, b.logvar, b.z}, g, reduction::per_image_sum); });
    BOOST_TEST(msg.find("rec_l1") == 0u, msg);
    BOOST_TEST(contains(msg, "(2, 1, 4, 5)"), msg);
    msg = shape_error_message([&] { (void)ops::squared_error_sum(b.x.view(), wrong_img.view()); });
    BOOST_TEST(msg.find("squared_error_sum") == 0u, msg);
    BOOST_TEST((contains(msg, "(2, 1, 4, 4)") && contains(msg, "(2, 1, 4, 5)")), msg);
    msg = shape_error_message([&] { (void)ops::inverse_variance_sum(b.logvar.view(), 1e-6, wrong_lat.view()); });
    BOOST_TEST(msg.find("inverse_variance_sum") == 0u, msg);
    BOOST_TEST((contains(msg, "(2, 3, 2, 1)") && contains(msg, "(2, 3, 2, 2)")), msg);
    msg = shape_error_message([&] { (void)ops::gaussian_kl_sum(b.mean.view(), wrong_lat.view()); });
    BOOST_TEST(msg.find("gaussian_kl_sum") == 0u, msg);
    msg = shape_error_message([&] { (void)ops::magnitude_penalty_sum(b.z.view(), 1.0, wrong_lat.view()); });
    BOOST_TEST(msg.find("magnitude_penalty_sum") == 0u, msg);
    msg = shape_error_message([&] { (void)ops::abs_error_sum(b.x.view(), b.x_hat.view(), wrong_img.view()); });
    BOOST_TEST(msg.find("abs_error_sum") == 0u, msg);
    msg = shape_error_message([&] { (void)loss::summarize_latents(b.logvar.view(), wrong_lat.view()); });
    BOOST_TEST(msg.find("latent_statistics") == 0u, msg);
    BOOST_CHECK_THROW((void)ops::inverse_variance_sum(b.logvar.view(), -1.0), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(results_do_not_depend_on_the_thread_count) {
    // 64 images of 1×32×32 and 64 latents of 4×8×8, spread over several fixed summation blocks.
    const auto x = random_tensor<float>({64, 1, 32, 32}, 31, 1), x_hat = random_tensor<float>({64, 1, 32, 32}, 31, 2);
    const auto mean = random_tensor<float>({64, 4, 8, 8}, 31, 3), logvar = random_tensor<float>({64, 4, 8, 8}, 31, 4);
    const auto z = random_tensor<float>({64, 4, 8, 8}, 31, 5);
    full_loss L;
    const int saved = omp_get_max_threads();
    std::vector<double> totals;
    std::vector<std::vector<double>> terms;
    for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        const auto r = L.evaluate(loss::tokenizer_outputs<float>{x, x_hat, mean, logvar, z});
        totals.push_back(r.total);
        terms.emplace_back();
        for (const auto& [name, v] : r.breakdown) terms.back().push_back(v);
    }
    omp_set_num_threads(saved);
    BOOST_TEST(totals[0] == totals[1]);
    BOOST_TEST(totals[0] == totals[2]);
    BOOST_TEST(terms[0] == terms[1]);
    BOOST_TEST(terms[0] == terms[2]);
}

// ---------------------------------------------------------------------------------------------
// THE THEORY CHECK: the VE equilibrium σ = (λ1/T)^¼.
//
// Decoder: x̂ = A·z per image, A fixed (P pixels × n latent elements), so its Jacobian is A and
// latent element i has T_i = Σ_j A_ji². Encoder: z = μ + σ ∘ ε with μ fixed; only logvar is
// optimized. Loss: reconstruction<l2> + variance_expansion (λ1 = 0.1, δ = 1e-6), both
// per_image_sum (sum over the image, mean over the batch). Over ε with E[ε] = 0, E[εεᵀ] = I,
//     E_ε Σ_j (x_j − (A(μ + σ∘ε))_j)² = Σ_j (x_j − (Aμ)_j)² + Σ_i σ_i² T_i,
// so per latent element the objective is σ_i² T_i + λ1/(σ_i² + δ), minimized at
// σ_i² = √(λ1/T_i) − δ, i.e. σ_i ≈ (λ1/T_i)^¼. The batch holds B = 2n copies of one image with
// ε_b = ±√n·e_i (each latent element perturbed alone, with both signs): the batch mean of εεᵀ is
// exactly I and of ε exactly 0, so the module's batch-mean reconstruction IS the expectation, and
// its gradients are the expectation's. With element_mean the reconstruction is divided by the P
// pixels and VE by the n latent elements, so the equilibrium becomes σ_i⁴ = λ1·P/(n·T_i).
// The gradient with respect to logvar is assembled from the module's own outputs: VE's dlogvar
// plus the reconstruction's dx̂ carried back through the decoder (dz = dx̂·A) and through
// z = μ + exp(logvar/2)·ε (dlogvar += dz·ε·σ/2), summed over the batch (every copy shares logvar).
// AdamW (no weight decay) descends it.
namespace {

constexpr double theory_lambda = 0.1, theory_delta = 1e-6;

template <class T>
struct linear_decoder_problem {
    static constexpr std::int64_t C = 2, h = 1, w = 2, n = C * h * w;  // latent (C, h, w)
    static constexpr std::int64_t P = 8;                              // image (1, 2, 4)
    std::int64_t B = 0;
    tensor<T> A;                 // (P, n) the decoder
    std::vector<double> T_i;     // (n) Σ_j A_ji²
    tensor<T> eps;               // (B, n)
    tensor<T> mu;                // (n)
    tensor<T> x;                 // (B, 1, 2, 4): B copies of one image
    tensor<T> mean, logvar, z;   // (B, C, h, w)
    loss::tokenizer_loss<loss::reconstruction<loss::l2>, loss::variance_expansion> L;

    /// A with columns rescaled to Σ_j A_ji² = t[i]; ε the exact ±√n·e_i design (mc_batch = 0) or
    /// mc_batch/2 N(0, 1) draws and their negatives (a Monte Carlo batch).
    linear_decoder_problem(const std::vector<double>& t, reduction mode, std::int64_t mc_batch = 0)
        : B(mc_batch > 0 ? mc_batch : 2 * n), A(random_tensor<T>({P, n}, 77, 1)), T_i(n, 0.0), eps(tensor<T>::zeros({B, n})),
          mu(random_tensor<T>({n}, 79, 3, 0.5)), x(tensor<T>::empty({B, 1, 2, 4})), mean(tensor<T>::empty({B, C, h, w})),
          logvar(tensor<T>::empty({B, C, h, w})), z(tensor<T>::empty({B, C, h, w})),
          L{{loss::reconstruction<loss::l2>{}, loss::variance_expansion{{.weight = theory_lambda, .delta = theory_delta}}}, mode} {
        BOOST_REQUIRE_EQUAL(static_cast<std::int64_t>(t.size()), n);
        T* a = A.data();
        for (std::int64_t i = 0; i < n; ++i) {
            double norm2 = 0;
            for (std::int64_t j = 0; j < P; ++j) norm2 += double(a[j * n + i]) * double(a[j * n + i]);
            for (std::int64_t j = 0; j < P; ++j) a[j * n + i] = T(double(a[j * n + i]) * std::sqrt(t[static_cast<std::size_t>(i)] / norm2));
            for (std::int64_t j = 0; j < P; ++j) T_i[static_cast<std::size_t>(i)] += double(a[j * n + i]) * double(a[j * n + i]);
        }
        if (mc_batch > 0) {
            const auto half = random_tensor<T>({B / 2, n}, 78, 2);
            for (std::int64_t k = 0; k < (B / 2) * n; ++k) {
                eps.data()[k] = half.data()[k];
                eps.data()[(B / 2) * n + k] = -half.data()[k];
            }
        } else {
            for (std::int64_t i = 0; i < n; ++i) {
                eps.data()[i * n + i] = T(std::sqrt(double(n)));
                eps.data()[(n + i) * n + i] = T(-std::sqrt(double(n)));
            }
        }
        const auto x_one = random_tensor<T>({P}, 79, 4);
        for (std::int64_t b = 0; b < B; ++b) {
            for (std::int64_t j = 0; j < P; ++j) x.data()[b * P + j] = x_one.data()[j];
            for (std::int64_t i = 0; i < n; ++i) mean.data()[b * n + i] = mu.data()[i];
        }
    }

    /// The loss at logvar lv (n) through the module, and its gradient with respect to lv.
    loss::tokenizer_loss_result<T> evaluate(const std::vector<double>& lv, std::vector<double>& grad) {
        std::vector<double> sigma(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < sigma.size(); ++i) sigma[i] = std::exp(0.5 * lv[i]);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t i = 0; i < n; ++i) {
                const auto k = static_cast<std::size_t>(i);
                logvar.data()[b * n + i] = T(lv[k]);
                z.data()[b * n + i] = T(double(mu.data()[i]) + sigma[k] * double(eps.data()[b * n + i]));
            }
        const auto x_hat = ops::matmul(z.view().reshape({B, n}), A.view(), false, true).reshape({B, 1, 2, 4});
        auto r = L.evaluate(loss::tokenizer_outputs<T>{x, x_hat, mean, logvar, z});
        const auto dz = ops::matmul(r.gradients.dx_hat.view().reshape({B, P}), A.view());  // (B, n) = dx̂·A
        grad.assign(static_cast<std::size_t>(n), 0.0);
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t i = 0; i < n; ++i) {
                const std::int64_t k = b * n + i;
                const double dzk = double(dz.data()[k]) + double(r.gradients.dz.data()[k]);
                grad[static_cast<std::size_t>(i)] +=
                    double(r.gradients.dlogvar.data()[k]) + dzk * double(eps.data()[k]) * sigma[static_cast<std::size_t>(i)] / 2;
            }
        return r;
    }

    /// rec(μ) = Σ_j (x_j − (Aμ)_j)², the reconstruction at σ = 0.
    double rec_at_mean() const {
        const auto x_mu = ops::matmul(mu.view().reshape({1, n}), A.view(), false, true);
        double s = 0;
        for (std::int64_t j = 0; j < P; ++j) s += std::pow(double(x_mu.data()[j]) - double(x.data()[j]), 2);
        return s;
    }
    /// λ as the equilibrium sees it: λ1 for per_image_sum, λ1·P/n for element_mean.
    double lambda_eff() const { return L.mode == reduction::per_image_sum ? theory_lambda : theory_lambda * double(P) / double(n); }
};

struct logvar_only {  // the one parameter being optimized: logvar of n latent elements
    using value_type = double;
    using device_type = cpu;
    nn::parameter<double, cpu> logvar;
    template <class F>
    void for_each_parameter(F&& f, const std::string& prefix = {}) { f(nn::join_name(prefix, "logvar"), logvar); }
};

/// Optimizes logvar from 0 (σ = 1, far from every equilibrium) and checks each σ against
/// (λ_eff/T_i)^¼ within 2% and against the exact minimizer √(√(λ_eff/T_i) − δ).
template <class T>
void check_equilibrium(const char* what, const std::vector<double>& t, reduction mode, double exact_tolerance) {
    linear_decoder_problem<T> pb(t, mode);
    std::vector<double> grad;
    {
        // The module's batch mean is the expectation: at σ² = 1 it holds rec(μ) + Σ T_i and λ1·Σ 1/(1 + δ).
        const auto r = pb.evaluate(std::vector<double>(pb.n, 0.0), grad);
        double spread = 0;
        for (double ti : pb.T_i) spread += ti;
        const bool per_image = mode == reduction::per_image_sum;
        BOOST_TEST(r.breakdown.at("rec_l2") == (pb.rec_at_mean() + spread) / (per_image ? 1.0 : double(pb.P)),
                   tt::tolerance(std::is_same_v<T, double> ? 1e-12 : 1e-5));
        BOOST_TEST(r.breakdown.at("ve") == theory_lambda * double(pb.n) / (1 + theory_delta) / (per_image ? 1.0 : double(pb.n)),
                   tt::tolerance(1e-6));
    }
    logvar_only model{nn::parameter<double, cpu>({pb.n})};
    optim::adamw<double> opt(model, {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-12, .weight_decay = 0.0});
    const int steps = 4000;
    std::vector<double> lv(static_cast<std::size_t>(pb.n), 0.0);
    for (int step = 0; step < steps; ++step) {
        // The step size decays geometrically to 1e-4 of its start, so Adam settles instead of hovering.
        opt.set_lr(0.05 * std::pow(1e-4, double(step) / steps));
        for (std::size_t i = 0; i < lv.size(); ++i) lv[i] = model.logvar.value.data()[i];
        (void)pb.evaluate(lv, grad);
        for (std::size_t i = 0; i < lv.size(); ++i) model.logvar.grad.data()[i] = grad[i];
        opt.step();
    }
    for (std::int64_t i = 0; i < pb.n; ++i) {
        const double ti = pb.T_i[static_cast<std::size_t>(i)];
        const double sigma = std::exp(0.5 * model.logvar.value.data()[i]);
        const double expected = std::pow(pb.lambda_eff() / ti, 0.25);
        const double exact = std::sqrt(std::sqrt(pb.lambda_eff() / ti) - theory_delta);
        BOOST_TEST_MESSAGE(what << ": T " << ti << " sigma " << sigma << " vs (lambda/T)^1/4 " << expected << " (relative "
                                << sigma / expected - 1 << ")");
        BOOST_TEST(std::abs(sigma / expected - 1) < 0.02, what << " T " << ti << ": sigma " << sigma << " vs " << expected);
        BOOST_TEST(std::abs(sigma / exact - 1) < exact_tolerance, what << " T " << ti << ": sigma " << sigma << " vs exact " << exact);
    }
}
} // namespace

BOOST_AUTO_TEST_CASE_TEMPLATE(theory_check_ve_equilibrium, T, real_types) {
    // T_i from 1 to 1000: equilibria σ² = √(λ1/T_i) from 0.32 down to 0.01, through the paper's
    // 0.06 (T ≈ 27.8).
    const double exact_tol = std::is_same_v<T, double> ? 1e-5 : 1e-4;
    check_equilibrium<T>("per_image_sum", {1.0, 10.0, 0.1 / (0.06 * 0.06), 1000.0}, reduction::per_image_sum, exact_tol);
    check_equilibrium<T>("per_image_sum, other T", {3.0, 50.0, 200.0, 0.5}, reduction::per_image_sum, exact_tol);
    check_equilibrium<T>("element_mean", {1.0, 10.0, 0.1 / (0.06 * 0.06), 1000.0}, reduction::element_mean, exact_tol);
}

BOOST_AUTO_TEST_CASE(theory_check_monte_carlo_gradient) {
    // With 2^16 random ε (antithetic pairs) instead of the exact design, the module's batch-mean
    // reconstruction and its logvar gradient estimate the expectation's: rec(μ) + Σ σ_i² T_i and
    // σ_i² T_i − λ1·σ_i²/(σ_i² + δ)², to the ~1% that the sampled second moments of ε allow (the
    // gradient's error measured against the two opposing pulls, as their difference may be small).
    linear_decoder_problem<double> pb({1.0, 10.0, 0.1 / (0.06 * 0.06), 1000.0}, reduction::per_image_sum, 1 << 16);
    const std::vector<double> lv{std::log(0.5), std::log(0.3), std::log(0.03), std::log(0.02)};  // off equilibrium
    std::vector<double> grad;
    const auto r = pb.evaluate(lv, grad);
    double expected_rec = pb.rec_at_mean();
    for (std::size_t i = 0; i < lv.size(); ++i) expected_rec += std::exp(lv[i]) * pb.T_i[i];
    BOOST_TEST(r.breakdown.at("rec_l2") == expected_rec, tt::tolerance(0.01));
    for (std::size_t i = 0; i < lv.size(); ++i) {
        const double s = std::exp(lv[i]);
        const double rec_pull = s * pb.T_i[i], ve_pull = theory_lambda * s / ((s + theory_delta) * (s + theory_delta));
        BOOST_TEST_MESSAGE("monte carlo: T " << pb.T_i[i] << " dlogvar " << grad[i] << " vs expectation " << rec_pull - ve_pull);
        BOOST_TEST(std::abs(grad[i] - (rec_pull - ve_pull)) < 0.02 * (rec_pull + ve_pull),
                   "T " << pb.T_i[i] << ": dlogvar " << grad[i] << " vs " << rec_pull - ve_pull);
    }
}
