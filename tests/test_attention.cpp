#define BOOST_TEST_MODULE attention
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <tuple>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/attention.hpp"
#include "vediff/ops/attention.hpp"

using namespace vediff;
using namespace vediff::testing;
using testing::check_close;
using testing::random_tensor;

namespace {

using real_types = std::tuple<double, float>;

static_assert(nn::layer<nn::multi_head_attention_core<float>>);
static_assert(nn::layer<nn::multi_head_attention_core<double>>);

template <class T>
double tolerance() {
    return std::is_same_v<T, double> ? 1e-12 : 2e-5;
}

template <class T>
using views = std::vector<tensor_view<T, cpu>>;

/// softmax(scale·q·kᵀ)·v written out with loops, as an independent reference.
tensor<double> naive_attention(const tensor<double>& q, const tensor<double>& k, const tensor<double>& v, double scale) {
    const std::int64_t B = q.dim(0), H = q.dim(1), nq = q.dim(2), nk = k.dim(2), d = q.dim(3), dv = v.dim(3);
    auto out = tensor<double>::zeros({B, H, nq, dv});
    std::vector<double> s(static_cast<std::size_t>(nk));
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h)
            for (std::int64_t i = 0; i < nq; ++i) {
                double m = -1e300, z = 0;
                for (std::int64_t j = 0; j < nk; ++j) {
                    double dot = 0;
                    for (std::int64_t c = 0; c < d; ++c) dot += q.at(b, h, i, c) * k.at(b, h, j, c);
                    s[j] = scale * dot;
                    m = std::max(m, s[j]);
                }
                for (auto& e : s) z += (e = std::exp(e - m));
                for (std::int64_t j = 0; j < nk; ++j)
                    for (std::int64_t c = 0; c < dv; ++c) out.at(b, h, i, c) += s[j] / z * v.at(b, h, j, c);
            }
    return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(against_torch)

BOOST_AUTO_TEST_CASE_TEMPLATE(multi_head_with_unequal_lengths, T, real_types) {
    const auto f = testing::load_fixture("attention.txt");
    auto q = f.get<T>("heads_q"), k = f.get<T>("heads_k"), v = f.get<T>("heads_v"), dout = f.get<T>("heads_dout");
    auto r = ops::attention(q.view(), k.view(), v.view());
    check_close(r.out, f.get("heads_out"), tolerance<T>(), tolerance<T>(), "out");
    check_close(r.saved.probs, f.get("heads_probs"), tolerance<T>(), tolerance<T>(), "probs");
    auto g = ops::attention_backward(dout.view(), q.view(), k.view(), v.view(), r.saved);
    check_close(g.dq, f.get("heads_dq"), tolerance<T>(), tolerance<T>(), "dq");
    check_close(g.dk, f.get("heads_dk"), tolerance<T>(), tolerance<T>(), "dk");
    check_close(g.dv, f.get("heads_dv"), tolerance<T>(), tolerance<T>(), "dv");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(packed_qkv_as_in_dit, T, real_types) {
    const auto f = testing::load_fixture("attention.txt");
    auto qkv = f.get<T>("packed_qkv"), dout = f.get<T>("packed_dout");
    auto r = ops::packed_attention(qkv.view(), 3);
    check_close(r.out, f.get("packed_out"), tolerance<T>(), tolerance<T>(), "out");
    check_close(r.saved.probs, f.get("packed_probs"), tolerance<T>(), tolerance<T>(), "probs");
    auto dqkv = ops::packed_attention_backward(dout.view(), qkv.view(), r.saved, 3);
    check_close(dqkv, f.get("packed_dqkv"), tolerance<T>(), tolerance<T>(), "dqkv");

    nn::multi_head_attention_core<T> layer({.heads = 3});
    auto y = layer.forward(qkv);
    check_close(y, f.get("packed_out"), tolerance<T>(), tolerance<T>(), "layer out");
    check_close(layer.backward(dout), f.get("packed_dqkv"), tolerance<T>(), tolerance<T>(), "layer dqkv");
}

BOOST_AUTO_TEST_CASE_TEMPLATE(spatial_as_in_ldm_attn_block, T, real_types) {
    const auto f = testing::load_fixture("attention.txt");
    auto q = f.get<T>("spatial_q"), k = f.get<T>("spatial_k"), v = f.get<T>("spatial_v"), dout = f.get<T>("spatial_dout");
    auto r = ops::spatial_attention(q.view(), k.view(), v.view());
    check_close(r.out, f.get("spatial_out"), tolerance<T>(), tolerance<T>(), "out");
    check_close(r.saved.probs, f.get("spatial_probs"), tolerance<T>(), tolerance<T>(), "probs");
    auto g = ops::spatial_attention_backward(dout.view(), q.view(), k.view(), v.view(), r.saved);
    check_close(g.dq, f.get("spatial_dq"), tolerance<T>(), tolerance<T>(), "dq");
    check_close(g.dk, f.get("spatial_dk"), tolerance<T>(), tolerance<T>(), "dk");
    check_close(g.dv, f.get("spatial_dv"), tolerance<T>(), tolerance<T>(), "dv");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(closed_forms)

BOOST_AUTO_TEST_CASE(equal_keys_average_the_values) {
    // Every key the same: uniform probabilities, each output row the mean of v's rows.
    auto q = random_tensor<double>({1, 2, 3, 4}, 1);
    auto k = tensor<double>::full({1, 2, 5, 4}, 0.7);
    auto v = random_tensor<double>({1, 2, 5, 3}, 2);
    auto r = ops::attention(q.view(), k.view(), v.view());
    for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t i = 0; i < 3; ++i) {
            for (std::int64_t j = 0; j < 5; ++j) BOOST_TEST(r.saved.probs.at(0, h, i, j) == 0.2, boost::test_tools::tolerance(1e-14));
            for (std::int64_t c = 0; c < 3; ++c) {
                double mean = 0;
                for (std::int64_t j = 0; j < 5; ++j) mean += v.at(0, h, j, c) / 5;
                BOOST_TEST(r.out.at(0, h, i, c) == mean, boost::test_tools::tolerance(1e-13));
            }
        }
}

BOOST_AUTO_TEST_CASE(sharp_scale_selects_the_matching_key) {
    // One-hot queries and keys with a large scale: query i attends (almost) only to key i.
    auto q = tensor<double>::zeros({1, 1, 3, 3});
    auto k = tensor<double>::zeros({1, 1, 3, 3});
    for (int i = 0; i < 3; ++i) q.at(0, 0, i, i) = k.at(0, 0, i, i) = 1.0;
    auto v = random_tensor<double>({1, 1, 3, 2}, 3);
    auto r = ops::attention(q.view(), k.view(), v.view(), 100.0);
    for (int i = 0; i < 3; ++i)
        for (int c = 0; c < 2; ++c) BOOST_TEST(r.out.at(0, 0, i, c) == v.at(0, 0, i, c), boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(large_sizes_match_a_naive_loop_and_rows_sum_to_one) {
    // Large enough for the parallel loop and Eigen's blocked products.
    auto q = random_tensor<double>({2, 4, 40, 32}, 4), k = random_tensor<double>({2, 4, 56, 32}, 5);
    auto v = random_tensor<double>({2, 4, 56, 24}, 6);
    auto r = ops::attention(q.view(), k.view(), v.view());
    check_close(r.out, naive_attention(q, k, v, 1.0 / std::sqrt(32.0)), 1e-12, 1e-12, "out");
    for (std::int64_t row = 0; row < 2 * 4 * 40; ++row) {
        double s = 0;
        for (std::int64_t j = 0; j < 56; ++j) s += r.saved.probs.data()[row * 56 + j];
        BOOST_TEST(std::abs(s - 1) < 1e-14);
    }
}

BOOST_AUTO_TEST_CASE(float_products_match_double_off_the_kernel_tiles) {
    // Tokens-major float operands take small_gemm's AVX-512 kernel (where built with it); double
    // operands Eigen's products. Sizes off its 8 × 32 tiles, forward and backward, heads and
    // packed layouts.
    const auto as_float = [](const tensor<double>& x) {
        const auto v = x.to_vector();
        const std::vector<float> f(v.begin(), v.end());
        return tensor<float>::from_host(x.shape(), std::span<const float>(f));
    };
    auto q = random_tensor<double>({2, 3, 37, 19}, 31), k = random_tensor<double>({2, 3, 45, 19}, 32);
    auto v = random_tensor<double>({2, 3, 45, 40}, 33), dout = random_tensor<double>({2, 3, 37, 40}, 34);
    auto ref = ops::attention(q.view(), k.view(), v.view());
    auto g = ops::attention_backward(dout.view(), q.view(), k.view(), v.view(), ref.saved);
    auto qf = as_float(q), kf = as_float(k), vf = as_float(v), doutf = as_float(dout);
    auto r = ops::attention(qf.view(), kf.view(), vf.view());
    auto gf = ops::attention_backward(doutf.view(), qf.view(), kf.view(), vf.view(), r.saved);
    check_close(r.out, ref.out, 1e-5, 1e-5, "out");
    check_close(r.saved.probs, ref.saved.probs, 1e-5, 1e-5, "probs");
    check_close(gf.dq, g.dq, 1e-4, 1e-4, "dq");
    check_close(gf.dk, g.dk, 1e-4, 1e-4, "dk");
    check_close(gf.dv, g.dv, 1e-4, 1e-4, "dv");

    // A DiT-S-like packed qkv (64 tokens, head dim 64) plus a ragged one (13 tokens, head dim 12).
    for (auto [n, heads, hd] : {std::array<std::int64_t, 3>{64, 2, 64}, std::array<std::int64_t, 3>{13, 3, 12}}) {
        auto qkv = random_tensor<double>({2, n, 3 * heads * hd}, 35), dy = random_tensor<double>({2, n, heads * hd}, 36);
        auto pr = ops::packed_attention(qkv.view(), heads);
        auto dqkv = ops::packed_attention_backward(dy.view(), qkv.view(), pr.saved, heads);
        auto qkvf = as_float(qkv), dyf = as_float(dy);
        auto prf = ops::packed_attention(qkvf.view(), heads);
        check_close(prf.out, pr.out, 1e-5, 1e-5, "packed out");
        check_close(ops::packed_attention_output(qkvf.view(), heads), pr.out, 1e-5, 1e-5, "packed output-only");
        check_close(ops::packed_attention_backward(dyf.view(), qkvf.view(), prf.saved, heads), dqkv, 1e-4, 1e-4, "packed dqkv");
    }
}

BOOST_AUTO_TEST_CASE(packed_and_spatial_layouts_agree_with_heads_layout) {
    const std::int64_t B = 2, N = 7, heads = 3, hd = 4, D = heads * hd;
    auto qkv = random_tensor<double>({B, N, 3 * D}, 8);
    auto dout = random_tensor<double>({B, N, D}, 9);
    // Split as DiT does: qkv.reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4).
    std::array<tensor<double>, 3> parts{tensor<double>({B, heads, N, hd}), tensor<double>({B, heads, N, hd}),
                                        tensor<double>({B, heads, N, hd})};
    auto dout_heads = tensor<double>({B, heads, N, hd});
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t n = 0; n < N; ++n)
            for (std::int64_t h = 0; h < heads; ++h)
                for (std::int64_t c = 0; c < hd; ++c) {
                    for (int p = 0; p < 3; ++p) parts[p].at(b, h, n, c) = qkv.at(b, n, p * D + h * hd + c);
                    dout_heads.at(b, h, n, c) = dout.at(b, n, h * hd + c);
                }
    auto packed = ops::packed_attention(qkv.view(), heads);
    auto ref = ops::attention(parts[0].view(), parts[1].view(), parts[2].view());
    auto dqkv = ops::packed_attention_backward(dout.view(), qkv.view(), packed.saved, heads);
    auto g = ops::attention_backward(dout_heads.view(), parts[0].view(), parts[1].view(), parts[2].view(), ref.saved);
    const tensor<double>* grads[] = {&g.dq, &g.dk, &g.dv};
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t n = 0; n < N; ++n)
            for (std::int64_t h = 0; h < heads; ++h)
                for (std::int64_t c = 0; c < hd; ++c) {
                    BOOST_TEST(packed.out.at(b, n, h * hd + c) == ref.out.at(b, h, n, c), boost::test_tools::tolerance(1e-13));
                    for (int p = 0; p < 3; ++p)
                        BOOST_TEST(dqkv.at(b, n, p * D + h * hd + c) == grads[p]->at(b, h, n, c), boost::test_tools::tolerance(1e-12));
                }

    // The output-only form (inference) computes the same values without keeping probabilities.
    BOOST_TEST(ops::packed_attention_output(qkv.view(), heads).to_vector() == packed.out.to_vector(), boost::test_tools::per_element());

    // Channels-first (B, C, S) is the heads layout with H = 1 after a transpose.
    auto qs = random_tensor<double>({B, 5, 6}, 10), ks = random_tensor<double>({B, 5, 8}, 11), vs = random_tensor<double>({B, 3, 8}, 12);
    auto transpose = [](const tensor<double>& x) {
        auto t = tensor<double>({x.dim(0), 1, x.dim(2), x.dim(1)});
        for (std::int64_t b = 0; b < x.dim(0); ++b)
            for (std::int64_t c = 0; c < x.dim(1); ++c)
                for (std::int64_t s = 0; s < x.dim(2); ++s) t.at(b, 0, s, c) = x.at(b, c, s);
        return t;
    };
    auto spatial = ops::spatial_attention(qs.view(), ks.view(), vs.view());
    auto ref_s = ops::attention(transpose(qs).view(), transpose(ks).view(), transpose(vs).view());
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t c = 0; c < 3; ++c)
            for (std::int64_t s = 0; s < 6; ++s)
                BOOST_TEST(spatial.out.at(b, c, s) == ref_s.out.at(b, 0, s, c), boost::test_tools::tolerance(1e-13));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE_TEMPLATE(attention_op_multi_head_unequal_lengths, T, real_types) {
    auto q = random_tensor<T>({2, 3, 4, 5}, 21), k = random_tensor<T>({2, 3, 6, 5}, 22), v = random_tensor<T>({2, 3, 6, 3}, 23);
    testing::check_op_gradients<T>(
        "attention", [](const views<T>& in) { return std::move(ops::attention(in[0], in[1], in[2]).out); },
        [](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::attention(in[0], in[1], in[2]);
            auto g = ops::attention_backward(dy, in[0], in[1], in[2], r.saved);
            std::vector<tensor<T>> out;
            out.push_back(std::move(g.dq));
            out.push_back(std::move(g.dk));
            out.push_back(std::move(g.dv));
            return out;
        },
        {q, k, v});
}

BOOST_AUTO_TEST_CASE(attention_op_large_with_explicit_scale) {
    auto q = random_tensor<double>({2, 4, 24, 16}, 24), k = random_tensor<double>({2, 4, 40, 16}, 25);
    auto v = random_tensor<double>({2, 4, 40, 8}, 26);
    testing::gradcheck_options<double> opt;
    opt.max_elements = 300;
    testing::check_op_gradients<double>(
        "attention (large)", [](const views<double>& in) { return std::move(ops::attention(in[0], in[1], in[2], 0.3).out); },
        [](const tensor_view<double, cpu>& dy, const views<double>& in) {
            auto r = ops::attention(in[0], in[1], in[2], 0.3);
            auto g = ops::attention_backward(dy, in[0], in[1], in[2], r.saved, 0.3);
            std::vector<tensor<double>> out;
            out.push_back(std::move(g.dq));
            out.push_back(std::move(g.dk));
            out.push_back(std::move(g.dv));
            return out;
        },
        {q, k, v}, opt);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(packed_and_spatial_ops, T, real_types) {
    auto qkv = random_tensor<T>({2, 5, 24}, 31);
    testing::check_op_gradients<T>(
        "packed_attention", [](const views<T>& in) { return std::move(ops::packed_attention(in[0], 2).out); },
        [](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::packed_attention(in[0], 2);
            std::vector<tensor<T>> out;
            out.push_back(ops::packed_attention_backward(dy, in[0], r.saved, 2));
            return out;
        },
        {qkv});
    auto q = random_tensor<T>({2, 4, 6}, 32), k = random_tensor<T>({2, 4, 5}, 33), v = random_tensor<T>({2, 3, 5}, 34);
    testing::check_op_gradients<T>(
        "spatial_attention", [](const views<T>& in) { return std::move(ops::spatial_attention(in[0], in[1], in[2]).out); },
        [](const tensor_view<T, cpu>& dy, const views<T>& in) {
            auto r = ops::spatial_attention(in[0], in[1], in[2]);
            auto g = ops::spatial_attention_backward(dy, in[0], in[1], in[2], r.saved);
            std::vector<tensor<T>> out;
            out.push_back(std::move(g.dq));
            out.push_back(std::move(g.dk));
            out.push_back(std::move(g.dv));
            return out;
        },
        {q, k, v});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(multi_head_attention_core_layer, T, real_types) {
    nn::multi_head_attention_core<T> attn({.heads = 4});
    BOOST_TEST(nn::parameter_count(attn) == 0);
    testing::check_layer_gradients("multi_head_attention_core", attn, {2, 6, 3 * 16});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shape_errors)

BOOST_AUTO_TEST_CASE(heads_layout) {
    auto q = tensor<float>::zeros({2, 3, 4, 8}), k = tensor<float>::zeros({2, 3, 6, 7}), v = tensor<float>::zeros({2, 3, 6, 5});
    const auto msg = shape_error_message([&] { (void)ops::attention(q.view(), k.view(), v.view()); });
    BOOST_TEST(contains(msg, "attention"));
    BOOST_TEST(contains(msg, "(2, 3, 4, 8)"));
    BOOST_TEST(contains(msg, "(2, 3, 6, 7)"));

    auto k8 = tensor<float>::zeros({2, 3, 6, 8});
    auto r = ops::attention(q.view(), k8.view(), v.view());
    auto wrong_probs = tensor<float>::zeros({2, 3, 4, 5});
    const auto pmsg = shape_error_message([&] { (void)ops::attention_backward(r.out.view(), q.view(), k8.view(), v.view(), ops::attention_saved<float, cpu>{std::move(wrong_probs)}); });
    BOOST_TEST(contains(pmsg, "attention_backward"));
    BOOST_TEST(contains(pmsg, "(2, 3, 4, 6)"));
    BOOST_TEST(contains(pmsg, "(2, 3, 4, 5)"));
    const auto dmsg = shape_error_message([&] { (void)ops::attention_backward(q.view(), q.view(), k8.view(), v.view(), r.saved); });
    BOOST_TEST(contains(dmsg, "dout"));
    BOOST_TEST(contains(dmsg, "(2, 3, 4, 5)"));
}

BOOST_AUTO_TEST_CASE(packed_layout) {
    auto qkv = tensor<float>::zeros({2, 5, 35});
    const auto msg = shape_error_message([&] { (void)ops::packed_attention(qkv.view(), 3); });
    BOOST_TEST(contains(msg, "packed_attention"));
    BOOST_TEST(contains(msg, "(2, 5, 35)"));
    BOOST_TEST(contains(msg, "3 heads"));
    nn::multi_head_attention_core<float> attn({.heads = 5});
    auto x = tensor<float>::zeros({2, 5, 36});
    BOOST_TEST(contains(shape_error_message([&] { (void)attn.forward(x); }), "(2, 5, 36)"));
}

BOOST_AUTO_TEST_CASE(spatial_layout) {
    auto q = tensor<float>::zeros({2, 4, 9}), k = tensor<float>::zeros({2, 5, 9}), v = tensor<float>::zeros({2, 4, 9});
    const auto msg = shape_error_message([&] { (void)ops::spatial_attention(q.view(), k.view(), v.view()); });
    BOOST_TEST(contains(msg, "spatial_attention"));
    BOOST_TEST(contains(msg, "(2, 4, 9)"));
    BOOST_TEST(contains(msg, "(2, 5, 9)"));
}

BOOST_AUTO_TEST_SUITE_END()
