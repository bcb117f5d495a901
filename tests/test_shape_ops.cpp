#define BOOST_TEST_MODULE shape_ops
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/flatten.hpp"
#include "vediff/nn/pool.hpp"
#include "vediff/nn/upsample.hpp"
#include "vediff/ops/concat.hpp"
#include "vediff/ops/patchify.hpp"
#include "vediff/ops/upsample.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;

template <class T>
op_inputs<T> views_of(const op_gradients<T>& ts) {
    return op_inputs<T>(ts.begin(), ts.end());
}
} // namespace

BOOST_AUTO_TEST_SUITE(concat_and_chunk)

BOOST_AUTO_TEST_CASE(hand_values) {
    auto a = tensor<float>::from_host({2, 2}, {1, 2, 3, 4});
    auto b = tensor<float>::from_host({2, 1}, {5, 6});
    auto c = ops::concat<float, cpu>({a, b}, 1);  // [[1, 2, 5], [3, 4, 6]]
    BOOST_TEST(c.shape() == (tensor_shape{2, 3}));
    const std::vector<float> ref{1, 2, 5, 3, 4, 6};
    BOOST_TEST(c.to_vector() == ref);
    auto r = ops::concat<float, cpu>({a, a}, 0);
    BOOST_TEST(r.shape() == (tensor_shape{4, 2}));
    BOOST_TEST(r.at(3, 1) == 4.0f);

    auto parts = ops::split(c, {2, 1}, -1);
    BOOST_TEST(parts[0].to_vector() == a.to_vector());
    BOOST_TEST(parts[1].to_vector() == b.to_vector());

    // DiT's adaLN output (B, 6D) chunked into shift, scale, gate, ... of (B, D) each.
    auto ada = tensor<float>::from_host({1, 6}, {0, 1, 2, 3, 4, 5});
    auto pieces = ops::chunk(ada, 3, 1);
    BOOST_REQUIRE(pieces.size() == 3u);
    BOOST_TEST(pieces[2].shape() == (tensor_shape{1, 2}));
    BOOST_TEST(pieces[2].at(0, 0) == 4.0f);
    BOOST_TEST(pieces[1].at(0, 1) == 3.0f);
}

BOOST_AUTO_TEST_CASE(round_trip_on_a_middle_axis) {
    auto x = random_tensor<double>({2, 6, 3, 2}, 3);
    auto p = ops::chunk(x, 3, 1);
    auto back = ops::chunk_backward(views_of(p), 1);
    BOOST_TEST(back.to_vector() == x.to_vector());
    BOOST_TEST(p[1].at(1, 0, 2, 1) == x.at(1, 2, 2, 1));
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto a = tensor<float>::zeros({2, 3}), b = tensor<float>::zeros({3, 3});
    auto msg = shape_error_message([&] { (void)ops::concat<float, cpu>({a, b}, 1); });
    BOOST_TEST(msg.find("concat") == 0u);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    BOOST_TEST(msg.find("(3, 3)") != std::string::npos);
    const auto rows = ops::concat<float, cpu>({a, b}, 0);
    BOOST_TEST(rows.shape() == (tensor_shape{5, 3}));
    msg = shape_error_message([&] { (void)ops::chunk(a, 2, 1); });
    BOOST_TEST(msg.find("chunk") == 0u);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::split(a, {1, 1}, 1); });
    BOOST_TEST(msg.find("split") == 0u);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::concat<float, cpu>({a}, 2); });
    BOOST_TEST(msg.find("concat") == 0u);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto a = random_tensor<T>({2, 3, 4}, 1), b = random_tensor<T>({2, 1, 4}, 2), c = random_tensor<T>({2, 2, 4}, 3);
    check_op_gradients<T>("concat", [](const op_inputs<T>& v) { return ops::concat(v, 1); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) {
                              return ops::concat_backward(dy, {v[0].dim(1), v[1].dim(1), v[2].dim(1)}, 1);
                          }, op_inputs<T>{a, b, c});
    auto x = random_tensor<T>({2, 3, 6}, 4);
    // chunk's gradient check sees one output: its pieces joined, weighted by one random dy each.
    check_op_gradients<T>("chunk", [](const op_inputs<T>& v) {
        auto p = ops::chunk(v[0], 3, -1);
        return ops::concat(views_of(p), 0);
    }, [](const tensor_view<T, cpu>& dy, const op_inputs<T>&) {
        auto dys = ops::chunk(dy, 3, 0);
        return single_gradient(ops::chunk_backward(views_of(dys), -1));
    }, op_inputs<T>{x});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(patchify)

