#define BOOST_TEST_MODULE conv
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <omp.h>

#include "support/fixture.hpp"
#include "support/errors.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/ops/conv.hpp"

using namespace vediff;
using testing::check_close;
using testing::contains;
using testing::shape_error_message;
using testing::random_tensor;

namespace {

/// Direct 7-loop convolution in double and its adjoints: the definition, free of im2col.
struct naive_conv {
    conv2d_geometry g;

    // Input pixel read by output (oh, ow) at kernel tap (i, j), or false when it falls in the padding.
    bool source(std::int64_t oh, std::int64_t ow, std::int64_t i, std::int64_t j, std::int64_t& ih, std::int64_t& iw) const {
        ih = oh * g.stride_h - g.pad_top + i;
        iw = ow * g.stride_w - g.pad_left + j;
        return ih >= 0 && ih < g.in_h && iw >= 0 && iw < g.in_w;
    }

    template <class F>
    void for_each_tap(F&& f) const {
        for (std::int64_t n = 0; n < g.batch; ++n)
            for (std::int64_t o = 0; o < g.out_channels; ++o)
                for (std::int64_t c = 0; c < g.in_channels; ++c)
                    for (std::int64_t oh = 0; oh < g.out_h; ++oh)
                        for (std::int64_t ow = 0; ow < g.out_w; ++ow)
                            for (std::int64_t i = 0; i < g.kernel_h; ++i)
                                for (std::int64_t j = 0; j < g.kernel_w; ++j) {
                                    std::int64_t ih, iw;
                                    if (!source(oh, ow, i, j, ih, iw)) continue;
                                    const std::int64_t xi = ((n * g.in_channels + c) * g.in_h + ih) * g.in_w + iw;
                                    const std::int64_t wi = ((o * g.in_channels + c) * g.kernel_h + i) * g.kernel_w + j;
                                    const std::int64_t yi = ((n * g.out_channels + o) * g.out_h + oh) * g.out_w + ow;
                                    f(xi, wi, yi);
                                }
    }

    template <class T>
    tensor<double, cpu> forward(const tensor_view<T, cpu>& x, const tensor_view<T, cpu>& w, const T* bias) const {
        auto y = tensor<double, cpu>::zeros({g.batch, g.out_channels, g.out_h, g.out_w});
        for_each_tap([&](auto xi, auto wi, auto yi) { y.data()[yi] += double(x.data()[xi]) * double(w.data()[wi]); });
        if (bias)
            for (std::int64_t i = 0; i < y.numel(); ++i) y.data()[i] += double(bias[(i / (g.out_h * g.out_w)) % g.out_channels]);
        return y;
    }

