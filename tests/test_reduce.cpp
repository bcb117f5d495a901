#define BOOST_TEST_MODULE reduce
#include <boost/mpl/list.hpp>
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <string>
#include <vector>

#include "support/errors.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/nn/pool.hpp"
#include "vediff/ops/reduce.hpp"

using namespace vediff;
using namespace vediff::testing;

namespace {
using real_types = boost::mpl::list<float, double>;

} // namespace

BOOST_AUTO_TEST_CASE(hand_values) {
    // [[1, 2, 3], [4, 5, 6]]
    auto x = tensor<double>::from_host({2, 3}, {1, 2, 3, 4, 5, 6});
    auto s0 = ops::sum(x, 0), s1 = ops::sum(x, 1), m1 = ops::mean(x, -1, true);
    BOOST_TEST(s0.shape() == (tensor_shape{3}));
    BOOST_TEST(s0.at(0) == 5.0);
    BOOST_TEST(s0.at(2) == 9.0);
    BOOST_TEST(s1.shape() == (tensor_shape{2}));
    BOOST_TEST(s1.at(1) == 15.0);
    BOOST_TEST(m1.shape() == (tensor_shape{2, 1}));
    BOOST_TEST(m1.at(0, 0) == 2.0);
    auto all = ops::sum(x), avg = ops::mean(x);
    BOOST_TEST(all.rank() == 0);
    BOOST_TEST(all.numel() == 1);
    BOOST_TEST(all.to_vector()[0] == 21.0);
    BOOST_TEST(avg.to_vector()[0] == 3.5);

    // Backward of a sum spreads dy; of a mean, dy / n.
    auto dy = tensor<double>::from_host({2}, {1, -2});
    auto dx = ops::mean_backward(dy, x.shape(), 1);
    BOOST_TEST(dx.at(0, 2) == 1.0 / 3);
    BOOST_TEST(dx.at(1, 0) == -2.0 / 3);
    auto dall = ops::sum_backward(tensor<double>::full({}, 2.5).view(), x.shape());
    BOOST_TEST(dall.at(1, 1) == 2.5);
}

BOOST_AUTO_TEST_CASE(torch_reference) {
    const auto f = load_fixture("misc.txt");
    const auto x = f.get("red_x");
    for (int a = 0; a < 3; ++a)
        check_close(ops::sum(x, a), f.get("sum_axis" + std::to_string(a)), 1e-13, 1e-13, "sum axis " + std::to_string(a));
    check_close(ops::mean(x, 1, true), f.get("mean_axis1_keep"), 1e-13, 1e-13, "mean keepdim");
    check_close(ops::mean(x, -1), f.get("mean_axis_last"), 1e-13, 1e-13, "mean last axis");
    check_close(ops::sum(x), f.get("sum_all"), 1e-13, 1e-13, "sum all");
    check_close(ops::mean(x), f.get("mean_all"), 1e-13, 1e-13, "mean all");
    check_close(ops::global_avg_pool(f.get("bc_x").view()), f.get("gap"), 1e-13, 1e-13, "global_avg_pool");
    const auto xf = f.get<float>("red_x");
    check_close(ops::sum(xf, 1), f.get("sum_axis1"), 1e-6, 1e-6, "sum axis 1 (float)");
}

BOOST_AUTO_TEST_CASE(large_reductions_are_thread_count_invariant) {
    // Partial sums have fixed extents, so 1 and 2 threads give bitwise equal results.
    auto x = random_tensor<float>({3, 70001}, 5);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    auto a_all = ops::sum(x), a_rows = ops::sum(x, 1), a_cols = ops::mean(x, 0);
    omp_set_num_threads(2);
    auto b_all = ops::sum(x), b_rows = ops::sum(x, 1), b_cols = ops::mean(x, 0);
    omp_set_num_threads(saved);
    BOOST_TEST(a_all.to_vector() == b_all.to_vector());
    BOOST_TEST(a_rows.to_vector() == b_rows.to_vector());
    BOOST_TEST(a_cols.to_vector() == b_cols.to_vector());
    double ref = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) ref += double(x.data()[i]);
    BOOST_TEST(double(a_all.data()[0]) == ref, boost::test_tools::tolerance(1e-6));
}

BOOST_AUTO_TEST_CASE(shape_errors_name_op_and_shapes) {
    auto x = tensor<float>::zeros({2, 3});
    auto msg = shape_error_message([&] { (void)ops::sum(x, 2); });
    BOOST_TEST(msg.find("sum") == 0u);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::mean_backward(tensor<float>::zeros({3}).view(), x.shape(), 1); });
    BOOST_TEST(msg.find("mean_backward") == 0u);
    BOOST_TEST(msg.find("(3)") != std::string::npos);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::global_avg_pool(x); });
    BOOST_TEST(msg.find("global_avg_pool") == 0u);
    BOOST_TEST(msg.find("(2, 3)") != std::string::npos);
    msg = shape_error_message([&] { (void)ops::sum_backward(x.view(), tensor_shape{4}); });
    BOOST_TEST(msg.find("sum_backward") == 0u);
}

BOOST_AUTO_TEST_CASE_TEMPLATE(gradients_match_finite_differences, T, real_types) {
    auto x = random_tensor<T>({3, 4, 5}, 31);
    for (int axis : {0, 1, -1}) {
        for (bool keep : {false, true}) {
            const std::string tag = " axis " + std::to_string(axis) + (keep ? " keepdim" : "");
            check_op_gradients<T>("sum" + tag, [=](const op_inputs<T>& v) { return ops::sum(v[0], axis, keep); },
                                  [=](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) {
                                      return single_gradient(ops::sum_backward(dy, v[0].shape(), axis, keep));
                                  }, op_inputs<T>{x});
            check_op_gradients<T>("mean" + tag, [=](const op_inputs<T>& v) { return ops::mean(v[0], axis, keep); },
                                  [=](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) {
                                      return single_gradient(ops::mean_backward(dy, v[0].shape(), axis, keep));
                                  }, op_inputs<T>{x});
        }
    }
    check_op_gradients<T>("sum all", [](const op_inputs<T>& v) { return ops::sum(v[0]); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) { return single_gradient(ops::sum_backward(dy, v[0].shape())); },
                          op_inputs<T>{x});
    check_op_gradients<T>("mean all", [](const op_inputs<T>& v) { return ops::mean(v[0]); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) { return single_gradient(ops::mean_backward(dy, v[0].shape())); },
                          op_inputs<T>{x});
    auto img = random_tensor<T>({2, 3, 4, 5}, 32);
    check_op_gradients<T>("global_avg_pool", [](const op_inputs<T>& v) { return ops::global_avg_pool(v[0]); },
                          [](const tensor_view<T, cpu>& dy, const op_inputs<T>& v) {
                              return single_gradient(ops::global_avg_pool_backward(dy, v[0].shape()));
                          }, op_inputs<T>{img});
}

BOOST_AUTO_TEST_CASE_TEMPLATE(pool_layer_gradients, T, real_types) {
    static_assert(nn::layer<nn::global_avg_pool<T>>);
    nn::global_avg_pool<T> gap;
    check_layer_gradients("global_avg_pool", gap, {2, 3, 4, 5});
}