BOOST_AUTO_TEST_CASE(hand_layout) {
    // One channel-2 image 2x2 with p = 2 is one token; features ordered (i, j, c), channel fastest.
    auto x = tensor<float>::from_host({1, 2, 2, 2}, {0, 1, 2, 3, /* c1 */ 10, 11, 12, 13});
    auto t = ops::patchify(x, 2);
    BOOST_TEST(t.shape() == (tensor_shape{1, 1, 8}));
    const std::vector<float> ref{0, 10, 1, 11, 2, 12, 3, 13};
    BOOST_TEST(t.to_vector() == ref);
    // Tokens are row-major over the grid: token 1 of a 1x4 image with p = 1 is column 1.
    auto row = tensor<float>::from_host({1, 1, 1, 4}, {5, 6, 7, 8});
    BOOST_TEST(ops::patchify(row, 1).at(0, 1, 0) == 6.0f);
}

BOOST_AUTO_TEST_CASE(dit_unpatchify_reference) {
    const auto f = load_fixture("misc.txt");
    const auto toks = f.get("unp_tokens"), image = f.get("unp_image");
    check_close(ops::unpatchify(toks, 2, 4, 6), image, 0, 1e-15, "unpatchify 2x3 grid");
    check_close(ops::patchify(image, 2), toks, 0, 1e-15, "patchify 2x3 grid");
    check_close(ops::unpatchify(f.get("unp_sq_tokens").view(), 2), f.get("unp_sq_image"), 0, 1e-15, "unpatchify square");
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto x = tensor<float>::zeros({1, 3, 5, 4});
    auto msg = shape_error_message([&] { (void)ops::patchify(x, 2); });
    BOOST_TEST(msg.find("patchify") == 0u);
    BOOST_TEST(msg.find("(1, 3, 5, 4)") != std::string::npos);
    auto t = tensor<float>::zeros({1, 6, 12});
    msg = shape_error_message([&] { (void)ops::unpatchify(t, 2, 4, 4); });
    BOOST_TEST(msg.find("unpatchify") == 0u);
    BOOST_TEST(msg.find("(1, 6, 12)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::unpatchify(t, 2); });
    BOOST_TEST(msg.find("square") != std::string::npos);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto x = random_tensor<T>({2, 3, 4, 6}, 5);
    check_op_gradients<T>("patchify", [](const op_inputs<T>& v) { return ops::patchify(v[0], 2); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>&) { return single_gradient(ops::patchify_backward(dy, 2, 4, 6)); },
                          op_inputs<T>{x});
    auto t = random_tensor<T>({2, 6, 12}, 6);
    check_op_gradients<T>("unpatchify", [](const op_inputs<T>& v) { return ops::unpatchify(v[0], 2, 4, 6); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>&) { return single_gradient(ops::unpatchify_backward(dy, 2)); },
                          op_inputs<T>{t});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(resample)

BOOST_AUTO_TEST_CASE(hand_values) {
    auto x = tensor<float>::from_host({1, 1, 1, 2}, {1, 2});
    auto y = ops::upsample_nearest2x(x);
    const std::vector<float> ref{1, 1, 2, 2, 1, 1, 2, 2};
    BOOST_TEST(y.to_vector() == ref);
    auto dx = ops::upsample_nearest2x_backward(y);  // each 2x2 block summed
    BOOST_TEST(dx.at(0, 0, 0, 1) == 8.0f);
    auto p = ops::avg_pool2x2(tensor<float>::from_host({1, 1, 2, 2}, {1, 2, 3, 6}).view());
    BOOST_TEST(p.at(0, 0, 0, 0) == 3.0f);
}

BOOST_AUTO_TEST_CASE(torch_reference) {
    const auto f = load_fixture("misc.txt");
    check_close(ops::upsample_nearest2x(f.get("up_x").view()), f.get("up_y"), 0, 1e-15, "interpolate nearest x2");
    check_close(ops::avg_pool2x2(f.get("pool_x").view()), f.get("pool_y"), 1e-15, 1e-15, "avg_pool2d 2");
    nn::upsample_nearest2x<float> up;
    const auto up_x = f.get<float>("up_x");
    check_close(up.forward(up_x), f.get("up_y"), 1e-7, 0, "upsample layer (float)");
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto msg = shape_error_message([] { (void)ops::upsample_nearest2x(tensor<float>::zeros({2, 3, 4}).view()); });
    BOOST_TEST(msg.find("upsample_nearest2x") == 0u);
    BOOST_TEST(msg.find("(2, 3, 4)") != std::string::npos);
    msg = shape_error_message([] { (void)ops::avg_pool2x2(tensor<float>::zeros({1, 1, 3, 4}).view()); });
    BOOST_TEST(msg.find("avg_pool2x2") == 0u);
    BOOST_TEST(msg.find("(1, 1, 3, 4)") != std::string::npos);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients, T, real_types) {
    auto x = random_tensor<T>({2, 3, 3, 5}, 7);
    check_op_gradients<T>("upsample_nearest2x", [](const op_inputs<T>& v) { return ops::upsample_nearest2x(v[0]); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>&) { return single_gradient(ops::upsample_nearest2x_backward(dy)); },
                          op_inputs<T>{x});
    auto z = random_tensor<T>({2, 3, 4, 6}, 8);
    check_op_gradients<T>("avg_pool2x2", [](const op_inputs<T>& v) { return ops::avg_pool2x2(v[0]); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>&) { return single_gradient(ops::avg_pool2x2_backward(dy)); },
                          op_inputs<T>{z});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(layer_gradients, T, real_types) {
    static_assert(nn::layer<nn::upsample_nearest2x<T>>);
    static_assert(nn::layer<nn::avg_pool2x2<T>>);
    static_assert(nn::layer<nn::flatten<T>>);
    nn::upsample_nearest2x<T> up;
    check_layer_gradients("upsample_nearest2x", up, {2, 2, 3, 4});
    nn::avg_pool2x2<T> pool;
    check_layer_gradients("avg_pool2x2", pool, {2, 2, 4, 6});
    nn::flatten<T> fl;
    check_layer_gradients("flatten", fl, {2, 3, 4});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(flatten)

BOOST_AUTO_TEST_CASE(flatten_layer_shapes) {
    nn::flatten<float> fl;
    auto x = random_tensor<float>({2, 3, 4, 5}, 8);
    auto y = fl.forward(x);
    BOOST_TEST(y.shape() == (tensor_shape{2, 60}));
    BOOST_TEST(y.at(1, 59) == x.at(1, 2, 3, 4));
    auto dx = fl.backward(y);
    BOOST_TEST(dx.shape() == x.shape());
    BOOST_TEST(dx.at(1, 2, 3, 4) == x.at(1, 2, 3, 4));
    const auto msg = shape_error_message([&] { (void)fl.backward(tensor<float>::zeros({2, 7}).view()); });
    BOOST_TEST(msg.find("flatten") == 0u);
    BOOST_TEST(msg.find("(2, 3, 4, 5)") != std::string::npos);
}
BOOST_AUTO_TEST_SUITE_END()