    template <class T>
    void backward(const tensor_view<T, cpu>& dy, const tensor_view<T, cpu>& x, const tensor_view<T, cpu>& w,
                  tensor<double, cpu>& dx, tensor<double, cpu>& dw, tensor<double, cpu>& db) const {
        dx = tensor<double, cpu>::zeros(x.shape());
        dw = tensor<double, cpu>::zeros(w.shape());
        db = tensor<double, cpu>::zeros({g.out_channels});
        for_each_tap([&](auto xi, auto wi, auto yi) {
            dx.data()[xi] += double(dy.data()[yi]) * double(w.data()[wi]);
            dw.data()[wi] += double(dy.data()[yi]) * double(x.data()[xi]);
        });
        for (std::int64_t i = 0; i < dy.numel(); ++i) db.data()[(i / (g.out_h * g.out_w)) % g.out_channels] += double(dy.data()[i]);
    }
};

/// conv2d and conv2d_backward against the naive definition for one geometry.
/// dweight and dbias sum over every output pixel of the batch: their absolute error grows with
/// that count, so `grad_atol` (default tol) may be looser for large images.
template <class T>
void check_against_naive(tensor_shape xs, tensor_shape ws, ops::conv2d_options o, bool with_bias, double tol,
                         const std::string& what, double grad_atol = 0) {
    if (grad_atol == 0) grad_atol = tol;
    auto x = random_tensor<T>(xs, 31, 1);
    auto w = random_tensor<T>(ws, 31, 2, 0.3);
    auto b = random_tensor<T>({ws[0]}, 31, 3);
    const tensor_view<T, cpu> bias = with_bias ? b.view() : tensor_view<T, cpu>{};
    const naive_conv ref{ops::conv2d_check("test", x.view(), w.view(), bias, o)};
    BOOST_TEST_CONTEXT(what) {
        auto y = ops::conv2d(x.view(), w.view(), bias, o);
        check_close(y, ref.forward<T>(x, w, with_bias ? b.data() : nullptr), tol, tol, "forward");
        auto dy = random_tensor<T>(y.shape(), 31, 4);
        // Pre-filled gradients prove accumulation.
        auto dw = tensor<T, cpu>::full(ws, T(1));
        auto db = tensor<T, cpu>::full({ws[0]}, T(1));
        auto dx = ops::conv2d_backward(dy.view(), x.view(), w.view(), dw.view(), with_bias ? db.view() : tensor_view<T, cpu>{}, o);
        tensor<double, cpu> rdx, rdw, rdb;
        ref.backward<T>(dy, x, w, rdx, rdw, rdb);
        for (std::int64_t i = 0; i < rdw.numel(); ++i) rdw.data()[i] += 1.0;
        for (std::int64_t i = 0; i < rdb.numel(); ++i) rdb.data()[i] += 1.0;
        check_close(dx, rdx, tol, tol, "dx");
        check_close(dw, rdw, tol, grad_atol, "dweight");
        if (with_bias) check_close(db, rdb, tol, grad_atol, "dbias");
        else for (T v : db.to_vector()) BOOST_REQUIRE(v == T(1));
    }
}

template <class T>
void check_conv_op_gradients(tensor_shape xs, tensor_shape ws, ops::conv2d_options o, bool with_bias, const std::string& what) {
    auto x = random_tensor<T>(xs, 41, 1);
    auto w = random_tensor<T>(ws, 41, 2, 0.5);
    auto b = random_tensor<T>({ws[0]}, 41, 3);
    std::vector<tensor_view<T, cpu>> inputs{x, w};
    if (with_bias) inputs.push_back(b);
    testing::check_op_gradients<T>(
        what,
        [&](const std::vector<tensor_view<T, cpu>>& in) {
            return ops::conv2d(in[0], in[1], in.size() == 3 ? in[2] : tensor_view<T, cpu>{}, o);
        },
        [&](const tensor_view<T, cpu>& dy, const std::vector<tensor_view<T, cpu>>& in) {
            auto dw = tensor<T, cpu>::zeros(in[1].shape());
            auto db = tensor<T, cpu>::zeros({in[1].dim(0)});
            std::vector<tensor<T, cpu>> out;
            out.push_back(ops::conv2d_backward(dy, in[0], in[1], dw.view(), in.size() == 3 ? db.view() : tensor_view<T, cpu>{}, o));
            out.push_back(std::move(dw));
            if (in.size() == 3) out.push_back(std::move(db));
            return out;
        },
        inputs);
}

struct grad_case {
    std::int64_t kernel, stride;
    ops::padding2d padding;
    bool bias;
    std::string name;
};

const std::vector<grad_case> grad_cases{
    {1, 1, {}, true, "k1 s1"},
    {1, 2, {}, false, "k1 s2"},
    {3, 1, ops::padding2d::symmetric(1), true, "k3 s1 p1"},
    {3, 1, ops::padding2d::symmetric(1), false, "k3 s1 p1 no bias"},
    {3, 2, ops::padding2d::symmetric(1), true, "k3 s2 p1"},
    {3, 2, {0, 1, 0, 1}, true, "k3 s2 pad (0,1,0,1)"},
    {3, 1, {2, 0, 1, 0}, false, "k3 s1 pad (2,0,1,0)"},
};

} // namespace

static_assert(nn::layer<nn::conv2d<float>>);
static_assert(nn::layer<nn::conv2d<double>>);

BOOST_AUTO_TEST_SUITE(hand_computed)

BOOST_AUTO_TEST_CASE(two_by_two_ones_kernel_sums_windows) {
    // x = 1..9 in a 3×3 image; a 2×2 kernel of ones sums each window: (1+2+4+5, 2+3+5+6, ...).
    auto x = tensor<float>::from_host({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
    auto w = tensor<float>::full({1, 1, 2, 2}, 1.0f);
    auto b = tensor<float>::from_host({1}, {0.5f});
    auto y = ops::conv2d(x.view(), w.view(), b.view());
    BOOST_TEST(y.shape() == (tensor_shape{1, 1, 2, 2}));
    BOOST_TEST(y.to_vector() == (std::vector<float>{12.5f, 16.5f, 24.5f, 28.5f}), boost::test_tools::per_element());
    // Padding (0, 1, 0, 1) adds a zero row below and a zero column on the right; stride 2 keeps (0,0), (0,2), (2,0), (2,2).
    auto yd = ops::conv2d(x.view(), w.view(), ops::conv2d_options{.stride = 2, .padding = {0, 1, 0, 1}});
    BOOST_TEST(yd.shape() == (tensor_shape{1, 1, 2, 2}));
    BOOST_TEST(yd.to_vector() == (std::vector<float>{12, 9, 15, 9}), boost::test_tools::per_element());
    // Backward with dy = 1: each input pixel gets the number of windows covering it; dW = window sums.
    auto dy = tensor<float>::full({1, 1, 2, 2}, 1.0f);
    auto dw = tensor<float>::zeros({1, 1, 2, 2});
    auto db = tensor<float>::zeros({1});
    auto dx = ops::conv2d_backward(dy.view(), x.view(), w.view(), dw.view(), db.view());
    BOOST_TEST(dx.to_vector() == (std::vector<float>{1, 2, 1, 2, 4, 2, 1, 2, 1}), boost::test_tools::per_element());
    BOOST_TEST(dw.to_vector() == (std::vector<float>{12, 16, 24, 28}), boost::test_tools::per_element());
    BOOST_TEST(db.to_vector() == (std::vector<float>{4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(pointwise_conv_mixes_channels) {
    // 1×1 conv: y[o] = Σ_c W[o, c]·x[c] per pixel.
    auto x = tensor<double>::from_host({1, 2, 1, 2}, {1, 2, 10, 20});
    auto w = tensor<double>::from_host({3, 2, 1, 1}, {1, 0, 0, 1, 1, -1});
    auto y = ops::conv2d(x.view(), w.view(), ops::conv2d_options{});
    BOOST_TEST(y.to_vector() == (std::vector<double>{1, 2, 10, 20, -9, -18}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(padding_only_sees_zeros) {
    // A 3×3 kernel of ones over a padded 1×1 image of value 2: every output is 2 (one tap inside).
    auto x = tensor<float>::from_host({1, 1, 1, 1}, {2});
    auto w = tensor<float>::full({1, 1, 3, 3}, 1.0f);
    auto y = ops::conv2d(x.view(), w.view(), ops::conv2d_options{.stride = 1, .padding = ops::padding2d::symmetric(2)});
    BOOST_TEST(y.shape() == (tensor_shape{1, 1, 3, 3}));
    for (float v : y.to_vector()) BOOST_TEST(v == 2.0f);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(against_torch)

BOOST_AUTO_TEST_CASE(forward_and_gradients) {
    const auto f = testing::load_fixture("conv.txt");
    struct torch_case {
        std::string name;
        ops::conv2d_options options;
        bool bias;
    };
    const std::vector<torch_case> cases{
        {"k3s1p1", {1, ops::padding2d::symmetric(1)}, true},
        {"downsample", {2, {0, 1, 0, 1}}, true},
        {"k1", {1, {}}, true},
        {"k1s2", {2, {}}, false},
        {"patch4", {4, {}}, true},
        {"rect", {1, {1, 0, 2, 1}}, false},
        {"winograd", {1, ops::padding2d::symmetric(1)}, true},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.name) {
            auto x = f.get(c.name + ".x"), w = f.get(c.name + ".weight"), dy = f.get(c.name + ".dy");
            auto b = c.bias ? f.get(c.name + ".bias") : tensor<double>{};
            const bool winograd = conv_kernels<cpu>::uses_winograd(ops::conv2d_check("test", x.view(), w.view(), b.view(), c.options));
            BOOST_TEST(winograd == (c.name == "winograd"));
            auto y = ops::conv2d(x.view(), w.view(), b.view(), c.options);
            check_close(y, f.get(c.name + ".y"), 1e-12, 1e-12, c.name + " y");
            auto dw = tensor<double>::zeros(w.shape());
            auto db = c.bias ? tensor<double>::zeros(b.shape()) : tensor<double>{};
            auto dx = ops::conv2d_backward(dy.view(), x.view(), w.view(), dw.view(), db.view(), c.options);
            check_close(dx, f.get(c.name + ".dx"), 1e-12, 1e-12, c.name + " dx");
            check_close(dw, f.get(c.name + ".dweight"), 1e-12, 1e-12, c.name + " dweight");
            if (c.bias) check_close(db, f.get(c.name + ".dbias"), 1e-12, 1e-12, c.name + " dbias");

            auto xf = f.get<float>(c.name + ".x"), wf = f.get<float>(c.name + ".weight");
            auto bf = c.bias ? f.get<float>(c.name + ".bias") : tensor<float>{};
            check_close(ops::conv2d(xf.view(), wf.view(), bf.view(), c.options), f.get(c.name + ".y"), 1e-5, 1e-5,
                        c.name + " y (float)");
        }
    }
}

BOOST_AUTO_TEST_CASE(ldm_downsample_layer) {
    // nn::conv2d configured as LDM's Downsample reproduces the fixture with the fixture's parameters.
    const auto f = testing::load_fixture("conv.txt");
    nn::conv2d<double> down({.in_channels = 3, .out_channels = 4, .kernel_size = 3, .stride = 2, .padding = {0, 1, 0, 1}});
    ops::copy(down.weight.value.view(), f.get("downsample.weight").view());
    ops::copy(down.bias.value.view(), f.get("downsample.bias").view());
    auto x = f.get("downsample.x");
    check_close(down.forward(x), f.get("downsample.y"), 1e-12, 1e-12, "Downsample y");
    nn::zero_grad(down);
    check_close(down.backward(f.get("downsample.dy")), f.get("downsample.dx"), 1e-12, 1e-12, "Downsample dx");
    check_close(down.weight.grad, f.get("downsample.dweight"), 1e-12, 1e-12, "Downsample dweight");
    check_close(down.bias.grad, f.get("downsample.dbias"), 1e-12, 1e-12, "Downsample dbias");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(against_definition)

// Kernel sizes, strides and every padding pattern against the 7-loop definition.
BOOST_AUTO_TEST_CASE(geometry_sweep) {
    for (std::int64_t k : {1, 2, 3, 5})
        for (std::int64_t s : {1, 2, 3})
            for (const ops::padding2d& p : {ops::padding2d{}, ops::padding2d::symmetric(1), ops::padding2d{0, 1, 0, 1},
                                            ops::padding2d{2, 0, 1, 3}})
                check_against_naive<double>({3, 3, 7, 6}, {4, 3, k, k}, {s, p}, (k + s) % 2 == 0, 1e-12,
                                            fmt::format("k{} s{} pad ({},{},{},{})", k, s, p.top, p.bottom, p.left, p.right));
}

// 3×3 stride-1 convs with at least conv_kernels<cpu>::winograd_min_channels channels take the
// Winograd F(2×2, 3×3) path: exact in double up to rounding, for odd and even output sizes
// (partial tiles), every padding pattern, and with or without bias.
BOOST_AUTO_TEST_CASE(winograd_sweep) {
    const std::int64_t c = conv_kernels<cpu>::winograd_min_channels;
    for (const tensor_shape& xs : {tensor_shape{3, c, 7, 6}, tensor_shape{1, c, 4, 4}, tensor_shape{2, c, 9, 11}})
        for (const ops::padding2d& p : {ops::padding2d{}, ops::padding2d::symmetric(1), ops::padding2d{0, 1, 0, 1},
                                        ops::padding2d{2, 0, 1, 3}}) {
            const ops::conv2d_options o{1, p};
            auto x = tensor<double>::zeros(xs);
            auto w = tensor<double>::zeros({c + 3, c, 3, 3});
            BOOST_REQUIRE(conv_kernels<cpu>::uses_winograd(ops::conv2d_check("test", x.view(), w.view(), tensor_view<double>{}, o)));
            check_against_naive<double>(xs, {c + 3, c, 3, 3}, o, (p.top + xs[2]) % 2 == 0, 1e-12,
                                        fmt::format("winograd x {} pad ({},{},{},{})", xs, p.top, p.bottom, p.left, p.right));
        }
    // One channel short of the threshold takes im2col instead.
    auto x = tensor<double>::zeros({1, c - 1, 6, 6});
    auto w = tensor<double>::zeros({c, c - 1, 3, 3});
    BOOST_TEST(!conv_kernels<cpu>::uses_winograd(ops::conv2d_check("test", x.view(), w.view(), tensor_view<double>{}, {1, {}})));
}

// Every way the backend cuts a batch, on one and on two threads (comments for two): small planes
// grouped side by side (even and uneven groups), images taken by threads one at a time, a batch
// that does not divide (products split instead), pointwise convs read in place, and images large
// enough to be cut into bands of rows; for im2col and for Winograd.
BOOST_AUTO_TEST_CASE(threading_grouping_and_banding_paths) {
    const ops::conv2d_options same{1, ops::padding2d::symmetric(1)};
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        const std::string t = fmt::format(" ({} threads)", threads);
        check_against_naive<float>({4, 16, 12, 12}, {32, 16, 3, 3}, same, true, 1e-4, "2 groups of 2 images" + t);
        check_against_naive<float>({3, 16, 12, 12}, {32, 16, 3, 3}, same, true, 1e-4, "groups of 1 and 2 images" + t);
        check_against_naive<float>({1, 16, 12, 12}, {32, 16, 3, 3}, same, false, 1e-4, "one image" + t);
        check_against_naive<float>({64, 1, 14, 14}, {8, 1, 3, 3}, same, true, 1e-4, "12 groups, one input channel" + t);
        check_against_naive<float>({2, 8, 32, 32}, {8, 8, 3, 3}, same, true, 1e-4, "an image per thread" + t);
        check_against_naive<float>({5, 8, 32, 32}, {8, 8, 3, 3}, same, true, 1e-4, "5 images, split products" + t);
        check_against_naive<float>({2, 16, 32, 32}, {24, 16, 3, 3}, same, true, 1e-4, "winograd, an image per thread" + t);
        check_against_naive<float>({5, 16, 32, 32}, {24, 16, 3, 3}, same, false, 1e-4, "winograd, 5 images" + t);
        check_against_naive<float>({6, 16, 7, 7}, {16, 16, 3, 3}, {1, {0, 1, 0, 1}}, true, 1e-4, "winograd, grouped 7×7" + t);
        // 16·32 elements of V per tile, 65·65 tiles: 2^21 / (16·32·65) = 63 tile rows per band.
        // dweight sums 16900 products of unit normals (magnitude ~130): atol 1e-2 is 1e-4 of that.
        check_against_naive<float>({1, 32, 130, 130}, {32, 32, 3, 3}, {1, {1, 0, 2, 1}}, true, 1e-4,
                                   "winograd, two bands" + t, 1e-2);
        check_against_naive<float>({3, 24, 10, 10}, {40, 24, 1, 1}, {}, true, 1e-4, "pointwise, grouped" + t);
        check_against_naive<float>({2, 24, 32, 32}, {40, 24, 1, 1}, {}, true, 1e-4, "pointwise, in place" + t);
        check_against_naive<float>({1, 24, 10, 10}, {40, 24, 1, 1}, {}, false, 1e-4, "pointwise, one image" + t);
        // patch 32·9 = 288 rows of col per output row of width 90: 2^21 / (288·90) = 80 rows per band.
        check_against_naive<float>({1, 32, 90, 90}, {4, 32, 3, 3}, same, true, 1e-4, "two bands" + t);
        check_against_naive<float>({1, 32, 180, 180}, {4, 32, 3, 3}, {2, {0, 1, 0, 1}}, true, 1e-4,
                                   "two bands, stride 2, pad (0,1,0,1)" + t);
    }
    omp_set_num_threads(saved);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(gradients)

BOOST_AUTO_TEST_CASE(conv2d_op_double) {
    for (const auto& c : grad_cases)
        check_conv_op_gradients<double>({2, 3, 6, 5}, {4, 3, c.kernel, c.kernel}, {c.stride, c.padding}, c.bias, "conv2d<double> " + c.name);
}

BOOST_AUTO_TEST_CASE(conv2d_op_float) {
    for (const auto& c : grad_cases)
        check_conv_op_gradients<float>({2, 3, 6, 5}, {4, 3, c.kernel, c.kernel}, {c.stride, c.padding}, c.bias, "conv2d<float> " + c.name);
}

BOOST_AUTO_TEST_CASE(conv2d_op_winograd) {
    const std::int64_t c = conv_kernels<cpu>::winograd_min_channels;
    for (const ops::padding2d& p : {ops::padding2d::symmetric(1), ops::padding2d{0, 1, 0, 1}}) {
        check_conv_op_gradients<double>({2, c, 5, 6}, {c, c, 3, 3}, {1, p}, true, fmt::format("winograd<double> pad ({},{},{},{})", p.top, p.bottom, p.left, p.right));
        check_conv_op_gradients<float>({2, c, 5, 6}, {c, c, 3, 3}, {1, p}, p.top == 1, fmt::format("winograd<float> pad ({},{},{},{})", p.top, p.bottom, p.left, p.right));
    }
}

BOOST_AUTO_TEST_CASE(conv2d_layer) {
    for (const auto& c : grad_cases) {
        const nn::conv2d_config cfg{.in_channels = 3, .out_channels = 4, .kernel_size = c.kernel, .stride = c.stride,
                                    .padding = c.padding, .bias = c.bias};
        nn::conv2d<double> ld(cfg, 5);
        testing::check_layer_gradients("conv2d<double> layer " + c.name, ld, {2, 3, 6, 5});
        nn::conv2d<float> lf(cfg, 5);
        testing::check_layer_gradients("conv2d<float> layer " + c.name, lf, {2, 3, 6, 5});
    }
    const std::int64_t c = conv_kernels<cpu>::winograd_min_channels;
    nn::conv2d<double> wd({.in_channels = c, .out_channels = c, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)}, 5);
    testing::check_layer_gradients("conv2d<double> layer, winograd", wd, {2, c, 4, 5});
    nn::conv2d<float> wf({.in_channels = c, .out_channels = c, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)}, 5);
    testing::check_layer_gradients("conv2d<float> layer, winograd", wf, {2, c, 4, 5});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(layer)

BOOST_AUTO_TEST_CASE(parameters_names_and_init) {
    nn::conv2d<double> c({.in_channels = 8, .out_channels = 16, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)}, 9);
    auto params = nn::named_parameters(c);
    BOOST_REQUIRE_EQUAL(params.size(), 2u);
    BOOST_TEST(params[0].first == "weight");
    BOOST_TEST(params[1].first == "bias");
    BOOST_TEST(c.weight.shape() == (tensor_shape{16, 8, 3, 3}));
    BOOST_TEST(c.bias.shape() == (tensor_shape{16}));
    const double bound = 1.0 / std::sqrt(8.0 * 9.0);  // fan_in = in·k·k
    double sq = 0, biggest = 0;
    for (double v : c.weight.value.to_vector()) {
        sq += v * v;
        biggest = std::max(biggest, std::abs(v));
    }
    BOOST_TEST(biggest <= bound);
    BOOST_TEST(biggest > 0.9 * bound);
    BOOST_TEST(std::abs(sq / double(c.weight.value.numel()) - bound * bound / 3) < 0.1 * bound * bound);
    for (double v : c.bias.value.to_vector()) BOOST_REQUIRE(std::abs(v) <= bound);

    nn::conv2d<float> nb({.in_channels = 2, .out_channels = 3, .kernel_size = 1, .bias = false});
    BOOST_TEST(nn::named_parameters(nb).size() == 1u);
    std::vector<std::string> names;
    c.for_each_parameter([&](const std::string& n, auto&) { names.push_back(n); }, "encoder.conv_in");
    BOOST_TEST(names == (std::vector<std::string>{"encoder.conv_in.weight", "encoder.conv_in.bias"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(output_shapes) {
    nn::conv2d<float> same({.in_channels = 3, .out_channels = 5, .kernel_size = 3, .padding = ops::padding2d::symmetric(1)});
    const auto x1 = tensor<float>::zeros({2, 3, 9, 7}), x2 = tensor<float>::zeros({1, 3, 32, 32}), x3 = tensor<float>::zeros({1, 4, 8, 8});
    BOOST_TEST(same.forward(x1).shape() == (tensor_shape{2, 5, 9, 7}));
    nn::conv2d<float> down({.in_channels = 3, .out_channels = 3, .kernel_size = 3, .stride = 2, .padding = {0, 1, 0, 1}});
    BOOST_TEST(down.forward(x2).shape() == (tensor_shape{1, 3, 16, 16}));
    nn::conv2d<float> patch({.in_channels = 4, .out_channels = 8, .kernel_size = 2, .stride = 2});
    BOOST_TEST(patch.forward(x3).shape() == (tensor_shape{1, 8, 4, 4}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(shape_errors)

BOOST_AUTO_TEST_CASE(wrong_in_channels_names_op_and_shapes) {
    auto x = tensor<float>::zeros({2, 3, 8, 8}), w = tensor<float>::zeros({4, 5, 3, 3});
    auto msg = shape_error_message([&] { (void)ops::conv2d(x.view(), w.view(), ops::conv2d_options{}); });
    BOOST_TEST((contains(msg, "conv2d") && contains(msg, "(2, 3, 8, 8)") && contains(msg, "(4, 5, 3, 3)")), msg);
    nn::conv2d<float> layer({.in_channels = 5, .out_channels = 4});
    msg = shape_error_message([&] { (void)layer.forward(x); });
    BOOST_TEST((contains(msg, "conv2d") && contains(msg, "(2, 3, 8, 8)") && contains(msg, "(4, 5, 3, 3)")), msg);
}

BOOST_AUTO_TEST_CASE(wrong_rank_and_sizes) {
    auto w = tensor<float>::zeros({4, 3, 3, 3});
    auto x3 = tensor<float>::zeros({3, 8, 8});
    auto msg = shape_error_message([&] { (void)ops::conv2d(x3.view(), w.view(), ops::conv2d_options{}); });
    BOOST_TEST((contains(msg, "conv2d") && contains(msg, "rank 4") && contains(msg, "(3, 8, 8)") && contains(msg, "(4, 3, 3, 3)")), msg);
    auto x = tensor<float>::zeros({1, 3, 2, 8});
    msg = shape_error_message([&] { (void)ops::conv2d(x.view(), w.view(), ops::conv2d_options{}); });
    BOOST_TEST((contains(msg, "conv2d") && contains(msg, "(1, 3, 2, 8)") && contains(msg, "(4, 3, 3, 3)")), msg);
    BOOST_CHECK_NO_THROW((void)ops::conv2d(x.view(), w.view(), ops::conv2d_options{.stride = 1, .padding = {1, 0, 0, 0}}));
    auto b = tensor<float>::zeros({3});
    msg = shape_error_message([&] { (void)ops::conv2d(x.view(), w.view(), b.view(), {1, ops::padding2d::symmetric(1)}); });
    BOOST_TEST((contains(msg, "bias") && contains(msg, "(3)") && contains(msg, "(4, 3, 3, 3)")), msg);
    msg = shape_error_message([&] { (void)ops::conv2d(x.view(), w.view(), ops::conv2d_options{.stride = 0}); });
    BOOST_TEST((contains(msg, "conv2d") && contains(msg, "stride")), msg);
}

BOOST_AUTO_TEST_CASE(backward_checks_dy_and_dweight) {
    auto x = tensor<float>::zeros({2, 3, 8, 8}), w = tensor<float>::zeros({4, 3, 3, 3});
    auto dw = tensor<float>::zeros({4, 3, 3, 3});
    auto dy = tensor<float>::zeros({2, 4, 8, 8});
    auto msg = shape_error_message([&] { (void)ops::conv2d_backward(dy.view(), x.view(), w.view(), dw.view(), tensor_view<float>{}); });
    BOOST_TEST((contains(msg, "conv2d_backward") && contains(msg, "(2, 4, 8, 8)") && contains(msg, "(2, 4, 6, 6)")), msg);
    auto dw_bad = tensor<float>::zeros({4, 3, 1, 1});
    auto dy_ok = tensor<float>::zeros({2, 4, 6, 6});
    msg = shape_error_message([&] { (void)ops::conv2d_backward(dy_ok.view(), x.view(), w.view(), dw_bad.view(), tensor_view<float>{}); });
    BOOST_TEST((contains(msg, "conv2d_backward") && contains(msg, "(4, 3, 1, 1)") && contains(msg, "(4, 3, 3, 3)")), msg);
}

BOOST_AUTO_TEST_SUITE_END()
